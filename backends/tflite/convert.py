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
            input_names: list[str] | None = None, float_ops: Iterable[str] = ()) -> bytes:
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
        conv.target_spec.supported_ops = [
            tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8]
        if float_ops:
            conv.target_spec.supported_ops.append(tf.lite.OpsSet.TFLITE_BUILTINS)
        io_type = tf.int16
    conv.inference_input_type = io_type
    conv.inference_output_type = io_type
    if float_ops:
        return _convert_selective(tf, conv, float_ops)
    return conv.convert()


def _convert_selective(tf, conv, float_ops: tuple[str, ...]) -> bytes:
    """Calibrate, then quantize everything except the named op types (left float)."""
    conv._experimental_calibrate_only = True  # noqa: SLF001 - the debugger's two-step path
    calibrated = conv.convert()
    from tensorflow.lite.python import convert as tfl_convert  # inside TF; lazily imported

    return tfl_convert.mlir_quantize(
        calibrated, disable_per_channel=False, fully_quantize=True,
        input_data_type=conv.inference_input_type, output_data_type=conv.inference_output_type,
        denylisted_ops=list(float_ops), enable_whole_model_verify=False)


def describe_precision(precision: str) -> dict[str, Any]:
    return {
        "fp32": {"weights": "float32", "activations": "float32"},
        "int8": {"weights": "int8 per-channel", "activations": "int8", "bias": "int32", "io": "int8"},
        "int16x8": {"weights": "int8 per-channel", "activations": "int16", "bias": "int64", "io": "int16"},
        "dynamic": {"weights": "int8", "activations": "float32 (dynamic-range)"},
    }[precision]
