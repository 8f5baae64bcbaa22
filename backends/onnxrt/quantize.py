"""INT8 quantization of the exported components.

* dynamic: optimum's ``ORTQuantizer`` with ``AutoQuantizationConfig.<preset>(is_static=False,
  per_channel=True)`` on every component -- what ``optimum-cli onnxruntime quantize --avx2
  --per_channel`` does; the preset is detected from the CPU (:mod:`backends.onnxrt.cpu`).
* static: ``onnxruntime.quantization.quantize_static`` in QDQ format, one component at a time,
  fed by recorded calibration inputs (:mod:`backends.onnxrt.calibration`), after ORT's
  ``quant_pre_process`` (shape inference + basic graph optimization), as ORT's docs recommend.
"""
from __future__ import annotations

import contextlib
import logging
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any

from backends._imports import require, version_of as version
from backends.errors import ArtifactError, InvalidInputError
from backends.onnxrt.cpu import resolve_preset, static_defaults
from backends.onnxrt.export import COMPONENTS

CALIBRATION_METHODS = {"minmax": "MinMax", "entropy": "Entropy", "percentile": "Percentile"}
QUANT_TYPES = ("QInt8", "QUInt8")
#: static default: weight MatMuls + embedding Gathers. ORT's full QDQ list also quantizes
#: LayerNormalization (blocks the SkipLayerNormalization fusion), Transpose/Reshape/Where/...
#: (Q/DQ pairs with no integer kernel): measured slower than FP32 with no accuracy gain.
STATIC_OP_TYPES = ("MatMul", "Gather")


def _dynamic_config(backend):
    cfgmod = require("optimum.onnxruntime.configuration", "dynamic quantization")
    preset, _ = resolve_preset(backend.options["preset"])
    kwargs: dict[str, Any] = {"is_static": False, "per_channel": bool(backend.options["per_channel"])}
    if backend.options["reduce_range"] is not None:
        if preset not in ("avx2", "avx512"):
            raise InvalidInputError(f"{backend.name}: the {preset} preset fixes reduce_range=False; "
                                    f"leave reduce_range unset")
        kwargs["reduce_range"] = bool(backend.options["reduce_range"])
    return getattr(cfgmod.AutoQuantizationConfig, preset)(**kwargs)


def _static_params(backend) -> dict[str, Any]:
    o = backend.options
    preset, reason = resolve_preset(o["preset"])
    d = static_defaults(preset)
    method = str(o["calibration_method"]).lower()
    if method not in CALIBRATION_METHODS:
        raise InvalidInputError(f"{backend.name}: calibration_method must be one of "
                                f"{list(CALIBRATION_METHODS)}, got {o['calibration_method']!r}")
    act = o["activation_type"] or d["activation_type"]
    wt = o["weight_type"] or d["weight_type"]
    for what, v in (("activation_type", act), ("weight_type", wt)):
        if v not in QUANT_TYPES:
            raise InvalidInputError(f"{backend.name}: {what} must be one of {list(QUANT_TYPES)}, got {v!r}")
    registry = require("onnxruntime.quantization.registry", "static quantization")
    ops = list(o["op_types"]) if o["op_types"] else list(STATIC_OP_TYPES)
    unknown = sorted(set(ops) - set(registry.QDQRegistry))
    if unknown:
        raise InvalidInputError(f"{backend.name}: op_types {unknown} cannot be QDQ-quantized by onnxruntime "
                                f"{version('onnxruntime')}; quantizable: {sorted(registry.QDQRegistry)}")
    exclude = sorted(set(o["exclude_op_types"] or ()))
    ops = [op for op in ops if op not in exclude]
    return {"preset": preset, "preset_reason": reason, "format": "QDQ", "activation_type": act, "weight_type": wt,
            "reduce_range": d["reduce_range"] if o["reduce_range"] is None else bool(o["reduce_range"]),
            "reduce_range_reason": d["reason"] if o["reduce_range"] is None else "set explicitly",
            "per_channel": bool(o["per_channel"]), "weights_symmetric": True, "activations_symmetric": False,
            "calibration_method": CALIBRATION_METHODS[method],
            "calibration_percentile": float(o["calibration_percentile"]) if method == "percentile" else None,
            "calibration_size": int(o["calibration_size"]), "calibration_batch_size": int(o["calibration_batch_size"]),
            "op_types": ops, "excluded_op_types": exclude, "preprocess": bool(o["preprocess"]),
            "quantize_activation_matmuls": bool(o["quantize_activation_matmuls"]),
            "components": list(COMPONENTS)}


def static_settings(backend) -> dict[str, Any]:
    """Signature entry of a static backend (resolved CPU-dependent defaults included)."""
    return {"mode": "static", **_static_params(backend)}


def dynamic_settings(backend) -> dict[str, Any]:
    """Signature entry of a dynamic backend: optimum's preset config, resolved."""
    c = _dynamic_config(backend)
    preset, reason = resolve_preset(backend.options["preset"])
    return {"mode": "dynamic", "preset": preset, "preset_reason": reason, "format": c.format.name,
            "activation_type": c.activations_dtype.name, "weight_type": c.weights_dtype.name,
            "weights_symmetric": c.weights_symmetric, "activations_symmetric": c.activations_symmetric,
            "per_channel": c.per_channel, "reduce_range": c.reduce_range,
            "op_types": sorted(getattr(op, "value", op) for op in c.operators_to_quantize),
            "components": list(COMPONENTS), "tool": "optimum.onnxruntime.ORTQuantizer"}


#: resolved settings that enter the cache key (a CPU with another preset builds other artifacts)
CACHE_KEY_FIELDS = ("preset", "activation_type", "weight_type", "reduce_range", "per_channel", "op_types")


@contextlib.contextmanager
def _quiet(logger_name: str):
    """Silence a library logger (ORTQuantizer warns that our staging dir has no config.json)."""
    log = logging.getLogger(logger_name)
    old = log.level
    log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        log.setLevel(old)


def quantize_dynamic_components(backend, fp32_files: dict[str, str], outdir: Path) -> dict[str, str]:
    ortq = require("optimum.onnxruntime", "dynamic quantization")
    qconfig = _dynamic_config(backend)
    files = {}
    for role, src in fp32_files.items():
        src = Path(src)
        with tempfile.TemporaryDirectory(dir=outdir) as tmp:
            # ORTQuantizer reads <dir>/<file_name>; give it a directory holding just this component
            staging = Path(tmp) / "in"
            staging.mkdir()
            (staging / src.name).symlink_to(src)
            try:
                with warnings.catch_warnings(), _quiet("optimum"):
                    warnings.simplefilter("ignore")
                    q = ortq.ORTQuantizer.from_pretrained(staging, file_name=src.name)
                    q.quantize(quantization_config=qconfig, save_dir=Path(tmp) / "out", file_suffix="quantized")
            except Exception as exc:  # ORT/optimum raise many types
                raise ArtifactError(f"{backend.name}: dynamic quantization of {role} failed: {exc}") from exc
            produced = Path(tmp) / "out" / f"{src.stem}_quantized.onnx"
            if not produced.exists():
                raise ArtifactError(f"{backend.name}: ORTQuantizer did not write {produced.name}")
            shutil.move(str(produced), outdir / COMPONENTS[role])
        files[role] = COMPONENTS[role]
    return files


def _nodes_to_quantize(path: Path, p: dict[str, Any]) -> tuple[list[str] | None, int]:
    """Nodes to quantize, or None for all of ``op_types``; plus how many MatMuls were left FP32.

    Unless ``quantize_activation_matmuls``, a MatMul whose inputs are both activations (attention
    scores and context: Q.K^T, P.V) stays FP32: quantizing it re-quantizes the whole KV cache and the
    encoder K/V at every decoding step, which measured slower than FP32 on this CPU.
    """
    if p["quantize_activation_matmuls"]:
        return None, 0
    onnx = require("onnx", "static quantization")
    graph = onnx.load(str(path)).graph
    consts = {i.name for i in graph.initializer}
    consts |= {o for n in graph.node if n.op_type == "Constant" for o in n.output}
    nodes, skipped = [], 0
    for n in graph.node:
        if n.op_type not in p["op_types"]:
            continue
        if n.op_type == "MatMul" and not any(i in consts for i in n.input):
            skipped += 1
            continue
        nodes.append(n.name)
    return nodes, skipped


def quantize_static_components(backend, fp32_files: dict[str, str], outdir: Path,
                               feeds: dict[str, list[dict]]) -> tuple[dict[str, str], dict[str, Any]]:
    quant = require("onnxruntime.quantization", "static quantization")
    from backends.onnxrt.calibration import data_reader

    p = _static_params(backend)
    # one feed per collect_data call (feeds differ in shape; see calibration.data_reader)
    extra_options = {"WeightSymmetric": True, "ActivationSymmetric": False, "CalibStridedMinMax": 1}
    if p["calibration_method"] == "Percentile":
        extra_options["CalibPercentile"] = p["calibration_percentile"]
    files, info = {}, {"preprocess_result": {}}
    for role, src in fp32_files.items():
        if not feeds.get(role):
            raise ArtifactError(f"{backend.name}: no calibration inputs were recorded for the {role}")
        with tempfile.TemporaryDirectory(dir=outdir) as tmp:
            model_in = Path(src)
            if p["preprocess"]:
                pre = Path(tmp) / "pre.onnx"
                try:
                    quant.shape_inference.quant_pre_process(str(src), str(pre), skip_symbolic_shape=False)
                    model_in = pre
                    info["preprocess_result"][role] = "ok"
                except Exception as exc:  # symbolic shape inference can fail on some graphs
                    info["preprocess_result"][role] = f"skipped: {type(exc).__name__}: {str(exc)[:200]}"
            nodes, skipped = _nodes_to_quantize(model_in, p)
            info.setdefault("activation_matmuls_kept_fp32", {})[role] = skipped
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    quant.quantize_static(
                        str(model_in), str(outdir / COMPONENTS[role]), data_reader(feeds[role]),
                        quant_format=quant.QuantFormat.QDQ, op_types_to_quantize=p["op_types"],
                        nodes_to_quantize=nodes,
                        per_channel=p["per_channel"], reduce_range=p["reduce_range"],
                        activation_type=getattr(quant.QuantType, p["activation_type"]),
                        weight_type=getattr(quant.QuantType, p["weight_type"]),
                        calibrate_method=getattr(quant.CalibrationMethod, p["calibration_method"]),
                        extra_options=extra_options)
            except Exception as exc:
                raise ArtifactError(f"{backend.name}: static quantization of {role} failed: {exc}") from exc
        files[role] = COMPONENTS[role]
    info["extra_options"] = extra_options
    return files, info
