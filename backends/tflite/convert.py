"""TF concrete function -> .tflite bytes, for every precision the backends offer.

* ``fp32``: plain conversion (builtins only).
* ``int8``: strict full integer with ``TFLiteConverter`` (per-channel int8 weights, int8
  activations, int32 biases, int8 I/O so the host owns every (re)quantization).
* ``int16x8``: int16 activations / int8 weights (``EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8``).
* ``dynamic``: dynamic-range (int8 weights, float activations).

Representative samples are dicts keyed by input name (a list would be matched to inputs
alphabetically — the pitfall that once swapped ``input_ids`` and ``attention_mask``).
Selective float (the quantization debugger's path; both break strict INT8 on purpose):
``float_ops`` names TFLite op types left in float (``denylisted_ops``), ``float_regions`` names
regions of the network (:data:`backends.tflite.graphs.REGIONS`: layer norm, attention softmax,
self-/cross-attention, FFN, LM head) whose ops stay float (``denylisted_nodes``: the output tensor
names of every op built under that region's name scope).
"""
from __future__ import annotations

import re
from typing import Any, Callable, Iterable

import numpy as np

from backends._imports import require
from backends.errors import ArtifactError, InvalidInputError

PRECISIONS = ("fp32", "int8", "int16x8", "dynamic")
CALIBRATION_METHODS = ("minmax", "percentile", "mse")


def _converter(concrete_fn):
    tf = require("tensorflow", "TFLite conversion")
    conv = tf.lite.TFLiteConverter.from_concrete_functions([concrete_fn], tf.Module())
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    return tf, conv


def cast_sample(sample: dict[str, np.ndarray], names: list[str]) -> dict[str, np.ndarray]:
    """One calibration sample as the model's input dtypes (int32 ids/masks/positions, float32 states)."""
    if set(sample) != set(names):
        raise ArtifactError(f"calibration sample keys {sorted(sample)} != model inputs {sorted(names)}")
    out = {}
    for k, v in sample.items():
        v = np.asarray(v)
        out[k] = (np.ascontiguousarray(v, np.int32) if np.issubdtype(v.dtype, np.integer) or v.dtype == bool
                  else np.ascontiguousarray(v, np.float32))
    return out


def invoke_sample(interp, index: dict[str, int], sample: dict[str, np.ndarray]) -> None:
    """Resize ``interp``'s inputs (``index``: input name -> tensor index) to ``sample`` and run it once
    (intermediate tensors are then readable when the interpreter preserves them)."""
    for n, arr in sample.items():
        interp.resize_tensor_input(index[n], list(arr.shape))
    interp.allocate_tensors()
    for n, arr in sample.items():
        interp.set_tensor(index[n], arr)
    interp.invoke()


def convert(concrete_fn, precision: str, samples: Callable[[], Iterable[dict[str, np.ndarray]]] | None = None,
            input_names: list[str] | None = None, float_ops: Iterable[str] = (), method: str = "minmax",
            percentile: float = 99.99, keep_ranges: Iterable[str] = (), valid_rows: bool = False,
            symmetric_matmul_rhs: bool = False, symmetric_outputs: Iterable[str] = (),
            float_regions: Iterable[str] = (), region_report: dict[str, int] | None = None) -> bytes:
    """``method="percentile"`` re-ranges every activation to the [100-p, p] percentiles of its
    calibration values, ``method="mse"`` to the range that minimizes the int8 quantization error of
    those values (ranges only shrink; tensors named in ``keep_ranges`` keep min-max). With
    ``valid_rows`` (the encoder) these statistics, and the min-max they start from, skip padding
    positions (rows whose ``attention_mask`` is 0: their values never reach the output).
    ``symmetric_matmul_rhs`` (int8): widen the range of every BATCH_MATMUL right-hand operand to
    zero point 0 (see :func:`_symmetric_matmul_rhs`) so XNNPACK runs those matmuls; the signature
    outputs named in ``symmetric_outputs`` get the same treatment (a matmul operand in the next graph).
    ``float_regions`` (int8): ops of those regions stay float; ``region_report``, if given, receives
    the number of ops found in each region (0: the region does not occur in this graph)."""
    if precision not in PRECISIONS:
        raise InvalidInputError(f"precision '{precision}' unknown; choose one of {PRECISIONS}")
    tf, conv = _converter(concrete_fn)
    if precision == "fp32":
        return conv.convert()
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    if precision == "dynamic":
        return conv.convert()
    if samples is None or input_names is None:
        raise InvalidInputError(f"{precision} conversion needs calibration samples")
    def representative():
        count = 0
        for s in samples():
            count += 1
            yield cast_sample(s, input_names)
        if not count:
            raise InvalidInputError(f"{precision} conversion got an empty calibration set")

    conv.representative_dataset = representative
    float_ops, float_regions = tuple(float_ops), tuple(float_regions)
    if precision == "int8":
        conv.target_spec.supported_ops = ([tf.lite.OpsSet.TFLITE_BUILTINS_INT8] if not (float_ops or float_regions) else
                                          [tf.lite.OpsSet.TFLITE_BUILTINS_INT8, tf.lite.OpsSet.TFLITE_BUILTINS])
        io_type = tf.int8
    else:
        # 16x8 has no SELECT_V2/CAST kernels: those few ops fall back to float (not strict anyway)
        conv.target_spec.supported_ops = [
            tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8,
            tf.lite.OpsSet.TFLITE_BUILTINS]
        io_type = tf.int16
    conv.inference_input_type = io_type
    conv.inference_output_type = io_type
    if method not in CALIBRATION_METHODS:
        raise InvalidInputError(f"calibration method '{method}' unknown; choose one of {CALIBRATION_METHODS}")
    if not (float_ops or float_regions) and method == "minmax" and not valid_rows and not symmetric_matmul_rhs:
        return conv.convert()
    if precision != "int8":
        raise InvalidInputError("selective float and percentile/mse ranges are implemented for int8 only")
    # two-step path (as the quantization debugger does): calibrate, adjust, quantize
    conv._experimental_calibrate_only = True  # noqa: SLF001
    calibrated = conv.convert()
    if method != "minmax" or valid_rows:
        calibrated = _adjusted_ranges(calibrated, (cast_sample(s, input_names) for s in samples()),
                                      method, percentile, set(keep_ranges), valid_rows)
    if symmetric_matmul_rhs:  # after the range adjustment: widening to zero point 0 must be last
        calibrated = _symmetric_matmul_rhs(calibrated, set(symmetric_outputs))
    nodes = region_nodes(calibrated, float_regions)
    if region_report is not None:
        region_report.update({r: len(n) for r, n in nodes.items()})
    from tensorflow.lite.python import convert as tfl_convert  # inside TF; lazily imported

    return tfl_convert.mlir_quantize(
        calibrated, disable_per_channel=False, fully_quantize=True,
        input_data_type=conv.inference_input_type, output_data_type=conv.inference_output_type,
        denylisted_ops=list(float_ops) or None,
        denylisted_nodes=sorted({n for names in nodes.values() for n in names}) or None,
        enable_whole_model_verify=False)


def region_nodes(model_bytes: bytes, regions: Iterable[str]) -> dict[str, list[str]]:
    """For each region, the output tensor names of the ops built under its name scope (a converted
    tensor's name lists the TF ops fused into it, ``;``-separated; one of them in the scope counts)."""
    from backends.tflite.graphs import REGION_OUTPUTS, REGION_SCOPE, check_regions

    regions = check_regions(tuple(regions), "selective float")
    if not regions:
        return {}
    from tensorflow.lite.tools import flatbuffer_utils as fbu  # inside TF; lazily imported

    model = fbu.convert_bytearray_to_object(bytearray(model_bytes))
    graph = model.subgraphs[0]
    produced = [graph.tensors[int(t)].name.decode() for op in graph.operators or [] for t in op.outputs]
    outputs = {t.name.decode(): graph.tensors[int(t.tensorIndex)].name.decode()
               for sig in model.signatureDefs or [] for t in sig.outputs or []}
    out = {}
    for r in regions:
        scope = re.compile(rf"(^|/){re.escape(REGION_SCOPE + r)}(_\d+)?/")
        names = {n for n in produced if any(scope.search(part) for part in n.split(";"))}
        names |= {outputs[o] for o in REGION_OUTPUTS.get(r, ()) if o in outputs}
        out[r] = sorted(names)
    return out


def _valid_part(a: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    """The non-padding rows of an encoder tensor ([B*S, ...], [B, S, ...] or [B, H, S, ...])."""
    if mask is None:
        return a
    b, s = mask.shape
    if a.ndim >= 1 and a.shape[0] == b * s:
        return a[mask.reshape(-1)]
    if a.ndim >= 2 and a.shape[:2] == (b, s):
        return a[mask]
    if a.ndim == 4 and a.shape[0] == b and a.shape[2] == s:
        return np.swapaxes(a, 1, 2)[mask]
    return a


def _int8_mse(v: np.ndarray, lo: float, hi: float) -> float:
    scale = (hi - lo) / 255.0
    if scale <= 0:
        return float(np.mean(v ** 2))
    zero = np.round(-lo / scale)
    q = np.clip(np.round(v / scale) + zero, 0, 255)
    return float(np.mean(((q - zero) * scale - v) ** 2))


def mse_range(v: np.ndarray, lo: float, hi: float, steps: int = 81) -> tuple[float, float]:
    """The sub-range of [lo, hi] (both ends shrunk by factors in [0.2, 1]) with the least int8
    quantization error on the values ``v``: a common shrink, then each end alone."""
    grid = np.linspace(0.2, 1.0, steps)
    best = (_int8_mse(v, lo, hi), lo, hi)
    for mode in ("both", "lo", "hi"):
        _, l0, h0 = best
        for a in grid:
            cand = {"both": (l0 * a, h0 * a), "lo": (l0 * a, h0), "hi": (l0, h0 * a)}[mode]
            e = _int8_mse(v, *cand)
            if e < best[0]:
                best = (e, *cand)
    return best[1], best[2]


#: version of the percentile/mse range pass (part of the cache key of the builds that use it).
#: 2: each tensor's subsample drawn independently of the converter's tensor order
#: 3: the pass sees the same decoder samples as the min-max calibration (CalibrationRecorder reseeds per call)
RANGE_PASS_FORMAT = 3
#: values kept per tensor for the percentile/mse search (spread over the calibration samples)
RANGE_SAMPLE_CAP = 262144


def _adjusted_ranges(calibrated: bytes, samples: Iterable[dict[str, np.ndarray]], method: str, pct: float,
                     keep: set[str], valid_rows: bool = False) -> bytes:
    """Re-range each activation from its values on the calibration samples (percentile or mse; with
    ``valid_rows`` over non-padding rows only). Ranges only shrink; graph inputs/outputs keep theirs."""
    litert = require("ai_edge_litert.interpreter", "range calibration")
    from tensorflow.lite.tools import flatbuffer_utils as fbu  # inside TF; lazily imported

    samples = list(samples)
    model = fbu.convert_bytearray_to_object(bytearray(calibrated))
    graph = model.subgraphs[0]
    ranged = {i for i, t in enumerate(graph.tensors)
              if t.quantization is not None and t.quantization.min is not None and len(t.quantization.min) == 1
              and t.name.decode() not in keep}
    interp = litert.Interpreter(model_content=bytes(calibrated), experimental_preserve_all_tensors=True)
    runner = interp.get_signature_runner()
    index = {n: d["index"] for n, d in runner.get_input_details().items()}
    outputs = {d["index"] for d in runner.get_output_details().values()}
    del runner  # a live signature runner blocks resize_tensor_input
    ranged -= outputs | set(index.values())  # never clip graph inputs/outputs (logits decide argmax)
    per_sample = max(256, RANGE_SAMPLE_CAP // max(1, len(samples)))  # spread over all samples
    values: dict[int, list[np.ndarray]] = {i: [] for i in ranged}
    extent: dict[int, tuple[float, float]] = {}
    for k, s in enumerate(samples):
        invoke_sample(interp, index, s)
        mask = s["attention_mask"].astype(bool) if valid_rows and "attention_mask" in s else None
        for i in ranged:
            a = interp.get_tensor(i)
            if a.dtype != np.float32:
                continue
            flat = np.array(_valid_part(a, mask), copy=True).reshape(-1)
            if not flat.size:
                continue
            lo, hi = extent.get(i, (np.inf, -np.inf))
            extent[i] = (min(lo, float(flat.min())), max(hi, float(flat.max())))
            if flat.size > per_sample:  # drawn from (sample, size) alone: the ranges do not depend on the
                # order or the names of the converter's tensors (op names reorder them)
                flat = np.random.default_rng((k, flat.size)).choice(flat, per_sample, replace=False)
            values[i].append(flat)
    for i in ranged:
        if not values[i]:
            continue
        q = graph.tensors[i].quantization
        lo, hi = max(extent[i][0], q.min[0]), min(extent[i][1], q.max[0])
        lo, hi = min(lo, 0.0), max(hi, 0.0)
        v = np.concatenate(values[i])
        if method == "percentile":
            plo, phi = np.percentile(v, [100.0 - pct, pct])
            lo, hi = max(plo, lo), min(phi, hi)
        elif method == "mse":
            lo, hi = mse_range(v, lo, hi)
        q.min = [float(min(lo, 0.0))]
        q.max = [float(max(hi, 0.0))]
    return bytes(fbu.convert_object_to_bytearray(model))


#: ops whose int8 output shares its input's quantization (the quantizer propagates it through them)
_SAME_SCALE_OPS = ("RESHAPE", "TRANSPOSE", "CONCATENATION")


def _builtin_names() -> dict[int, str]:
    from tensorflow.lite.python import schema_py_generated as schema  # inside TF; lazily imported

    return {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}


def matmul_rhs_groups(model, outputs: Iterable[str] = ()) -> list[list[int]]:
    """Tensor groups that must share one quantization with a BATCH_MATMUL's right-hand operand
    (or with a signature output named in ``outputs``): the tensor and, up through
    RESHAPE/TRANSPOSE/CONCATENATION producers, the tensors it is copied from
    (``model``: a flatbuffer object model; indices into subgraph 0's tensors)."""
    names = _builtin_names()
    graph = model.subgraphs[0]
    wanted = set(outputs)
    roots = [int(t.tensorIndex) for sig in model.signatureDefs or [] for t in sig.outputs or []
             if t.name.decode() in wanted]
    if len(roots) != len(wanted):
        raise ArtifactError(f"symmetric outputs {sorted(wanted)}: not all are signature outputs of the model")

    def op_name(op) -> str:
        code = model.operatorCodes[op.opcodeIndex]
        return names.get(max(code.builtinCode, code.deprecatedBuiltinCode), "?")

    producer = {int(t): op for op in graph.operators for t in op.outputs}
    groups: list[list[int]] = []
    roots += [int(op.inputs[1]) for op in graph.operators or [] if op_name(op) == "BATCH_MATMUL"]
    for root in roots:
        group, todo = [], [root]
        while todo:
            t = todo.pop()
            if t < 0 or t in group:
                continue
            group.append(t)
            p = producer.get(t)
            if p is not None and op_name(p) in _SAME_SCALE_OPS:
                todo.extend(int(i) for i in (p.inputs if op_name(p) == "CONCATENATION" else p.inputs[:1]))
        for other in [g for g in groups if set(g) & set(group)]:  # shared tensors: one range
            groups.remove(other)
            group += [t for t in other if t not in group]
        groups.append(group)
    return groups


def _symmetric_matmul_rhs(calibrated: bytes, outputs: set[str] = frozenset()) -> bytes:
    """Give every BATCH_MATMUL right-hand operand (and the tensors it is reshaped, transposed or
    concatenated from) one calibrated range ``[-128/127 m, m]``, ``m`` = the group's largest
    magnitude, so it quantizes with zero point 0. XNNPACK takes an int8 BATCH_MATMUL only with a
    zero-point-0 right-hand side; otherwise the builtin reference kernel runs it, ~8x slower
    (~200 us vs ~25 us for one [4, 64, 64] attention matmul on 2 AVX2 cores). Ranges only widen
    (by at most the asymmetry of the calibrated one), so nothing is clipped."""
    from tensorflow.lite.tools import flatbuffer_utils as fbu  # inside TF; lazily imported

    model = fbu.convert_bytearray_to_object(bytearray(calibrated))
    graph = model.subgraphs[0]
    for group in matmul_rhs_groups(model, outputs):
        qs = [graph.tensors[t].quantization for t in group]
        if any(q is None or q.min is None or len(q.min) != 1 for q in qs):
            continue  # constants or unranged tensors: left to the quantizer
        m = max(max(abs(float(q.min[0])), abs(float(q.max[0]))) for q in qs)
        if m <= 0.0:
            continue
        for q in qs:
            q.min, q.max = [-m * 128.0 / 127.0], [m]
    return bytes(fbu.convert_object_to_bytearray(model))


def describe_precision(precision: str) -> dict[str, Any]:
    return {
        "fp32": {"weights": "float32", "activations": "float32"},
        "int8": {"weights": "int8 per-channel", "activations": "int8", "bias": "int32", "io": "int8"},
        "int16x8": {"weights": "int8 per-channel", "activations": "int16", "bias": "int64", "io": "int16"},
        "dynamic": {"weights": "int8", "activations": "float32 (dynamic-range)"},
    }[precision]
