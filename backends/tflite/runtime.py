"""A LiteRT interpreter addressed by signature tensor names, plus (re)quantization helpers.

:class:`TFLiteModel` resizes the batch dimension when it changes (batch, batch*beams),
feeds inputs by name and returns outputs by name; :class:`TensorInfo` carries each
tensor's dtype and quantization (scale, zero point) so the host can cross a quantized
boundary explicitly.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from backends._imports import require
from backends.errors import ArtifactError, InvalidInputError
from backends.tflite import reference_loop


@dataclass(frozen=True)
class TensorInfo:
    name: str
    index: int
    dtype: np.dtype
    shape: tuple[int, ...]  # -1 for the dynamic batch
    scale: float = 0.0
    zero_point: int = 0

    @cached_property
    def quantized(self) -> bool:
        return self.scale != 0.0 and np.issubdtype(self.dtype, np.integer)

    def to_dict(self) -> dict[str, Any]:
        d = {"name": self.name, "dtype": np.dtype(self.dtype).name, "shape": list(self.shape)}
        if self.quantized:
            d.update(scale=self.scale, zero_point=self.zero_point)
        return d


def _info(name: str, d: dict) -> TensorInfo:
    scale, zp = d.get("quantization", (0.0, 0))
    sig = d.get("shape_signature", d["shape"])
    return TensorInfo(name, int(d["index"]), np.dtype(d["dtype"]), tuple(int(x) for x in sig),
                      float(scale), int(zp))


def quantize(x: np.ndarray, info: TensorInfo) -> np.ndarray:
    """float -> the integer domain of ``info`` (round half to even, like TFLite's host code)."""
    lim = np.iinfo(info.dtype)
    q = np.round(np.asarray(x, np.float32) / np.float32(info.scale)) + info.zero_point
    return np.clip(q, lim.min, lim.max).astype(info.dtype)


def dequantize(q: np.ndarray, info: TensorInfo) -> np.ndarray:
    return (q.astype(np.float32) - np.float32(info.zero_point)) * np.float32(info.scale)


def requantize(q: np.ndarray, src: TensorInfo, dst: TensorInfo) -> np.ndarray:
    """q_d = clamp(round(s_e/s_d * (q_e - z_e)) + z_d); identity when the parameters match."""
    if src.scale == dst.scale and src.zero_point == dst.zero_point and src.dtype == dst.dtype:
        return q
    lim = np.iinfo(dst.dtype)
    r = np.round((q.astype(np.float32) - src.zero_point) * np.float32(src.scale / dst.scale)) + dst.zero_point
    return np.clip(r, lim.min, lim.max).astype(dst.dtype)


def to_domain(x: np.ndarray, src: TensorInfo | None, dst: TensorInfo, raw: bool = False) -> np.ndarray:
    """Convert ``x`` (described by ``src``; None = float) into ``dst``'s domain."""
    src_q = src is not None and src.quantized
    if raw:  # deliberately wrong: bytes cross unchanged (the naive boundary)
        return x.astype(dst.dtype) if src_q else (quantize(x, dst) if dst.quantized else x)
    if dst.quantized:
        return requantize(x, src, dst) if src_q else quantize(x, dst)
    return dequantize(x, src) if src_q else np.asarray(x, np.float32)


#: which LiteRT kernels run a model: ``xnnpack`` (LiteRT's default: the XNNPACK delegate takes the
#: ops it supports, the built-in kernels the rest), ``builtin`` (the built-in optimized kernels only,
#: no default delegate) or ``reference`` (the built-in reference kernels: slow, the spec). The
#: artifacts are the same; int8 kernels differ in rounding, so their outputs may differ. One table,
#: kept in the shipped reference loop (which imports nothing from seqquant).
KERNELS = reference_loop.KERNELS


def check_kernels(kernels: Any, who: str) -> str:
    if kernels not in KERNELS:
        raise InvalidInputError(f"{who}: kernels must be one of {sorted(KERNELS)}, got {kernels!r}")
    return str(kernels)


class TFLiteModel:
    """One .tflite file with a single signature, run by the LiteRT interpreter.

    ``preserve=True`` keeps every intermediate tensor readable after a run (LiteRT's
    ``experimental_preserve_all_tensors``; only without a delegate, so ``kernels`` must not be
    ``xnnpack``); ``observer``, when set, is called with the interpreter after every invoke."""

    def __init__(self, path: str | Path, threads: int, kernels: str = "xnnpack", preserve: bool = False):
        litert = require("ai_edge_litert.interpreter", "running TFLite models")
        self.path = Path(path)
        self.kernels = check_kernels(kernels, str(self.path))
        if preserve and self.kernels == "xnnpack":
            raise InvalidInputError(f"{self.path}: intermediate tensors are kept only without the XNNPACK "
                                    f"delegate; use kernels 'builtin' or 'reference'")
        resolver = getattr(litert.OpResolverType, KERNELS[self.kernels])
        try:
            with warnings.catch_warnings():  # keeping every tensor is what preserve asks for
                warnings.filterwarnings("ignore", message=".*experimental_preserve_all_tensors")
                self.interp = litert.Interpreter(model_path=str(self.path), num_threads=int(threads),
                                                 experimental_op_resolver_type=resolver,
                                                 experimental_preserve_all_tensors=bool(preserve))
        except (ValueError, RuntimeError) as exc:
            raise ArtifactError(f"LiteRT could not load {self.path}: {exc}") from exc
        sigs = self.interp.get_signature_list()
        if len(sigs) != 1:
            raise ArtifactError(f"{self.path} has {len(sigs)} signatures; expected exactly one")
        runner = self.interp.get_signature_runner(next(iter(sigs)))
        self.inputs = {n: _info(n, d) for n, d in runner.get_input_details().items()}
        self.outputs = {n: _info(n, d) for n, d in runner.get_output_details().items()}
        self._shapes: dict[str, tuple[int, ...] | None] = {n: None for n in self.inputs}  # resize on first run
        self._set = self.interp.set_tensor
        self._get = self.interp.get_tensor
        self._in = [(n, i.index, np.dtype(i.dtype)) for n, i in self.inputs.items()]
        self._out = [(n, o.index) for n, o in self.outputs.items()]
        self.observer: Any = None

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        missing = [n for n in self.inputs if n not in feeds]
        if missing:
            raise InvalidInputError(f"{self.path.name}: missing inputs {sorted(missing)}")
        shapes = self._shapes
        if any(shapes[n] != feeds[n].shape for n in shapes):
            self._resize(feeds)
        for n, index, dtype in self._in:
            self._set(index, np.ascontiguousarray(feeds[n], dtype=dtype))
        self.interp.invoke()
        if self.observer is not None:
            self.observer(self.interp)
        return {n: self._get(index) for n, index in self._out}

    def _resize(self, feeds: dict[str, np.ndarray]) -> None:
        resized = False
        for n, info in self.inputs.items():
            shape = tuple(feeds[n].shape)
            if self._shapes.get(n) != shape:
                if len(shape) != len(info.shape) or any(s != -1 and s != d for s, d in zip(info.shape, shape)):
                    raise InvalidInputError(f"{self.path.name}: input '{n}' has shape {shape}, "
                                            f"the model expects {info.shape} (-1 = any)")
                self.interp.resize_tensor_input(info.index, list(shape), strict=True)
                self._shapes[n] = shape
                resized = True
        if resized:
            self.interp.allocate_tensors()

    def describe(self) -> dict[str, Any]:
        return {"file": self.path.name,
                "inputs": [i.to_dict() for i in self.inputs.values()],
                "outputs": [o.to_dict() for o in self.outputs.values()]}
