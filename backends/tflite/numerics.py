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

Checked op types: :data:`CHECKED_OPS` (arithmetic, reductions, the LUT ops, the matmuls, and the
requantizing data movement: QUANTIZE, CONCATENATION, ...); the rest (GATHER, STRIDED_SLICE, ...) are
counted as not checked. The defect thresholds are in 8-bit steps: an int16 output (16x8, mixed
graphs) is allowed 256 of its own steps. Needs the interpreter built with
``experimental_preserve_all_tensors`` and without a delegate (XNNPACK keeps no intermediate
tensors), i.e. LiteRT's built-in kernels: what it measures is those kernels.
"""
from __future__ import annotations

import math
from collections import Counter
from typing import Any

import numpy as np

from backends._imports import require
from backends.tflite.graphs import op_location

#: an op whose local error exceeds this rms (LSB) or this |mean| is flagged as a numerics defect
DEFECT_RMS_LSB = 1.0
DEFECT_BIAS_LSB = 0.75
#: how far beyond its range a saturated value is counted at most (LSB; keeps rsqrt(0) = inf finite)
MAX_EXCESS_LSB = 1e4
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


class OpNumerics:
    """Accumulates per-op statistics over invocations of one interpreter (``observe`` after each
    ``invoke``); ``summary()`` gives the serialisable result."""

    def __init__(self, model_bytes: bytes):
        self._opts = _options(model_bytes)
        self._stats: dict[int, dict[str, Any]] = {}
        self._unchecked: Counter[str] = Counter()
        self._graphs: dict[int, tuple[dict[int, dict], list[dict], set[int], dict[int, str]]] = {}
        self._consts: set[int] = set()
        self._const_values: dict[tuple[int, int], np.ndarray] = {}
        #: whether runs observed now count towards saturation (off for runs whose padding or finished
        #: rows would count values that reach no output); the local error is always counted
        self.count_saturation = True
        self.invocations = 0

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
                    self._unchecked[name] += 1
                continue
            ins = [i for i in op["inputs"] if i >= 0]
            got = _dequantize(interp.get_tensor(outs[0]), out_t)
            try:
                with np.errstate(all="ignore"):  # rsqrt(0) = inf, exp overflow: clipped below like the kernel
                    ref = self._reference(name, index, interp, tensors, ins, got.shape)
                ref = np.broadcast_to(ref, got.shape)
            except (_Unsupported, ValueError):  # an op form this check does not model (options, shapes)
                if first:
                    self._unchecked[name] += 1
                continue
            ref = np.where(np.isnan(ref), got, ref)  # an undefined float result (0 * inf) is not judged
            scale, zp = float(_scales(out_t)[0]), int(_zero_points(out_t)[0])
            dtype = np.dtype(out_t["dtype"])
            lim = np.iinfo(dtype)
            lo, hi = (lim.min - zp) * scale, (lim.max - zp) * scale
            clipped = np.clip(ref, lo, hi)
            beyond = np.minimum(np.abs(ref - clipped) / scale, MAX_EXCESS_LSB)  # inf (rsqrt(0)) counts as the cap
            saturated = beyond > 0.5
            err = (got - clipped) / scale
            st = self._stats.get(index)
            if st is None:
                st = self._stats[index] = {"op": name, "tensor": out_t["name"], "bits": 8 * dtype.itemsize,
                                           "where": outputs.get(outs[0]) or op_location(out_t["name"]),
                                           "n": 0, "sum": 0.0, "sum2": 0.0,
                                           "max": 0.0, "sat_n": 0, "saturated": 0, "excess": 0.0}
            st["n"] += err.size
            st["sum"] += float(err.sum())
            st["sum2"] += float(np.square(err).sum())
            st["max"] = max(st["max"], float(np.abs(err).max()) if err.size else 0.0)
            if self.count_saturation:
                st["sat_n"] += err.size
                st["saturated"] += int(saturated.sum())
                st["excess"] += float(beyond[saturated].sum())

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

    # ---- result ------------------------------------------------------------------------
    def summary(self, worst: int = 5) -> dict[str, Any]:
        rows = []
        for index, st in sorted(self._stats.items()):
            n = max(st["n"], 1)
            rows.append({"index": index, "op": st["op"], "tensor": st["tensor"],
                         "where": st["where"], "bits": st["bits"],
                         "rms_lsb": round((st["sum2"] / n) ** 0.5, 4), "bias_lsb": round(st["sum"] / n, 4),
                         "max_lsb": round(st["max"], 3), "saturated": round(st["saturated"] / max(st["sat_n"], 1), 6),
                         "saturated_by_lsb": round(st["excess"] / st["saturated"], 2) if st["saturated"] else 0.0})
        defects = [r for r in rows if is_defect(r)]
        rms = np.array([r["rms_lsb"] for r in rows]) if rows else np.zeros(0)
        return {
            "invocations": self.invocations,
            "ops_checked": len(rows),
            "ops_not_checked": dict(sorted(self._unchecked.items())),
            "rms_lsb_median": round(float(np.median(rms)), 4) if rows else None,
            "rms_lsb_max": round(float(rms.max()), 4) if rows else None,
            "defects": defects,
            "worst_error": sorted(rows, key=lambda r: -r["rms_lsb"])[:worst],
            "most_saturated": [r for r in sorted(rows, key=lambda r: -r["saturated"]) if r["saturated"] > 0][:worst],
            "thresholds": {"rms_lsb": DEFECT_RMS_LSB, "bias_lsb": DEFECT_BIAS_LSB, "per": "8-bit step"},
        }


def is_defect(row: dict[str, Any]) -> bool:
    """An op's local error beyond the thresholds, which are in 8-bit steps: for a wider output (int16)
    they scale by ``2**(bits-8)``, so an int16 kernel is held to the precision of an int8 grid."""
    widen = 2.0 ** (int(row.get("bits", 8)) - 8)
    return row["rms_lsb"] > DEFECT_RMS_LSB * widen or abs(row["bias_lsb"]) > DEFECT_BIAS_LSB * widen


class _Unsupported(Exception):
    pass


def _scales(t: dict) -> np.ndarray:
    return np.asarray(t.get("quantization_parameters", {}).get("scales", []), np.float64)


def _zero_points(t: dict) -> np.ndarray:
    return np.asarray(t.get("quantization_parameters", {}).get("zero_points", []), np.int64)


def _dequantize(q: np.ndarray, t: dict) -> np.ndarray:
    s, z = _scales(t), _zero_points(t)
    x = np.asarray(q)
    if not s.size:  # float, or a plain integer tensor (axes, ids): used as is
        return x.astype(np.float64)
    if s.size == 1:
        return (x.astype(np.float64) - z[0]) * s[0]
    axis = int(t["quantization_parameters"].get("quantized_dimension", 0))
    shape = [1] * x.ndim
    shape[axis] = -1
    return (x.astype(np.float64) - z.reshape(shape)) * s.reshape(shape)


def _activation(x: np.ndarray, opts) -> np.ndarray:
    bounds = _ACTIVATIONS.get(int(getattr(opts, "fusedActivationFunction", 0) or 0))
    if bounds is None:
        if int(getattr(opts, "fusedActivationFunction", 0) or 0) not in _ACTIVATIONS:
            raise _Unsupported("fused activation")
        return x
    return np.clip(x, *bounds)
