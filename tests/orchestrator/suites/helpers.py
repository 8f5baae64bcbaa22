"""Test helpers for the suites / verdict tests: real measurements on tiny models, in-process.

* ``SimQuantBoundaryBackend``: the torch split backend with a *real* int8 quantizer at the
  encoder->decoder boundary (numpy round/clip of the real encoder output). The decoder input
  scale is ``decoder_scale_ratio`` x the encoder output scale, so passing raw int8 codes
  (``int8enc-raw-int8dec``) feeds the decoder a memory scaled by that ratio, while the
  requantized boundary is right. Supports every boundary mode.
* ``SourceBlindBackend``: the naive-calibration failure: the boundary scale was calibrated on
  zero encoder states (a huge step), so every code rounds to 0 and the decoder never sees the
  source.
* ``run_suites(...)``: run suites on backends in-process and build a report dict the way the
  engine merges results (status, signature, metrics, artifacts, suites incl. compare fields).
* ``plant_outliers(model_dir, out_dir, alpha)``: a function-preserving weight edit that gives
  every attention layer huge activation outliers (v_proj rows x alpha, out_proj columns / alpha).
"""
from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from backends.base import BOUNDARY_MODES, EncoderState
from backends.torch_ref.backend import TorchSplitBackend

REPO = Path(__file__).resolve().parents[3]
DATA = REPO / "orchestrator" / "defaults" / "data" / "multi30k"


def load_test_data(n: int, split: str = "test_2016_flickr") -> tuple[list[str], list[str]]:
    with gzip.open(DATA / f"{split}.en.gz", "rt", encoding="utf-8") as fh:
        src = [line.strip() for line in fh][:n]
    with gzip.open(DATA / f"{split}.de.gz", "rt", encoding="utf-8") as fh:
        ref = [line.strip() for line in fh][:n]
    return src, ref


def _quant(x: np.ndarray, scale: float) -> np.ndarray:
    return np.clip(np.round(x / scale), -128, 127).astype(np.int8)


class SimQuantBoundaryBackend(TorchSplitBackend):
    """Torch FP32 network with a real int8 encoder->decoder boundary (see module docstring)."""

    precision = "int8"
    OPTIONS = {"boundary": "requant", "decoder_scale_ratio": 4.0, "zero_calibrated": False}

    def quantization_settings(self) -> dict[str, Any]:
        return {"mode": "int8-boundary", "boundary": self.options["boundary"],
                "calibration_recipe": "zeros" if self.options["zero_calibrated"] else "real"}

    def boundary_modes(self) -> tuple[str, ...]:
        return BOUNDARY_MODES

    def set_boundary_mode_impl(self, mode):
        self._mode = mode

    def _own_mode(self) -> str:
        return "int8enc-raw-int8dec" if self.options["boundary"] == "raw" else "int8enc-requant-int8dec"

    def encode_impl(self, input_ids, attention_mask) -> EncoderState:
        torch = self._torch
        state = super().encode_impl(input_ids, attention_mask)
        h = state.tensors["last_hidden_state"].numpy().astype(np.float32)
        mode = getattr(self, "_mode", None) or self._own_mode()
        s_e = float(np.abs(h).max()) / 127.0 or 1.0
        if self.options["zero_calibrated"]:
            s_e = 1e6  # calibrated on zero states: every real value rounds to code 0
        s_d = s_e * float(self.options["decoder_scale_ratio"])
        if mode == "fp32enc-fp32dec":
            out = h
        elif mode == "int8enc-dequant-fp32dec":
            out = _quant(h, s_e).astype(np.float32) * s_e
        elif mode == "fp32enc-quant-int8dec":
            out = _quant(h, s_d).astype(np.float32) * s_d
        elif mode == "int8enc-requant-int8dec":
            q_e = _quant(h, s_e).astype(np.float32)
            out = np.clip(np.round(q_e * s_e / s_d), -128, 127) * s_d
        else:  # raw: the decoder reads the encoder's int8 codes with its own scale
            out = _quant(h, s_e).astype(np.float32) * s_d
        return EncoderState({"last_hidden_state": torch.as_tensor(out.astype(np.float32))}, attention_mask,
                            input_ids.shape[0])


class SourceBlindBackend(SimQuantBoundaryBackend):
    OPTIONS = {"boundary": "requant", "decoder_scale_ratio": 1.0, "zero_calibrated": True}

    def boundary_modes(self) -> tuple[str, ...]:
        return ()


def make_backend(kind: str, name: str, **options):
    from backends.registry import get_backend

    if kind == "sim-int8":
        return SimQuantBoundaryBackend(name=name, **options)
    if kind == "source-blind":
        return SourceBlindBackend(name=name, **options)
    return get_backend(kind, **options)


def run_suites(model_dir: Path, backends: dict[str, Any], suites: list[str], sources: list[str],
               references: list[str], run_dir: Path, reference: str = "torch-fp32",
               suite_options: dict[str, dict] | None = None, settings: dict | None = None) -> dict[str, Any]:
    """Run ``suites`` on ``backends`` ({name: backend instance}) in-process; return a report dict."""
    from backends.model import ModelBundle
    from orchestrator.suites.base import CompareContext, SuiteContext, get_suite

    bundle = ModelBundle.load(model_dir)
    settings = {"batch_size": 16, "num_beams": 1, **(settings or {})}
    suite_options = suite_options or {}
    report: dict[str, Any] = {"reference_backend": reference, "model": bundle.describe(),
                              "data": {"n_sentences": len(sources), "fingerprint": str(hash(tuple(sources)))},
                              "settings": settings, "backends": {}, "warnings": [], "run": {}}
    results: dict[str, dict[str, Any]] = {s: {} for s in suites}
    for name, b in backends.items():
        b.prepare(bundle, run_dir / "artifacts")
        entry = {"status": "ok", "reason": None, "signature": b.signature().to_dict(), "metrics": {},
                 "artifacts": {**{k: v for k, v in b.artifacts.to_dict().items() if k != "extra"},
                               **b.artifacts.extra}, "suites": {}}
        with b:
            for s in suites:
                suite = get_suite(s)
                if not suite.supports(b):
                    continue
                ctx = SuiteContext(model=bundle, sources=sources, references=references,
                                   outdir=run_dir / "backends" / name, settings=settings,
                                   suite_options=suite_options.get(s, {}), reference_backend=reference)
                res = json.loads(json.dumps(suite.run(b, ctx)))  # must be JSON-serialisable
                results[s][name] = res
                entry["suites"][s] = dict(res)
                entry["metrics"].update(res.get("metrics") or {})
        report["backends"][name] = entry
    for s in suites:
        ctx = CompareContext(model=bundle, sources=sources, references=references, run_dir=run_dir,
                             reference_backend=reference, settings=settings, suite_options=suite_options.get(s, {}))
        extras = json.loads(json.dumps(get_suite(s).compare(results[s], ctx)))
        for name, fields in extras.items():
            report["backends"][name]["suites"].setdefault(s, {}).update(fields)
            report["backends"][name]["metrics"].update(fields.get("metrics") or {})
    return report


def translate_reference(model_dir: Path, sources: list[str], max_new_tokens: int = 64) -> list[str]:
    """The torch-fp32 (HF generate) translations: self-references for random tiny models."""
    from backends.model import ModelBundle
    from backends.registry import get_backend

    bundle = ModelBundle.load(model_dir)
    b = get_backend("torch-fp32", max_new_tokens=max_new_tokens)
    b.prepare(bundle, Path(model_dir).parent / "ref-artifacts")
    with b:
        enc = bundle.encode_sources(sources, b.max_source_length)
        toks = b.generate(enc.input_ids, enc.attention_mask)
    return bundle.decode(toks)


def plant_outliers(model_dir: Path, out_dir: Path, alpha: float = 1000.0, channels: int = 2) -> Path:
    """Copy a checkpoint; scale ``channels`` value channels of every attention by ``alpha`` and the
    matching out_proj input columns by 1/alpha. FP32 function is unchanged (attention is linear in
    V); the out_proj inputs and the v_proj weights get outliers ``alpha`` x larger than the rest."""
    from safetensors.torch import load_file, save_file

    out_dir = Path(out_dir)
    if out_dir.exists():
        shutil.rmtree(out_dir)
    shutil.copytree(model_dir, out_dir)
    sd = load_file(str(out_dir / "model.safetensors"))
    n = 0
    for key in list(sd):
        if key.endswith("v_proj.weight"):
            pre = key[: -len("v_proj.weight")]
            w, bias = sd[key].clone(), sd.get(pre + "v_proj.bias")
            ow = sd[pre + "out_proj.weight"].clone()
            for c in range(channels):
                w[c, :] *= alpha
                ow[:, c] /= alpha
                if bias is not None:
                    bias = bias.clone()
                    bias[c] *= alpha
            sd[key], sd[pre + "out_proj.weight"] = w.contiguous(), ow.contiguous()
            if bias is not None:
                sd[pre + "v_proj.bias"] = bias.contiguous()
            n += 1
    assert n > 0, "no attention v_proj found"  # test helper invariant, not user input
    save_file({k: v.contiguous() for k, v in sd.items()}, str(out_dir / "model.safetensors"),
              metadata={"format": "pt"})
    return out_dir
