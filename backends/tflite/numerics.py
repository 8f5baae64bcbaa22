"""Per-op numerics of a quantized .tflite graph, measured while it runs (the LiteRT counterpart of
TFLite's Quantization Debugger layer statistics, on the shipped artifact itself).

For every op whose output is an integer activation, the interpreter's own output is compared with
the same op computed in float64 on the op's *dequantized integer inputs*. The difference is the op's
local error, in units of its output scale (LSB): an int8 kernel that does nothing but round lands
near ``1/sqrt(12) = 0.29`` LSB rms and never beyond 0.5 LSB; a kernel or a quantization parameter
that is wrong (a zero point ignored, a rescale overflowing) shows up as rms error or bias of
several LSB. Values the float op produces outside the output's representable range count as
*saturated* (clipped by the range the calibration chose), separately from the error, with how far
beyond the range they lie on average (``saturated_by_lsb``: a few steps over the edge is mild;
hundreds of steps are a range that does not fit the data). Padding rows (the encoder's masked
positions, a finished sentence's steps after EOS) reach no output and saturate freely, so the caller
turns ``count_saturation`` off for runs that contain them.

The error and saturation bookkeeping is shared with the other runtimes (:mod:`backends.numerics`).
Checked op types: :data:`CHECKED_OPS` (arithmetic, reductions, the LUT ops, the matmuls, and the
requantizing data movement: QUANTIZE, CONCATENATION, ...); the rest (GATHER, STRIDED_SLICE, ...) are
counted as not checked. The defect thresholds are in 8-bit steps: an int16 output (16x8, mixed
graphs) is allowed 256 of its own steps. Needs the interpreter built with
``experimental_preserve_all_tensors`` and without a delegate (XNNPACK keeps no intermediate
tensors), i.e. LiteRT's built-in kernels: what it measures is those kernels.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from backends._imports import require
from backends.numerics import DEFECT_BIAS_LSB, DEFECT_RMS_LSB, OpErrorStats, dequantize, is_defect
from backends.tflite.graphs import op_location

__all__ = ["CHECKED_OPS", "DEFECT_BIAS_LSB", "DEFECT_RMS_LSB", "OpNumerics", "is_defect"]
CHECKED_OPS = ("ADD", "SUB", "MUL", "SQUARED_DIFFERENCE", "DIV", "MAXIMUM", "MINIMUM", "MEAN", "SUM",
               "REDUCE_MAX", "RSQRT", "SQRT", "SQUARE", "EXP", "SOFTMAX", "LOGISTIC", "TANH", "GELU", "RELU",
               "RELU6", "FULLY_CONNECTED", "BATCH_MATMUL", "QUANTIZE", "RESHAPE", "EXPAND_DIMS", "SQUEEZE",
               "TRANSPOSE", "CONCATENATION", "SELECT_V2")
_ERF = np.vectorize(math.erf, otypes=[np.float64])
_ACTIVATIONS = {0: None, 1: (0.0, np.inf), 2: (-1.0, 1.0), 3: (0.0, 6.0)}  # NONE, RELU, RELU_N1_TO_1, RELU6


def _options(model_bytes: bytes) -> dict[int, Any]:
    """Op index -> its builtin options object (flatbuffer object API), for subgraph 0 (LiteRT's own
    schema module: no TensorFlow import in the worker)."""
    schema = require("ai_edge_litert.schema_py_generated", "reading .tflite op options")
    model = schema.ModelT.InitFromPackedBuf(bytearray(model_bytes), 0)
    return {i: op.builtinOptions for i, op in enumerate(model.subgraphs[0].operators or [])}


class OpNumerics(OpErrorStats):
    """Accumulates per-op statistics over invocations of one interpreter (``observe`` after each
    ``invoke``); ``summary()`` gives the serialisable result."""

    def __init__(self, model_bytes: bytes):
        super().__init__()
        self._opts = _options(model_bytes)
        self._graphs: dict[int, tuple[dict[int, dict], list[dict], set[int], dict[int, str]]] = {}
        self._consts: set[int] = set()
        self._const_values: dict[tuple[int, int], np.ndarray] = {}

    # ---- measurement -------------------------------------------------------------------
    def observe(self, interp) -> None:
        self.invocations += 1
        graph = self._graphs.get(id(interp))
        if graph is None:  # tensor and op details are static: read once per interpreter
            ops = interp._get_ops_details()  # noqa: SLF001 - the only op listing
            tensors = {t["index"]: t for t in interp.get_tensor_details()}
            produced = {int(o) for op in ops for o in op["outputs"]}
            inputs = {d["index"] for d in interp.get_input_details()}
            outputs = {int(i): f"output {n}" for sig in interp._get_full_signature_list().values()  # noqa: SLF001
                       for n, i in sig["outputs"].items()}  # read without a signature runner (it pins shapes)
            graph = self._graphs[id(interp)] = (tensors, ops, set(tensors) - produced - inputs, outputs)
        tensors, ops, self._consts, outputs = graph
        first = self.invocations == 1
        for op in ops:
            name, index = op["op_name"], int(op["index"])
            outs = [o for o in op["outputs"] if o >= 0]
            if not outs:
                continue
            out_t = tensors[outs[0]]
            if not np.issubdtype(np.dtype(out_t["dtype"]), np.integer) or not _scales(out_t).size:
                continue  # float or plain integer (ids, masks) outputs: not a quantized activation
            if name not in CHECKED_OPS:
                if first:
                    self.not_checked(name)
                continue
            ins = [i for i in op["inputs"] if i >= 0]
            got = _dequantize(interp.get_tensor(outs[0]), out_t)
            try:
                with np.errstate(all="ignore"):  # rsqrt(0) = inf, exp overflow: clipped below like the kernel
                    ref = self._reference(name, index, interp, tensors, ins, got.shape)
                ref = np.broadcast_to(ref, got.shape)
            except (_Unsupported, ValueError):  # an op form this check does not model (options, shapes)
                if first:
                    self.not_checked(name)
                continue
            dtype = np.dtype(out_t["dtype"])
            lim = np.iinfo(dtype)
            meta = {"op": name, "tensor": out_t["name"], "bits": 8 * dtype.itemsize,
                    "where": outputs.get(outs[0]) or op_location(out_t["name"])}
            self.record(index, meta, got, ref, float(_scales(out_t)[0]), int(_zero_points(out_t)[0]),
                        lim.min, lim.max)

    def _reference(self, name: str, index: int, interp, tensors, ins: list[int],
                   out_shape: tuple[int, ...]) -> np.ndarray:
        opts = self._opts.get(index)
        x = [self._constant(i, interp, tensors) if i in self._consts else _dequantize(interp.get_tensor(i), tensors[i])
             for i in ins]
        if name in ("ADD", "SUB", "MUL", "SQUARED_DIFFERENCE"):
            a, b = x[0], x[1]
            ref = {"ADD": a + b, "SUB": a - b, "MUL": a * b, "SQUARED_DIFFERENCE": np.square(a - b)}[name]
            return _activation(ref, opts)
        if name in ("MEAN", "SUM", "REDUCE_MAX"):
            axes = tuple(int(a) for a in np.atleast_1d(interp.get_tensor(ins[1])))
            keep = bool(getattr(opts, "keepDims", False))
            return {"MEAN": np.mean, "SUM": np.sum, "REDUCE_MAX": np.max}[name](x[0], axis=axes, keepdims=keep)
        if name in ("QUANTIZE", "RESHAPE", "EXPAND_DIMS", "SQUEEZE"):  # a requantization / a view
            return x[0].reshape(out_shape)
        if name == "TRANSPOSE":
            return np.transpose(x[0], [int(a) for a in interp.get_tensor(ins[1])])
        if name == "CONCATENATION":
            return np.concatenate(x, axis=int(getattr(opts, "axis", 0)))
        if name == "SELECT_V2":
            return np.where(interp.get_tensor(ins[0]).astype(bool), x[1], x[2])
        if name == "RSQRT":
            return 1.0 / np.sqrt(np.maximum(x[0], 0.0))
        if name == "SQRT":
            return np.sqrt(np.maximum(x[0], 0.0))
        if name == "SOFTMAX":
            z = x[0] * float(getattr(opts, "beta", 1.0) or 1.0)
            e = np.exp(z - z.max(axis=-1, keepdims=True))
            return e / e.sum(axis=-1, keepdims=True)
        if name == "LOGISTIC":
            return 1.0 / (1.0 + np.exp(-x[0]))
        if name == "TANH":
            return np.tanh(x[0])
        if name == "GELU":
            if getattr(opts, "approximate", False):
                return 0.5 * x[0] * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x[0] + 0.044715 * x[0] ** 3)))
            return 0.5 * x[0] * (1.0 + _ERF(x[0] / math.sqrt(2.0)))
        if name in ("RELU", "RELU6"):
            return np.clip(x[0], 0.0, np.inf if name == "RELU" else 6.0)
        if name in ("EXP", "SQUARE"):
            return np.exp(x[0]) if name == "EXP" else np.square(x[0])
        if name in ("DIV", "MAXIMUM", "MINIMUM"):
            ref = {"DIV": np.divide, "MAXIMUM": np.maximum, "MINIMUM": np.minimum}[name](x[0], x[1])
            return _activation(ref, opts) if name == "DIV" else ref
        if name == "FULLY_CONNECTED":
            w = x[1]
            ref = x[0].reshape(-1, w.shape[-1]) @ w.T
            if len(ins) > 2:
                ref = ref + x[2]
            return _activation(ref.reshape(out_shape), opts)
        if name == "BATCH_MATMUL":
            a, b = x[0], x[1]
            if getattr(opts, "adjX", False):
                a = np.swapaxes(a, -1, -2)
            if getattr(opts, "adjY", False):
                b = np.swapaxes(b, -1, -2)
            return a @ b
        raise _Unsupported(name)

    def _constant(self, index: int, interp, tensors) -> np.ndarray:
        """A constant tensor (weights, biases, axes) dequantized once, not at every invocation."""
        key = (id(interp), index)
        x = self._const_values.get(key)
        if x is None:
            x = self._const_values[key] = _dequantize(interp.get_tensor(index), tensors[index])
        return x


class _Unsupported(Exception):
    pass


def _scales(t: dict) -> np.ndarray:
    return np.asarray(t.get("quantization_parameters", {}).get("scales", []), np.float64)


def _zero_points(t: dict) -> np.ndarray:
    return np.asarray(t.get("quantization_parameters", {}).get("zero_points", []), np.int64)


def _dequantize(q: np.ndarray, t: dict) -> np.ndarray:
    s = _scales(t)
    if not s.size:  # float, or a plain integer tensor (axes, ids): used as is
        return np.asarray(q).astype(np.float64)
    return dequantize(q, s, _zero_points(t), int(t["quantization_parameters"].get("quantized_dimension", 0)))


def _activation(x: np.ndarray, opts) -> np.ndarray:
    bounds = _ACTIVATIONS.get(int(getattr(opts, "fusedActivationFunction", 0) or 0))
    if bounds is None:
        if int(getattr(opts, "fusedActivationFunction", 0) or 0) not in _ACTIVATIONS:
            raise _Unsupported("fused activation")
        return x
    return np.clip(x, *bounds)
