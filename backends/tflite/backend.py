"""TFLite/LiteRT split backends: encoder.tflite + decoder_step.tflite + the shared host loop.

One class, :class:`TFLiteSplitBackend`; the registered variants (``tflite-fp32-split``,
``tflite-int8``, ``tflite-int8-aeq``, ``tflite-int8-naive``, ``tflite-int8-hfmask``, ``tflite-int16x8``,
``tflite-dynamic``, ``tflite-int8-selective``) are option sets (see ``__init__.py``).
``quantizer`` picks the tool: ``tflite_converter`` (convert.py, on the TF functions) or
``ai_edge_quantizer`` (aeq.py, on the FP32 .tflite pair).

Quantized variants keep a cached FP32 pair next to their artifacts (built through the
plain ``tflite-fp32-split`` settings) for the boundary matrix; their own directory holds
only the shippable files: ``encoder_<p>.tflite``, ``decoder_step_<p>.tflite`` and
``generation.json``.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np

from backends._imports import require, version_of
from backends.base import BOUNDARY_MODES, CalibrationSet, EncoderState, FloatFallback, Seq2SeqBackend
from backends.errors import ArtifactError, InvalidInputError
from backends.tflite import convert as tconv
from backends.tflite.graphs import check_regions, regions_in, scoped_regions, self_attention_mask
from backends.tflite.runtime import TFLiteModel, check_kernels, dequantize, to_domain

QUANTIZATIONS = ("none", "int8", "int16x8", "dynamic")
#: tflite_converter: TFLiteConverter on the TF functions (convert.py); ai_edge_quantizer: AEQ on
#: the FP32 .tflite pair (aeq.py; int8 = its a8w8 recipe, int16x8 = a16w8)
QUANTIZERS = ("tflite_converter", "ai_edge_quantizer")
CALIBRATION_METHODS = tconv.CALIBRATION_METHODS
GRAPH_OPTIONS = ("cross_kv", "mask_mode", "mask_margin", "source_buckets")
SYMMETRIC_RHS = ("none", "encoder", "all")


def source_buckets(value: Any, max_length: int, who: str = "tflite") -> tuple[int, ...]:
    """Parse the ``source_buckets`` option: ``"auto"`` (16, 32, ... up to ``max_length``), ``"none"``
    / None / [] (a static encoder: ``()``) or a list of lengths (``max_length`` is always added)."""
    if value is None or value == "none" or (isinstance(value, (list, tuple)) and not value):
        return ()
    if value == "auto":
        out, b = [], 16
        while b < max_length:
            out.append(b)
            b *= 2
        return tuple(out) + (max_length,)
    if isinstance(value, str) or not isinstance(value, (list, tuple)):
        raise InvalidInputError(f"{who}: source_buckets must be 'auto', 'none' or a list of source lengths, "
                                f"got {value!r}")
    bad = [v for v in value if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= max_length]
    if bad:
        raise InvalidInputError(f"{who}: source_buckets {bad} are not lengths in 1..max_source_length "
                                f"({max_length})")
    return tuple(sorted(set(value) | {max_length}))


def _pad_source_axis(x: np.ndarray, dst) -> np.ndarray:
    """Pad a boundary tensor from a bucket's source length to the decoder input's static shape,
    with the decoder input's zero (its zero point when quantized); padded positions are masked."""
    pad = [(0, 0)] + [(0, max(0, d - n)) if d > 0 else (0, 0) for n, d in zip(x.shape[1:], dst.shape[1:])]
    if not any(p[1] for p in pad):
        return x
    return np.pad(x, pad, constant_values=dst.zero_point if dst.quantized else 0)


def _is_cache(name: str) -> bool:
    return re.fullmatch(r"self_[kv]_\d+", name) is not None


class TFLiteSplitBackend(Seq2SeqBackend):
    runtime = "tflite"
    precision = "fp32"
    OPTIONS = {
        "quantization": "none",  # none | int8 | int16x8 | dynamic
        "quantizer": "tflite_converter",  # tflite_converter | ai_edge_quantizer (see QUANTIZERS)
        "cross_kv": "encoder",  # where the cross-attention K/V projections run: encoder | decoder
        "mask_mode": "select",  # select (quantization safe) | hf (additive -1e9)
        "mask_margin": 20.0,  # select mode: masked score = row max - margin
        # source-length buckets: the encoder graph takes any source length up to max_source_length and
        # the host runs it at the smallest bucket that fits (the decoder stays static; the host pads the
        # encoder's outputs). "auto" = 16, 32, ... doubling up to max_source_length; a list of lengths;
        # "none" = one static encoder at max_source_length
        "source_buckets": "auto",
        "calibration_recipe": "real",  # real (decoder states) | naive (BOS + zeros)
        "calibration_sources": 200,
        "positions_per_source": 6,
        "calibration_method": "minmax",  # decoder (and encoder unless set below): minmax | percentile | mse
        "encoder_calibration_method": None,  # None: same as calibration_method
        "percentile": 99.99,
        "encoder_percentile": None,  # None: same as percentile
        # encoder ranges from non-padding positions only (padding rows never reach the output)
        "encoder_valid_rows": False,
        "boundary": "requant",  # default encoder->decoder boundary: requant | raw
        "float_ops": (),  # selective float: TFLite op types left in float (breaks strict INT8)
        # selective float by region (graphs.REGIONS: layer_norm, attention_softmax, self_attention,
        # cross_attention, ffn, lm_head, in every graph they are built in; or one graph's,
        # graphs.SCOPED_REGIONS: "decoder.layer_norm"): the ops built there stay float (breaks strict INT8)
        "float_regions": (),
        # quantizer="ai_edge_quantizer" only (backends/tflite/aeq.py): the weight algorithm, and
        # whether AEQ's float REDUCE_MAX islands are folded into exact integer REDUCE_MAX ops
        "aeq_algorithm": "min_max_uniform_quantize",
        "aeq_fold_float_max": True,
        # int8 only: op types whose activations AEQ quantizes to int16 instead (a mixed int8/int16
        # integer graph, no float op): a list for both graphs or {"encoder": [...], "decoder": [...]}
        "aeq_int16_ops": (),
        # quantized: a second LM head with a narrow [floor, max] int8 range. Off by default: on the
        # default model it changed identical-to-FP32 by +-1% (noise) and costs a vocab x d_model matrix
        "fine_logits": False,
        "logits_floor_margin": 2.0,  # floor = 1st percentile of FP32 per-step max logit - margin
        # int8: attention matmuls' right-hand operands (K, V, their caches and cross K/V) quantized with
        # zero point 0, the only int8 BATCH_MATMUL XNNPACK takes (else the reference kernel runs it):
        # none | encoder (the encoder's self-attention) | all (also the decoder step's, and the cross K/V
        # boundary on both sides)
        "symmetric_matmul_rhs": "none",
        # quantized, exact rewrites (balance.py; skipped where they do not apply): carry post-LN residual
        # streams in a per-channel basis (channels above this quantile of the stream's channel maxima are
        # scaled down; gamma/beta folded into the consumers) -- None: off
        "stream_balance": None,
        # ... and FFN intermediates divided by per-channel scales (relu/swish)
        "ffn_balance": False,
        "precision": None,
        # which LiteRT kernels run the artifacts (runtime.KERNELS): xnnpack (LiteRT's default) | builtin |
        # reference. A run option: the artifacts and their cache key do not change
        "kernels": "xnnpack",
    }
    RUN_OPTIONS = ("threads", "kernels")

    # ---- identity ------------------------------------------------------------------
    @property
    def quantization(self) -> str:
        return str(self.options["quantization"])

    @property
    def precision_label(self) -> str:
        """fp32 | int8 | int16x8 | int8-dynamic, and "-mixed" when op types or regions were left in float."""
        if self.options.get("precision"):
            return str(self.options["precision"])
        label = {"none": "fp32", "int8": "int8", "int16x8": "int16x8", "dynamic": "int8-dynamic"}.get(
            self.quantization, self.quantization)
        if self.uses_aeq and self._int16_ops:
            label += "+int16"
        mixed = self.options.get("float_ops") or self.options.get("float_regions")
        return label + "-mixed" if mixed and self.quantization != "none" else label

    @property
    def kernels(self) -> str:
        return check_kernels(self.options["kernels"], self.name)

    @property
    def quantized(self) -> bool:
        return self.quantization in ("int8", "int16x8")

    @property
    def uses_aeq(self) -> bool:
        return self.options["quantizer"] == "ai_edge_quantizer" and self.quantization != "none"

    def runtime_versions(self) -> dict[str, str]:
        v = {"ai-edge-litert": version_of("ai-edge-litert"), "tensorflow": version_of("tensorflow-cpu"),
             "torch": version_of("torch"), "transformers": version_of("transformers"),
             # the calibration statistics and the range pass are numpy: part of what fixes every int8 range
             "numpy": version_of("numpy")}
        if self.uses_aeq:
            v["ai-edge-quantizer"] = version_of("ai-edge-quantizer")
        return v

    def settings(self) -> dict[str, Any]:
        from backends.tflite.graphs import GRAPH_FORMAT

        s = super().settings()
        s["graph_format"] = GRAPH_FORMAT
        s["float_ops"] = list(s.get("float_ops") or ())
        if s.get("float_regions"):  # one graph's parts, canonical: ["layer_norm"] builds what the pair of
            s["float_regions"] = list(scoped_regions(s["float_regions"], self.name))  # its scoped names does
        else:  # not set: the cache keys of the variants that predate the option stay as they were
            s.pop("float_regions", None)
        if self.quantization == "none":  # calibration settings do not change FP32 artifacts
            for k in ("calibration_recipe", "calibration_sources", "positions_per_source",
                      "calibration_method", "boundary", "float_ops", "fine_logits", "logits_floor_margin",
                      "percentile", "encoder_calibration_method", "symmetric_matmul_rhs", "stream_balance",
                      "ffn_balance", "encoder_percentile", "encoder_valid_rows"):
                s.pop(k, None)
        methods = {self.options["calibration_method"], self.options["encoder_calibration_method"]}
        if self.quantized and not self.uses_aeq and methods & {"percentile", "mse"}:
            s["range_pass"] = tconv.RANGE_PASS_FORMAT
        if not self.uses_aeq:  # AEQ knobs do not change converter artifacts (and keep their cache keys)
            for k in ("quantizer", "aeq_algorithm", "aeq_fold_float_max", "aeq_int16_ops"):
                s.pop(k, None)
        else:
            from backends.tflite.aeq import AEQ_FORMAT

            s["aeq_format"] = AEQ_FORMAT
        return s

    def quantization_settings(self) -> dict[str, Any]:
        if self.quantization == "none":
            return {}
        q = {"mode": self.quantization, "quantizer": self.options["quantizer"],
             **tconv.describe_precision(self.quantization)}
        if self.quantized:
            q.update(recipe=self.options["calibration_recipe"], method=self.options["calibration_method"],
                     encoder_method=self.options["encoder_calibration_method"] or self.options["calibration_method"],
                     sources=self.options["calibration_sources"], boundary=self.options["boundary"],
                     mask=self.options["mask_mode"])
            if self.options["encoder_valid_rows"]:
                q["encoder_ranges"] = "non-padding positions"
            rewrites = {k: self.options[k] for k in ("stream_balance", "ffn_balance") if self.options[k]}
            if rewrites:
                q["rewrites"] = rewrites
            if self.options["float_ops"]:
                q["float_ops"] = list(self.options["float_ops"])
            if self.options["float_regions"]:
                q["float_regions"] = list(self.options["float_regions"])
            if self._symmetric_rhs != "none":
                q["symmetric_matmul_rhs"] = self._symmetric_rhs
            if self.uses_aeq and self._int16_ops:
                q["int16_ops"] = self._int16_ops
                q["activations"] = "int8+int16"
        return q

    @property
    def _int16_ops(self) -> dict[str, list[str]]:
        """``aeq_int16_ops`` per graph (empty graphs left out)."""
        from backends.tflite.aeq import int16_ops_of

        value = self.options.get("aeq_int16_ops")
        return {r: list(int16_ops_of(value, r)) for r in ("encoder", "decoder") if int16_ops_of(value, r)}

    def uses_calibration(self) -> bool:
        return self.quantized

    def _check_options(self) -> None:
        o = self.options
        if self.quantization not in QUANTIZATIONS:
            raise InvalidInputError(f"{self.name}: quantization '{self.quantization}' unknown; choose one of "
                                    f"{QUANTIZATIONS}")
        if o["stream_balance"] is not None and not 0.0 < float(o["stream_balance"]) <= 1.0:
            raise InvalidInputError(f"{self.name}: stream_balance must be a quantile in (0, 1], got "
                                    f"{o['stream_balance']}")
        if o["quantizer"] not in QUANTIZERS:
            raise InvalidInputError(f"{self.name}: quantizer '{o['quantizer']}' unknown; choose one of "
                                    f"{QUANTIZERS}")
        if self.uses_aeq:
            from backends.tflite.aeq import check_options

            check_options(self.name, o)
        elif o["aeq_int16_ops"]:
            raise InvalidInputError(f"{self.name}: aeq_int16_ops needs quantizer 'ai_edge_quantizer' (TFLiteConverter "
                                    f"has no mixed int8/int16 graphs) and quantization 'int8'")
        for key in ("calibration_method", "encoder_calibration_method"):
            if not self.uses_aeq and o[key] is not None and o[key] not in CALIBRATION_METHODS:
                raise InvalidInputError(f"{self.name}: {key} '{o[key]}' unknown; choose one of "
                                        f"{CALIBRATION_METHODS}")
        regions = check_regions(o["float_regions"], self.name)
        if regions and (self.quantization != "int8" or self.uses_aeq):
            raise InvalidInputError(f"{self.name}: float_regions needs quantization 'int8' with the "
                                    f"TFLiteConverter quantizer")
        check_kernels(o["kernels"], self.name)
        if o["boundary"] not in ("requant", "raw"):
            raise InvalidInputError(f"{self.name}: boundary must be 'requant' or 'raw', got {o['boundary']!r}")
        self.source_buckets  # noqa: B018 - validates the option
        if int(o["calibration_sources"]) < 1:
            raise InvalidInputError(f"{self.name}: calibration_sources must be >= 1")
        if o["symmetric_matmul_rhs"] not in SYMMETRIC_RHS:
            raise InvalidInputError(f"{self.name}: symmetric_matmul_rhs must be one of {SYMMETRIC_RHS}, got "
                                    f"{o['symmetric_matmul_rhs']!r}")

    @property
    def _symmetric_rhs(self) -> str:
        return str(self.options["symmetric_matmul_rhs"]) if self.quantization == "int8" else "none"

    @property
    def source_buckets(self) -> tuple[int, ...]:
        """The encoder's source lengths, ascending and ending at max_source_length; () = static encoder."""
        return source_buckets(self.options["source_buckets"], self.max_source_length, self.name)

    def _bucket(self, width: int) -> int:
        if self.source_buckets and getattr(self, "_exact_width", False):
            return width  # measuring saturation: no padding rows (their values reach no output)
        return next((b for b in self.source_buckets if b >= width), self.max_source_length)

    @property
    def cache_length(self) -> int:
        return self.max_new_tokens + 1

    # ---- build ---------------------------------------------------------------------
    def _graphs(self, model):
        from backends.tflite.graphs import GraphSpec, Seq2SeqGraphs
        from backends.tflite.weights import extract_weights

        spec = GraphSpec(self.max_source_length, self.cache_length, self.options["mask_mode"],
                         float(self.options["mask_margin"]), self.options["cross_kv"],
                         dynamic_source=bool(self.source_buckets),
                         region_scopes=bool(self.options["float_regions"]))  # int8 only (_check_options)
        torch_model = model.load_torch_model()
        if model.normalized.model_type == "t5":
            from backends.tflite.t5 import T5Graphs, extract_t5_weights

            return T5Graphs(extract_t5_weights(torch_model, model.normalized), model.normalized, spec)
        weights = extract_weights(torch_model, model.normalized)
        del torch_model
        return Seq2SeqGraphs(weights, model.normalized, spec)

    def _fp32_reference(self) -> "TFLiteSplitBackend":
        opts = {k: self.options[k] for k in GRAPH_OPTIONS}
        return TFLiteSplitBackend(name="tflite-fp32-split", threads=self.threads,
                                  max_source_length=self.max_source_length,
                                  max_new_tokens=self.max_new_tokens, **opts)

    def prepare_impl(self, model, outdir: Path, calibration: CalibrationSet | None) -> dict[str, Any]:
        from backends.tflite.audit import audit_model

        self._check_options()
        if self.quantized and calibration is None:
            raise InvalidInputError(
                f"{self.name} is statically quantized and needs calibration data: pass a CalibrationSet "
                f"(the default is the Multi30k val split) to prepare()")
        require("tensorflow", self.name)
        graphs = self._graphs(model)
        enc_fn, dec_fn = graphs.encoder_function(), graphs.decoder_function()
        extra: dict[str, Any] = {"static": {"source_length": self.max_source_length,
                                            "cache_length": self.cache_length},
                                 "graph": {k: self.options[k] for k in GRAPH_OPTIONS}}
        if self.quantization == "none":
            files = {"encoder": "encoder.tflite", "decoder": "decoder_step.tflite"}
            (outdir / files["encoder"]).write_bytes(tconv.convert(enc_fn, "fp32"))
            (outdir / files["decoder"]).write_bytes(tconv.convert(dec_fn, "fp32"))
        else:
            p = self.quantization
            files = {"encoder": f"encoder_{p}.tflite", "decoder": f"decoder_step_{p}.tflite"}
            fp32 = self._fp32_reference()
            ref = fp32.prepare(model, outdir.parent)
            extra["fp32_reference"] = {"directory": ref.directory, "bytes": ref.bytes}
            enc_samples = dec_samples = None
            if self.quantized:
                if self.options["stream_balance"] is not None or self.options["ffn_balance"]:
                    graphs, enc_fn, dec_fn, extra["balance"] = self._balanced(model, graphs, enc_fn, dec_fn,
                                                                              calibration)
                enc_samples, dec_samples = self._calibration(model, graphs, enc_fn, dec_fn, calibration)
                if self.options["fine_logits"]:
                    graphs, dec_fn, extra["logits_floor"] = self._fine_head(model, graphs, enc_fn, dec_fn,
                                                                            calibration)
                extra["calibration"] = {"set": calibration.name, "fingerprint": calibration.fingerprint(),
                                        "sources": min(len(calibration.sources),
                                                       int(self.options["calibration_sources"])),
                                        "recipe": self.options["calibration_recipe"],
                                        "method": self.options["calibration_method"],
                                        "encoder_method": self.options["encoder_calibration_method"]
                                        or self.options["calibration_method"]}
            extra["quantizer"] = self.options["quantizer"]
            if self.uses_aeq:  # quantize the FP32 reference pair with ai-edge-quantizer
                from backends.tflite import aeq

                extra["ai_edge_quantizer"] = {"version": version_of("ai-edge-quantizer")}
                for role, samples in (("encoder", enc_samples), ("decoder", dec_samples)):
                    data, extra["ai_edge_quantizer"][role] = aeq.quantize_role(
                        Path(ref.files[role]).read_bytes(), samples, role, self.options, self.threads)
                    (outdir / files[role]).write_bytes(data)
            else:
                float_ops = tuple(self.options["float_ops"] or ())
                regions = tuple(self.options["float_regions"] or ())  # int8 only (_check_options)
                found: dict[str, dict[str, int]] = {"encoder": {}, "decoder": {}}
                method = self.options["calibration_method"] if self.quantized else "minmax"
                enc_method = (self.options["encoder_calibration_method"] or method) if self.quantized else "minmax"
                pct = float(self.options["percentile"])
                enc_pct = float(self.options["encoder_percentile"] or pct)
                sym = self._symmetric_rhs
                # with "all", the encoder-side cross K/V feed the decoder's matmuls: same zero-point-0 ranges
                # on both sides of the boundary, so the host does not requantize them
                cross_kv = [n for n in graphs.boundary_names() if n.startswith("cross_")] if sym == "all" else []
                (outdir / files["encoder"]).write_bytes(
                    tconv.convert(enc_fn, p, enc_samples, graphs.encoder_input_names(), float_ops, enc_method,
                                  enc_pct, valid_rows=bool(self.options["encoder_valid_rows"]) and self.quantized,
                                  symmetric_matmul_rhs=sym != "none", symmetric_outputs=cross_kv,
                                  float_regions=regions_in(regions, "encoder"), region_report=found["encoder"]))
                (outdir / files["decoder"]).write_bytes(
                    tconv.convert(dec_fn, p, dec_samples, graphs.decoder_input_names(), float_ops, method, pct,
                                  symmetric_matmul_rhs=sym == "all", float_regions=regions_in(regions, "decoder"),
                                  region_report=found["decoder"]))
                if regions:  # a region must have ops in some graph, a graph's region in that graph
                    def has_ops(part: str) -> bool:
                        graph, region = part.split(".")
                        return found[graph].get(region, 0) > 0

                    missing = [r for r in regions if not any(has_ops(p) for p in scoped_regions([r]))]
                    if missing:
                        raise InvalidInputError(f"{self.name}: float region(s) {missing} have no ops in this "
                                                f"model's graphs")
                    extra["float_regions"] = found
            extra["size_ratio_vs_fp32"] = sum((outdir / f).stat().st_size for f in files.values()) / ref.bytes
        extra["ops"] = {role: audit_model(outdir / rel) for role, rel in files.items()}
        extra["full_int8"] = all(a["full_int8"] for a in extra["ops"].values())
        extra["integer_only"] = all(a["integer_only"] for a in extra["ops"].values())
        gen = self._generation_json(model, graphs, outdir, files)
        (outdir / "generation.json").write_text(json.dumps(gen, indent=1))
        files["generation"] = "generation.json"
        extra["boundary"] = gen["boundary"]
        return {"files": files, "extra": extra}

    def _calibration(self, model, graphs, enc_fn, dec_fn, calibration):
        from backends.tflite.calibration import CalibrationRecorder

        n = int(self.options["calibration_sources"])
        recipe = self.options["calibration_recipe"]
        rec = CalibrationRecorder(model, graphs, enc_fn, dec_fn)
        enc = rec.encoder_samples(calibration, n)
        per = int(self.options["positions_per_source"])
        return (lambda: iter(enc)), (lambda: rec.decoder_samples(calibration, n, recipe, per))

    def _fine_head(self, model, graphs, enc_fn, dec_fn, calibration):
        """Size the fine LM head from FP32 greedy steps; return the rebuilt decoder function."""
        from dataclasses import replace

        from backends.tflite.calibration import CalibrationRecorder

        tops = CalibrationRecorder(model, graphs, enc_fn, dec_fn).top_logits(calibration, 64)
        floor = float(np.percentile(tops, 1.0) - float(self.options["logits_floor_margin"]))
        fine = type(graphs)(graphs.w, graphs.cfg, replace(graphs.spec, logits_floor=floor))
        return fine, fine.decoder_function(), floor

    def _balanced(self, model, graphs, enc_fn, dec_fn, calibration):
        """Graphs with balanced residual streams and/or FFN intermediates (balance.py): exact rewrites
        sized on FP32 statistics of a few calibration batches."""
        from backends.tflite import balance as bal
        from backends.tflite.calibration import CalibrationRecorder

        n = min(64, int(self.options["calibration_sources"]))
        info: dict[str, Any] = {}

        def batches(g, ef, df):
            rec = CalibrationRecorder(model, g, ef, df)
            return rec.encoder_samples(calibration, n), rec.decoder_samples(calibration, n, "real", 2)

        if self.options["stream_balance"] is not None:
            q = float(self.options["stream_balance"])
            reason = bal.stream_unsupported(graphs.w, graphs.cfg)
            if reason:
                info["stream"] = {"skipped": reason}
            else:
                absmax = bal.record_stream_absmax(graphs, *batches(graphs, enc_fn, dec_fn), 16)
                basis = bal.stream_basis(absmax, q)
                graphs = type(graphs)(bal.balance_weights(graphs.w, graphs.cfg, basis),
                                      graphs.cfg, graphs.spec)
                enc_fn, dec_fn = graphs.encoder_function(), graphs.decoder_function()
                info["stream"] = {"quantile": q, "basis_max": float(basis.max()),
                                  "channels_scaled": int((basis > 1.0).sum())}
        if self.options["ffn_balance"]:
            if graphs.cfg.activation.lower() not in bal.FFN_BALANCE_ACTIVATIONS:
                info["ffn"] = {"skipped": f"activation '{graphs.cfg.activation}' is not supported"}
            else:
                absmax = bal.record_ffn_absmax(graphs, *batches(graphs, enc_fn, dec_fn), 16)
                graphs = type(graphs)(bal.balance_ffn(graphs.w, graphs.cfg, absmax), graphs.cfg, graphs.spec)
                enc_fn, dec_fn = graphs.encoder_function(), graphs.decoder_function()
                info["ffn"] = {"layers": sum("ffn_scale" in layer
                                             for layer in graphs.w.enc_layers + graphs.w.dec_layers)}
        return graphs, enc_fn, dec_fn, info

    def _generation_json(self, model, graphs, outdir: Path, files: dict[str, str]) -> dict[str, Any]:
        enc = TFLiteModel(outdir / files["encoder"], 1)
        dec = TFLiteModel(outdir / files["decoder"], 1)
        conv = model.conventions
        boundary = []
        for name in graphs.boundary_names():
            e, d = enc.outputs[name], dec.inputs[name]
            boundary.append({"name": name, "encoder_output": e.to_dict(), "decoder_input": d.to_dict(),
                             "requantize": bool(e.quantized and (e.scale, e.zero_point) != (d.scale, d.zero_point))})
        caches = []
        for name in graphs.cache_names():
            new = "new_" + name[len("self_"):]
            o, i = dec.outputs[new], dec.inputs[name]
            caches.append({"input": i.to_dict(), "output": o.to_dict(),
                           "requantize": bool(o.quantized and (o.scale, o.zero_point) != (i.scale, i.zero_point))})
        raw = self.options["boundary"] == "raw"
        mask_len = self.cache_length + 1
        return {
            "format": "seqquant-tflite-generation/1",
            "model": {"family": model.family_name, "content_hash": model.content_hash},
            "precision": self.quantization if self.quantization != "none" else "fp32",
            "static": {"source_length": self.max_source_length, "cache_length": self.cache_length,
                       "max_new_tokens": self.max_new_tokens},
            "source_buckets": list(self.source_buckets),
            "special_tokens": conv.to_dict(),
            "tokenizer": {"family": model.family_name, "files": model.tokenizer_files(),
                          "source_prefix": conv.source_prefix,
                          "rule": "tokenize the source (with source_prefix) as the checkpoint's tokenizer does; "
                                  "its ids end with eos_token_id; detokenize the target ids with the same files"},
            "encoder": enc.describe(),
            "decoder_step": dec.describe(),
            "boundary_mode": "raw" if raw else "convert",
            "boundary": boundary,
            "self_attention_mask": {
                "length": mask_len,
                "rule": f"int32 [batch, {mask_len}]: 1 at slots < position (earlier tokens in the cache) and at "
                        f"slot {mask_len - 1} (the step's own token), 0 elsewhere"},
            "cache": {
                "layout": "one tensor per decoder layer and K/V: [batch, heads, cache_length, head_dim]",
                "rule": "step t reads slots < position; after the step write new_{k,v}_i[:, :, 0] into "
                        "slot `position` of self_{k,v}_i (requantize when the scales differ); "
                        "start with all slots = zero point",
                "tensors": caches},
            "logits": ({"logits_top": "fine head: where q_top > zero_point(logits_top) use "
                                      "dequant(logits_top)/2 + logits_floor, else dequant(logits)",
                        "logits_floor": graphs.spec.logits_floor}
                       if graphs.spec.logits_floor is not None else {"logits": "dequant(logits)"}),
            "loop": [
                ("pick the smallest of source_buckets >= the source length; pad input_ids (pad_token_id) and "
                 "attention_mask (0) to it; run the encoder (resize its inputs to that length; keep one "
                 "interpreter per bucket)" if self.source_buckets else
                 "pad input_ids (pad_token_id) and attention_mask (0) to source_length; run the encoder"),
                ("boundary_mode raw (the deliberately wrong first-try recipe this backend reproduces): the "
                 "encoder's integer outputs are fed to the decoder unchanged" if raw else
                 "convert every boundary tensor to the decoder input's domain: q_d = clamp(round(s_e/s_d*(q_e-z_e))+z_d) "
                 "(dequantize or quantize when one side is float)")
                + ("; pad its source axis to source_length with the decoder input's zero point (0 for float), "
                   "and the encoder attention mask with 0" if self.source_buckets else ""),
                "token = decoder_start_token_id; for position in 0..max_new_tokens-1: run decoder_step with "
                "input_ids=[[token]], position=[position], self_attention_mask (see self_attention_mask), "
                "encoder_attention_mask (1 for source tokens), boundary tensors, caches; then update the caches",
                "logits = (q - zero_point) * scale (see logits); with cur_len = tokens so far incl. the decoder "
                "start: min_length bans eos while cur_len < min_length, no_repeat_ngram_size bans repeats, "
                "bad_words_ids are banned, forced_bos_token_id is forced at cur_len 1 and forced_eos_token_id "
                "at cur_len == max_new_tokens; token = argmax (lowest id on ties)",
                "stop at eos_token_id; the output is the generated ids without eos and pad ids",
            ],
            "reference_loop": "reference_loop.py (numpy + ai_edge_litert; shipped by `python cli.py export`) "
                              "runs this loop and reproduces the backend's tokens",
        }

    def float_fallback(self) -> FloatFallback:
        from backends.tflite.graphs import REGIONS, SCOPED_REGIONS

        if self.quantization != "int8" or self.uses_aeq:
            raise InvalidInputError(f"{self.name}: float_regions (selective float) needs quantization 'int8' with "
                                    f"the TFLiteConverter quantizer; this backend is {self.precision_label} "
                                    f"({'ai-edge-quantizer' if self.uses_aeq else self.quantization})")
        return FloatFallback("float_regions", dict(SCOPED_REGIONS),
                             scoped_regions(tuple(self.options["float_regions"] or ()), self.name),
                             aliases={r: scoped_regions([r]) for r in REGIONS})

    # ---- run -----------------------------------------------------------------------
    def boundary_modes(self) -> tuple[str, ...]:
        return BOUNDARY_MODES if self.quantized else ()

    def _default_mode(self) -> str:
        return "int8enc-raw-int8dec" if self.options["boundary"] == "raw" else "int8enc-requant-int8dec"

    def set_boundary_mode_impl(self, mode: str | None) -> None:
        self._mode = mode or (self._default_mode() if self.quantized else "fp32enc-fp32dec")
        if self._active:
            self._load_models()

    def _runner(self, path: str | Path, role: str) -> TFLiteModel:
        """An interpreter for the backend's own ``role`` graph; while :meth:`op_numerics_impl` measures,
        one on the built-in kernels that keeps its intermediate tensors and reports every run."""
        inspect = getattr(self, "_inspect", None)
        if not inspect:
            return TFLiteModel(path, self.threads, self.kernels)
        run = TFLiteModel(path, self.threads, "builtin", preserve=True)
        run.observer = inspect[role].observe
        return run

    def supports_op_numerics(self) -> bool:
        return self.quantized

    def op_numerics_impl(self, input_ids, attention_mask, max_new_tokens: int) -> dict[str, Any]:
        from backends.numerics import translate_for_numerics
        from backends.tflite.numerics import OpNumerics

        files = self.artifacts.files
        stats = {role: OpNumerics(Path(files[role]).read_bytes()) for role in ("encoder", "decoder")}
        mode = self._mode
        self._inspect = stats
        try:
            self._mode = self._default_mode()
            self._enc_q = self._dec_q = None
            self._load_models()
            # the batch as deployed (padded to its source bucket), then each sentence alone at its
            # own width (the encoder's exact-width runs: no padding row)
            translate_for_numerics(self, stats, input_ids, attention_mask, max_new_tokens,
                                   before_alone=lambda: setattr(self, "_exact_width", True))
        finally:
            self._inspect = None
            self._exact_width = False
            self._mode = mode
            self._enc_q = self._dec_q = None
            self._load_models()
        return {"kernels": "builtin", "mode": self._default_mode(),
                # a static encoder runs padded to its length in both passes
                "saturation_padding_rows": not self.source_buckets,
                "graphs": {role: s.summary() for role, s in stats.items()}}

    def _load_models(self) -> None:
        self._enc_runs: dict[int, TFLiteModel] = {}
        self._plan: list[tuple[str, str, Any, Any]] | None = None
        files = self.artifacts.files
        if self._enc_q is None:  # the backend's own pair (FP32 for tflite-fp32-split)
            self._enc_q = self._runner(files["encoder"], "encoder")
            self._dec_q = self._runner(files["decoder"], "decoder")
        mode = self._mode
        if not self.quantized:
            self._enc, self._dec, self._raw = self._enc_q, self._dec_q, False
            return
        enc_fp32, dec_fp32 = mode.startswith("fp32enc"), mode.endswith("fp32dec")
        if (enc_fp32 or dec_fp32) and self._enc_f is None:
            art = self._fp32_reference().prepare(self.model, Path(self.artifacts.directory).parent)
            self._enc_f = TFLiteModel(art.files["encoder"], self.threads, self.kernels)
            self._dec_f = TFLiteModel(art.files["decoder"], self.threads, self.kernels)
        self._enc = self._enc_f if enc_fp32 else self._enc_q
        self._dec = self._dec_f if dec_fp32 else self._dec_q
        self._raw = mode == "int8enc-raw-int8dec"

    def activate_impl(self) -> None:
        if not self.artifacts or "encoder" not in self.artifacts.files:
            raise ArtifactError(f"{self.name}: artifacts missing; run prepare() again")
        self._enc_f = self._dec_f = self._enc_q = self._dec_q = None
        if getattr(self, "_mode", None) is None:
            self._mode = self._default_mode() if self.quantized else "fp32enc-fp32dec"
        self._load_models()

    def deactivate_impl(self) -> None:
        self._enc_f = self._dec_f = self._enc_q = self._dec_q = self._enc = self._dec = None
        self._enc_runs = {}

    def _encoder_at(self, width: int) -> TFLiteModel:
        """The encoder interpreter for one source-length bucket (one per bucket, so switching
        buckets never re-plans an interpreter)."""
        if not self.source_buckets:
            return self._enc
        run = self._enc_runs.get(width)
        if run is None:
            run = self._enc if not self._enc_runs else self._runner(self._enc.path, "encoder")
            self._enc_runs[width] = run
        return run

    def encode_impl(self, input_ids, attention_mask) -> EncoderState:
        S = self.max_source_length
        b, w = input_ids.shape
        if w > S:
            raise InvalidInputError(f"{self.name}: source length {w} exceeds the static source length {S}; "
                                    f"encode with max_length={S} or raise max_source_length")
        width = self._bucket(w)
        ids = np.full((b, width), self.model.conventions.pad_token_id, np.int32)
        mask = np.zeros((b, S), np.int32)
        ids[:, :w] = input_ids
        mask[:, :w] = attention_mask
        enc = self._encoder_at(width)
        out = enc.run({"input_ids": ids, "attention_mask": mask[:, :width]})
        tensors: dict[str, Any] = {"encoder_attention_mask": mask}
        for name, dst in self._dec.inputs.items():
            if name in out:
                tensors[name] = _pad_source_axis(to_domain(out[name], enc.outputs[name], dst, raw=self._raw), dst)
        return EncoderState(tensors, attention_mask, b)

    def generate_impl(self, input_ids, attention_mask, max_new_tokens: int, num_beams: int):
        if max_new_tokens > self.max_new_tokens:
            raise InvalidInputError(
                f"{self.name}: max_new_tokens={max_new_tokens} exceeds the static decoder length built into the "
                f"artifacts ({self.max_new_tokens}); create the backend with max_new_tokens={max_new_tokens}")
        return super().generate_impl(input_ids, attention_mask, max_new_tokens, num_beams)

    def _cache_plan(self) -> list[tuple[str, str, Any, Any]]:
        """(cache input, new-slot output, output info, input info) per cache tensor of the decoder."""
        if self._plan is None:  # reset whenever _load_models picks the decoder
            dec = self._dec
            self._plan = [(n, "new_" + n[len("self_"):], dec.outputs["new_" + n[len("self_"):]], info)
                          for n, info in dec.inputs.items() if _is_cache(n)]
        return self._plan

    def _empty_cache(self, batch: int) -> dict[str, Any]:
        cache: dict[str, Any] = {"pos": 0}
        for name, _, _, info in self._cache_plan():
            shape = (batch,) + tuple(info.shape[1:])
            cache[name] = np.full(shape, info.zero_point if info.quantized else 0, info.dtype)
        return cache

    def decode_step_impl(self, state: EncoderState, decoder_input_ids, cache):
        if cache is None:
            cache = self._empty_cache(decoder_input_ids.shape[0])
            for t in range(decoder_input_ids.shape[1] - 1):  # a prefix without a cache: replay it
                _, cache = self.decode_step_impl(state, decoder_input_ids[:, : t + 1], cache)
        pos = int(cache["pos"])
        if pos >= self.cache_length:
            raise InvalidInputError(f"{self.name}: decoder position {pos} exceeds the static cache length "
                                    f"{self.cache_length}; raise max_new_tokens")
        b = decoder_input_ids.shape[0]
        dec = self._dec
        feeds = {"input_ids": decoder_input_ids[:, -1:].astype(np.int32),
                 "position": np.full((b,), pos, np.int32),
                 "self_attention_mask": self_attention_mask(np.full((b,), pos), self.cache_length)}
        feeds.update((k, v) for k, v in state.tensors.items() if k in dec.inputs)
        feeds.update((k, v) for k, v in cache.items() if k != "pos")
        out = dec.run(feeds)
        new_cache = {"pos": pos + 1}
        for name, new, src, dst in self._cache_plan():
            arr = cache[name]
            arr[:, :, pos] = to_domain(out[new], src, dst)[:, :, 0]
            new_cache[name] = arr
        info = dec.outputs["logits"]
        logits = dequantize(out["logits"], info) if info.quantized else out["logits"]
        if "logits_top" in out:  # fine head: finer bins above the floor, the coarse head below it
            top = dec.outputs["logits_top"]
            q = out["logits_top"]
            floor = float(self.artifacts.extra["logits_floor"])
            logits = np.where(q > top.zero_point, dequantize(q, top) * 0.5 + floor, logits)
        return logits, new_cache
