"""ONNX Runtime backends: ``onnx-fp32``, ``onnx-dynamic-int8``, ``onnx-static-int8``.

All three run the same three optimum-onnx components (encoder, decoder for the first step,
decoder-with-past afterwards) through :class:`~backends.onnxrt.sessions.Seq2SeqSessions`; the
shared host loop (:mod:`backends.generation`) does greedy and beam search. The INT8 variants
quantize the FP32 export, which they build (or reuse) under the same workdir as ``onnx-fp32``.
"""
from __future__ import annotations

import abc
from pathlib import Path
from typing import Any

import numpy as np

from backends._imports import version_of
from backends.base import CalibrationSet, EncoderState, Seq2SeqBackend, Signature
from backends.errors import InvalidInputError
from backends.onnxrt.export import COMPONENTS, export_seq2seq, graph_summary
from backends.onnxrt.sessions import GRAPH_OPT_LEVELS, Seq2SeqSessions


class OnnxFP32Backend(Seq2SeqBackend):
    runtime = "onnxruntime"
    precision = "fp32"
    OPTIONS = {"opset": None, "graph_optimization": "all"}
    #: options that only affect the sessions, not the artifacts (kept out of the cache key)
    RUNTIME_ONLY = ("graph_optimization",)

    def __init__(self, name: str | None = None, **options: Any):
        super().__init__(name, **options)
        if self.options["graph_optimization"] not in GRAPH_OPT_LEVELS:
            raise InvalidInputError(f"{self.name}: graph_optimization must be one of {list(GRAPH_OPT_LEVELS)}, "
                                    f"got {self.options['graph_optimization']!r}")
        self._sessions: Seq2SeqSessions | None = None
        self._session_info: dict[str, Any] = {}

    # ---- identity ------------------------------------------------------------------
    def runtime_versions(self) -> dict[str, str]:
        return {"onnxruntime": version_of("onnxruntime"), "optimum-onnx": version_of("optimum-onnx"),
                "optimum": version_of("optimum"), "onnx": version_of("onnx"),
                "transformers": version_of("transformers"), "torch": version_of("torch"),
                "numpy": version_of("numpy")}  # static INT8 calibration statistics are numpy

    def settings(self) -> dict[str, Any]:
        return {k: v for k, v in super().settings().items() if k not in self.RUNTIME_ONLY}

    def signature(self) -> Signature:
        sig = super().signature()
        from backends.onnxrt.sessions import session_options

        info = self._session_info or session_options(self.threads, self.options["graph_optimization"])[1]
        sig.settings["session"] = dict(info)
        return sig

    # ---- artifacts -----------------------------------------------------------------
    def prepare_impl(self, model, outdir: Path, calibration: CalibrationSet | None) -> dict[str, Any]:
        files = export_seq2seq(model, outdir, opset=self.options["opset"], threads=self.threads)
        return {"files": files, "extra": self._audit(outdir, files)}

    @staticmethod
    def _audit(outdir: Path, files: dict[str, str]) -> dict[str, Any]:
        comps = {}
        for role, rel in files.items():
            summary = graph_summary(outdir / rel)
            comps[role] = {"file": rel, "bytes": (outdir / rel).stat().st_size, **summary}
        return {"components": comps}

    # ---- runtime -------------------------------------------------------------------
    def activate_impl(self) -> None:
        self._sessions = Seq2SeqSessions(self.artifacts.files, self.threads, self.options["graph_optimization"])
        self._session_info = self._sessions.session_info

    def deactivate_impl(self) -> None:
        self._sessions = None

    def encode_impl(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> EncoderState:
        hidden = self._sessions.encode(input_ids, attention_mask)
        return EncoderState({"last_hidden_state": hidden}, attention_mask, input_ids.shape[0])

    def decode_step_impl(self, state: EncoderState, decoder_input_ids: np.ndarray, cache: Any):
        return self._sessions.step(state.tensors["last_hidden_state"], state.attention_mask,
                                   decoder_input_ids, cache)

    def select(self, obj: Any, indices: np.ndarray) -> Any:
        """Encoder state and KV cache are dicts of batch-first arrays: index axis 0."""
        if isinstance(obj, dict):
            idx = np.asarray(indices, dtype=np.int64)
            return {k: np.ascontiguousarray(v[idx]) for k, v in obj.items()}
        return super().select(obj, indices)

    # ---- helpers for the INT8 variants ------------------------------------------------
    def fp32_reference(self, workdir: Path) -> "OnnxFP32Backend":
        """The ``onnx-fp32`` backend prepared in ``workdir`` (reuses its cached export)."""
        ref = OnnxFP32Backend(name="onnx-fp32", threads=self.threads, opset=self.options["opset"],
                              max_source_length=self.max_source_length, max_new_tokens=self.max_new_tokens,
                              graph_optimization=self.options["graph_optimization"])
        ref.prepare(self.model, workdir)
        return ref


class _QuantizedBackend(OnnxFP32Backend):
    """INT8 components plus the encoder -> decoder boundary matrix.

    ORT passes float tensors between the components (a QDQ/dynamic graph dequantizes its output
    and re-quantizes its input), so the default is ``int8enc-requant-int8dec``; the other modes swap
    in the FP32 export's encoder or decoders. ``int8enc-raw-int8dec`` does not exist here.
    """

    _mode: str | None = None
    _fp32_sessions: Seq2SeqSessions | None = None
    MODES = ("fp32enc-fp32dec", "int8enc-dequant-fp32dec", "fp32enc-quant-int8dec", "int8enc-requant-int8dec")

    @abc.abstractmethod
    def _describe(self) -> dict[str, Any]:
        """The variant's quantization settings (signature and cache key)."""

    def boundary_modes(self) -> tuple[str, ...]:
        return self.MODES

    def set_boundary_mode_impl(self, mode: str | None) -> None:
        self._mode = mode
        if mode not in (None, "int8enc-requant-int8dec") and self._active and self._fp32_sessions is None:
            self._fp32_sessions = self._open_fp32_sessions()

    def _open_fp32_sessions(self) -> Seq2SeqSessions:
        ref = self.fp32_reference(Path(self.artifacts.directory).parent)  # cached export, rebuilt if gone
        return Seq2SeqSessions(ref.artifacts.files, self.threads, self.options["graph_optimization"])

    def activate_impl(self) -> None:
        super().activate_impl()
        self._fp32_sessions = None
        if self._mode not in (None, "int8enc-requant-int8dec"):
            self._fp32_sessions = self._open_fp32_sessions()

    def deactivate_impl(self) -> None:
        super().deactivate_impl()
        self._fp32_sessions = None

    def _pick(self, part: str) -> Seq2SeqSessions:
        mode = self._mode
        if mode is None:
            return self._sessions
        enc, dec = mode.split("-")[0], mode.split("-")[-1]
        return self._fp32_sessions if (enc if part == "enc" else dec).startswith("fp32") else self._sessions

    def encode_impl(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> EncoderState:
        hidden = self._pick("enc").encode(input_ids, attention_mask)
        return EncoderState({"last_hidden_state": hidden}, attention_mask, input_ids.shape[0])

    def decode_step_impl(self, state: EncoderState, decoder_input_ids: np.ndarray, cache: Any):
        return self._pick("dec").step(state.tensors["last_hidden_state"], state.attention_mask,
                                      decoder_input_ids, cache)

    def quantization_settings(self) -> dict[str, Any]:
        q = self._describe()
        if self.artifacts is not None:
            q.update(self.artifacts.extra.get("quantization_measured", {}))
        return q

    def settings(self) -> dict[str, Any]:
        from backends.onnxrt.quantize import CACHE_KEY_FIELDS

        q = self._describe()
        return {**super().settings(), "resolved": {k: q[k] for k in CACHE_KEY_FIELDS}}


class OnnxDynamicInt8Backend(_QuantizedBackend):
    precision = "int8-dynamic"
    OPTIONS = {**OnnxFP32Backend.OPTIONS, "preset": "auto", "per_channel": True, "reduce_range": None}

    def _describe(self) -> dict[str, Any]:
        from backends.onnxrt.quantize import dynamic_settings

        return dynamic_settings(self)

    def prepare_impl(self, model, outdir: Path, calibration: CalibrationSet | None) -> dict[str, Any]:
        from backends.onnxrt.quantize import quantize_dynamic_components

        ref = self.fp32_reference(outdir.parent)
        files = quantize_dynamic_components(self, ref.artifacts.files, outdir)
        extra = self._audit(outdir, files)
        extra.update(fp32_bytes=ref.artifacts.bytes, fp32_files=ref.artifacts.files)
        return {"files": files, "extra": extra}


class OnnxStaticInt8Backend(_QuantizedBackend):
    precision = "int8-static"
    # per_channel off: ORT fuses QDQ MatMul into QLinearMatMul only with per-tensor weight scales;
    # per-channel leaves DequantizeLinear + FP32 MatMul, measured 2-4x slower than FP32 here.
    OPTIONS = {**OnnxFP32Backend.OPTIONS, "preset": "auto", "per_channel": False, "reduce_range": None,
               "activation_type": None, "weight_type": None, "calibration_method": "minmax",
               "calibration_size": 64, "calibration_batch_size": 8, "calibration_percentile": 99.999,
               "op_types": None, "exclude_op_types": (), "preprocess": True,
               "quantize_activation_matmuls": False}

    def uses_calibration(self) -> bool:
        return True

    def supports_op_numerics(self) -> bool:
        return True

    def op_numerics_impl(self, input_ids, attention_mask, max_new_tokens: int) -> dict[str, Any]:
        """Per-op numerics of the fused int8 graphs ORT runs (``backends/onnxrt/numerics.py``), on the
        backend's own sessions (every boundary mode restored afterwards)."""
        from backends.onnxrt.numerics import measure

        mode = self._mode
        try:
            self._mode = None
            res = measure(self, self._sessions, self.artifacts.files, input_ids, attention_mask, max_new_tokens,
                          self.options["graph_optimization"])
        finally:
            self._mode = mode
        return {**res, "mode": "int8enc-requant-int8dec"}

    def _describe(self) -> dict[str, Any]:
        from backends.onnxrt.quantize import static_settings

        return static_settings(self)

    def prepare_impl(self, model, outdir: Path, calibration: CalibrationSet | None) -> dict[str, Any]:
        from backends.onnxrt.calibration import record_calibration_feeds
        from backends.onnxrt.quantize import quantize_static_components

        if calibration is None or not calibration.sources:
            raise InvalidInputError(f"{self.name}: static quantization needs a calibration set "
                                    f"(prepare(model, workdir, calibration)); none was given")
        ref = self.fp32_reference(outdir.parent)
        with ref:
            feeds, stats = record_calibration_feeds(ref, model, calibration,
                                                    size=int(self.options["calibration_size"]),
                                                    batch_size=int(self.options["calibration_batch_size"]))
        files, qinfo = quantize_static_components(self, ref.artifacts.files, outdir, feeds)
        extra = self._audit(outdir, files)
        extra.update(fp32_bytes=ref.artifacts.bytes, fp32_files=ref.artifacts.files)
        extra["quantization_measured"] = {"calibration": {"set": calibration.name,
                                                          "fingerprint": calibration.fingerprint(), **stats},
                                          **qinfo}
        return {"files": files, "extra": extra}
