"""TF concrete function -> .tflite bytes, for every precision the backends offer.

* ``fp32``: plain conversion (builtins only).
* ``int8``: strict full integer with ``TFLiteConverter`` (per-channel int8 weights, int8
  activations, int32 biases, int8 I/O so the host owns every (re)quantization).
* ``int16x8``: int16 activations / int8 weights (``EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8``).
* ``dynamic``: dynamic-range (int8 weights, float activations).

Representative samples are dicts keyed by input name (a list would be matched to inputs
alphabetically — the pitfall that once swapped ``input_ids`` and ``attention_mask``).
``float_ops`` (selective float) names TFLite op types left in float
(``denylisted_ops`` of the quantization debugger path), which breaks strict INT8 on purpose.
"""
from __future__ import annotations

from typing import Any, Callable, Iterable

import numpy as np

from backends._imports import require
from backends.errors import ArtifactError, InvalidInputError

PRECISIONS = ("fp32", "int8", "int16x8", "dynamic")
CALIBRATION_METHODS = ("minmax", "percentile")


def _converter(concrete_fn):
    tf = require("tensorflow", "TFLite conversion")
    conv = tf.lite.TFLiteConverter.from_concrete_functions([concrete_fn], tf.Module())
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    return tf, conv


def _cast_sample(sample: dict[str, np.ndarray], names: list[str]) -> dict[str, np.ndarray]:
    if set(sample) != set(names):
        raise ArtifactError(f"calibration sample keys {sorted(sample)} != model inputs {sorted(names)}")
    out = {}
    for k, v in sample.items():
        v = np.asarray(v)
        out[k] = v.astype(np.int32) if np.issubdtype(v.dtype, np.integer) else v.astype(np.float32)
    return out


def convert(concrete_fn, precision: str, samples: Callable[[], Iterable[dict[str, np.ndarray]]] | None = None,
            input_names: list[str] | None = None, float_ops: Iterable[str] = (), method: str = "minmax",
            percentile: float = 99.99, keep_ranges: Iterable[str] = (), symmetric_matmul_rhs: bool = False,
            symmetric_outputs: Iterable[str] = ()) -> bytes:
    """``method="percentile"`` re-ranges every activation to the [100-p, p] percentiles of its
    calibration values (ranges only shrink; tensors named in ``keep_ranges`` keep min-max).
    ``symmetric_matmul_rhs`` (int8): widen the range of every BATCH_MATMUL right-hand operand to
    zero point 0 (see :func:`_symmetric_matmul_rhs`) so XNNPACK runs those matmuls; the signature
    outputs named in ``symmetric_outputs`` get the same treatment (a matmul operand in the next graph)."""
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
            yield _cast_sample(s, input_names)
        if not count:
            raise InvalidInputError(f"{precision} conversion got an empty calibration set")

    conv.representative_dataset = representative
    float_ops = tuple(float_ops)
    if precision == "int8":
        conv.target_spec.supported_ops = ([tf.lite.OpsSet.TFLITE_BUILTINS_INT8] if not float_ops else
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
    if not float_ops and method == "minmax" and not symmetric_matmul_rhs:
        return conv.convert()
    if precision != "int8":
        raise InvalidInputError("selective float ops and percentile ranges are implemented for int8 only")
    # two-step path (as the quantization debugger does): calibrate, adjust, quantize
    conv._experimental_calibrate_only = True  # noqa: SLF001
    calibrated = conv.convert()
    if method == "percentile":
        calibrated = _percentile_ranges(calibrated, [_cast_sample(s, input_names) for s in samples()],
                                        percentile, set(keep_ranges))
    if symmetric_matmul_rhs:
        calibrated = _symmetric_matmul_rhs(calibrated, set(symmetric_outputs))
    from tensorflow.lite.python import convert as tfl_convert  # inside TF; lazily imported

    return tfl_convert.mlir_quantize(
        calibrated, disable_per_channel=False, fully_quantize=True,
        input_data_type=conv.inference_input_type, output_data_type=conv.inference_output_type,
        denylisted_ops=list(float_ops) or None, enable_whole_model_verify=False)


def _percentile_ranges(calibrated: bytes, samples: list[dict[str, np.ndarray]], pct: float,
                       keep: set[str], per_sample: int = 4096, cap: int = 65536) -> bytes:
    """Shrink each activation's calibrated [min, max] to its value percentiles."""
    litert = require("ai_edge_litert.interpreter", "percentile calibration")
    from tensorflow.lite.tools import flatbuffer_utils as fbu  # inside TF; lazily imported

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
    rng = np.random.default_rng(0)
    values: dict[int, list[np.ndarray]] = {i: [] for i in ranged}
    for s in samples:
        for n, arr in s.items():
            interp.resize_tensor_input(index[n], list(arr.shape))
        interp.allocate_tensors()
        for n, arr in s.items():
            interp.set_tensor(index[n], arr)
        interp.invoke()
        for i in ranged:
            if sum(len(v) for v in values[i]) >= cap:
                continue
            flat = np.array(interp.get_tensor(i), copy=True).reshape(-1)
            if flat.dtype != np.float32 or not flat.size:
                continue
            values[i].append(flat if flat.size <= per_sample else rng.choice(flat, per_sample, replace=False))
    for i in ranged:
        if not values[i]:
            continue
        v = np.concatenate(values[i])
        lo, hi = np.percentile(v, [100.0 - pct, pct])
        q = graph.tensors[i].quantization
        q.min = [float(min(max(lo, q.min[0]), 0.0))]
        q.max = [float(max(min(hi, q.max[0]), 0.0))]
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
