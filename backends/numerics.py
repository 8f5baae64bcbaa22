"""Per-op numerics bookkeeping shared by the runtimes (TFLite: ``backends/tflite/numerics.py``; ONNX
Runtime: ``backends/onnxrt/numerics.py``).

A runtime's observer finds, for each quantized op, the op's own integer output (dequantized) and the
same op computed in float64 on its dequantized inputs (the *reference*), and hands both to
:meth:`OpErrorStats.record`. What is kept per op:

* the **local error** ``got - clip(reference)`` in units of the output scale (LSB): rms, mean (bias)
  and max. Rounding alone gives ``1/sqrt(12) = 0.29`` LSB rms and never more than 0.5; an op beyond
  :data:`DEFECT_RMS_LSB` rms or :data:`DEFECT_BIAS_LSB` mean is a *numerics defect* (a kernel or a
  quantization parameter computing something else than the float op);
* **saturation**: the share of reference values outside the output's representable range and how far
  beyond on average (``saturated_by_lsb``), counted only while ``count_saturation`` is on (the caller
  turns it off for runs whose padding rows or finished rows reach no output).

The defect thresholds are in 8-bit steps: a wider output (int16) is allowed ``2**(bits-8)`` of its
own steps.
"""
from __future__ import annotations

from collections import Counter
from typing import Any, Callable, Hashable

import numpy as np

#: an op whose local error exceeds this rms (LSB) or this |mean| is flagged as a numerics defect
DEFECT_RMS_LSB = 1.0
DEFECT_BIAS_LSB = 0.75
#: how far beyond its range a saturated value is counted at most (LSB; keeps rsqrt(0) = inf finite)
MAX_EXCESS_LSB = 1e4


def dequantize(q: np.ndarray, scale, zero_point, axis: int = -1) -> np.ndarray:
    """``(q - zero_point) * scale`` in float64: per tensor (one scale), or per channel along ``axis``."""
    s, z = np.asarray(scale, np.float64).reshape(-1), np.asarray(zero_point, np.int64).reshape(-1)
    x = np.asarray(q).astype(np.float64)
    if s.size == 1:
        return (x - z[0]) * s[0]
    shape = [1] * x.ndim
    shape[axis] = -1
    return (x - z.reshape(shape)) * s.reshape(shape)


def is_defect(row: dict[str, Any]) -> bool:
    """An op's local error beyond the thresholds, which are in 8-bit steps: for a wider output (int16)
    they scale by ``2**(bits-8)``, so an int16 kernel is held to the precision of an int8 grid."""
    widen = 2.0 ** (int(row.get("bits", 8)) - 8)
    return row["rms_lsb"] > DEFECT_RMS_LSB * widen or abs(row["bias_lsb"]) > DEFECT_BIAS_LSB * widen


class OpErrorStats:
    """Per-op accumulators over many runs of one graph; ``summary()`` gives the serialisable result."""

    def __init__(self) -> None:
        self._stats: dict[Hashable, dict[str, Any]] = {}
        self._unchecked: Counter[str] = Counter()
        #: whether runs observed now count towards saturation (off for runs whose padding or finished
        #: rows would count values that reach no output); the local error is always counted
        self.count_saturation = True
        self.invocations = 0

    def not_checked(self, op_type: str) -> None:
        """Count one op of a type (or form) the check does not model; call once per op, not per run."""
        self._unchecked[op_type] += 1

    def record(self, key: Hashable, meta: dict[str, Any], got: np.ndarray, ref: np.ndarray, scale: float,
               zero_point: int, qmin: int, qmax: int) -> None:
        """One run of op ``key``: ``got`` its dequantized output, ``ref`` the float op on its dequantized
        inputs (NaN: not judged), the output's per-tensor ``scale``/``zero_point`` and integer range.
        ``meta`` (``op``, ``tensor``, ``where``, ``bits``) is kept from the op's first record."""
        ref = np.where(np.isnan(ref), got, ref)  # an undefined float result (0 * inf) is not judged
        lo, hi = (qmin - zero_point) * scale, (qmax - zero_point) * scale
        clipped = np.clip(ref, lo, hi)
        beyond = np.minimum(np.abs(ref - clipped) / scale, MAX_EXCESS_LSB)  # inf (rsqrt(0)) counts as the cap
        saturated = beyond > 0.5
        err = (got - clipped) / scale
        st = self._stats.get(key)
        if st is None:
            st = self._stats[key] = {**meta, "n": 0, "sum": 0.0, "sum2": 0.0, "max": 0.0, "sat_n": 0,
                                     "saturated": 0, "excess": 0.0}
        st["n"] += err.size
        st["sum"] += float(err.sum())
        st["sum2"] += float(np.square(err).sum())
        st["max"] = max(st["max"], float(np.abs(err).max()) if err.size else 0.0)
        if self.count_saturation:
            st["sat_n"] += err.size
            st["saturated"] += int(saturated.sum())
            st["excess"] += float(beyond[saturated].sum())

    def summary(self, worst: int = 5) -> dict[str, Any]:
        rows = []
        keys = list(self._stats)  # first-seen order; op indices (TFLite) in index order
        if all(isinstance(k, int) for k in keys):
            keys.sort()
        for key in keys:
            st = self._stats[key]
            n = max(st["n"], 1)
            rows.append({"index": key, "op": st["op"], "tensor": st["tensor"], "where": st["where"],
                         "bits": st["bits"],
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


def translate_for_numerics(backend, stats: dict[str, OpErrorStats], input_ids: np.ndarray,
                           attention_mask: np.ndarray, max_new_tokens: int,
                           before_alone: Callable[[], None] | None = None) -> None:
    """Greedy translation through ``backend.generate_impl`` while its observed graphs feed ``stats``:
    first the batch as deployed (padded rows: the mask paths run; a finished row leaves the batch, as the
    shared loop does; errors only), then each sentence alone at its own length, where every row is live
    (no padding row), so saturation counts only values that reach an output. ``before_alone`` runs between
    the two (e.g. a backend's switch to exact-width encoder runs)."""
    for st in stats.values():
        st.count_saturation = False
    backend.generate_impl(input_ids, attention_mask, max_new_tokens, 1)
    for st in stats.values():
        st.count_saturation = True
    if before_alone is not None:
        before_alone()
    for ids, keep in zip(input_ids, np.asarray(attention_mask).astype(bool)):
        row = ids[keep][None, :]
        backend.generate_impl(row, np.ones_like(row), max_new_tokens, 1)
