"""The second TFLite quantizer: ai-edge-quantizer (the LiteRT quantizer, "AEQ").

:mod:`backends.tflite.convert` quantizes the TF concrete functions with ``TFLiteConverter``;
this module instead quantizes the *FP32 .tflite* bytes (the ``tflite-fp32-split`` pair)
with ai-edge-quantizer's static recipes, calibrated on the same representative samples:

* ``recipe="a8w8"``: int8 activations (asymmetric, per tensor), int8 per-channel symmetric
  weights, integer compute (AEQ's ``static_wi8_ai8`` / ``default_a8w8_recipe.json``);
* ``recipe="a16w8"``: int16 symmetric activations, int8 per-channel weights (``static_wi8_ai16``).
* ``int16_ops`` (backend option ``aeq_int16_ops``): a8w8 with a16w8's op config for the named op types,
  a mixed int8/int16 integer graph; AEQ inserts the int8<->int16 requantizing QUANTIZE ops itself.

What AEQ does with our graphs (ai-edge-quantizer 0.10, read from its source and measured):

* int32 inputs (ids, masks, position) stay int32; GATHER, SELECT_V2, SOFTMAX, BATCH_MATMUL,
  MEAN, RSQRT, LOGISTIC, CONCATENATION become integer ops; CAST int32->bool stays (no float).
  Graph outputs and float inputs become quantized (int8 / int16 with scale and zero point),
  so the host requantizes the boundary and the KV cache itself, exactly as with the converter.
* ``REDUCE_MAX`` (the row max of the select-based attention mask) is not in AEQ's op table:
  AEQ leaves it in float behind a DEQUANTIZE and a QUANTIZE (6 float islands per graph on
  Marian), which our audit reports as float compute. ``fold_float_max=True`` rewrites each
  island into an integer ``REDUCE_MAX`` on the quantized scores (max commutes with a monotonic
  affine quantization, so the rewrite is exact) followed by the QUANTIZE that AEQ already
  placed (now an int->int requantize). The rewrite is reported in the returned ``report``;
  the audit runs on the rewritten file. The same pass repairs an AEQ 0.10 signature bug (see
  :func:`postprocess`).
* Requantize ops: where TFLiteConverter gives a tensor the scale its consumer needs (CONCATENATION
  and SELECT_V2 need equal input/output scales), AEQ inserts an int8->int8 QUANTIZE (26 in the
  Marian decoder step, 13 in the encoder). They cost nothing measurable: single-thread CPU time
  per decoder step 0.56-0.58 ms for AEQ and the converter alike (encoder 10.4 ms for both); a pass
  that absorbed them into the producers changed neither speed nor quality beyond noise.
* Activation ranges: AEQ's min-max calibration keeps an exponential moving average of each
  batch's min/max (smoothing 0.95, ``range_update="ema"``, its default); ``range_update="minmax"``
  passes a running global min/max instead (what TFLiteConverter does). AEQ's other algorithms
  (OCTAV, MSE, GPTQ, OSCAR, Hadamard rotation) only change *weight* quantization;
  ``algorithm="OCTAV"`` (OCTAV clipping of the FULLY_CONNECTED weights, the rest min-max) is offered.
  There is no percentile / histogram activation calibration in AEQ.
"""
from __future__ import annotations

import contextlib
import io
from typing import Any, Callable, Iterable

import numpy as np

from backends._imports import require
from backends.errors import ArtifactError, InvalidInputError
from backends.tflite.convert import cast_sample, invoke_sample

#: bump when this module's output changes for the same inputs (part of the artifact cache key).
#: 2: the percentile pass sees the same decoder samples as the calibration (CalibrationRecorder reseeds per call)
AEQ_FORMAT = 2
RECIPES = ("a8w8", "a16w8")
RANGE_UPDATES = ("ema", "minmax")
#: the backend's calibration_method under AEQ: its own moving-average min/max, a global min/max,
#: or the global range shrunk to the [100-p, p] percentiles (as convert.py does for the converter)
CALIBRATION_METHODS = ("ema", "minmax", "percentile")
#: quantization (backend option) -> AEQ recipe
RECIPE_OF = {"int8": "a8w8", "int16x8": "a16w8"}
ALGORITHMS = ("min_max_uniform_quantize", "OCTAV")  # AEQ algorithm keys
#: float ops whose result on a dequantized input can be computed exactly on the integers
_ORDER_PRESERVING = ("REDUCE_MAX",)
#: samples handed to AEQ's calibrator per call (it materialises each batch of samples)
_CHUNK = 16


def check_options(name: str, o: dict[str, Any]) -> None:
    """Backend options that AEQ cannot honour fail here, with the choices that work."""
    if o["quantization"] not in RECIPE_OF:
        raise InvalidInputError(f"{name}: quantizer 'ai_edge_quantizer' supports quantization "
                                f"{tuple(RECIPE_OF)}, not '{o['quantization']}'")
    for key in ("calibration_method", "encoder_calibration_method"):
        if o[key] is not None and o[key] not in CALIBRATION_METHODS:
            raise InvalidInputError(f"{name}: {key} '{o[key]}' unknown for ai_edge_quantizer; choose one of "
                                    f"{CALIBRATION_METHODS}")
    if o["aeq_algorithm"] not in ALGORITHMS:
        raise InvalidInputError(f"{name}: aeq_algorithm '{o['aeq_algorithm']}' unknown; choose one of "
                                f"{ALGORITHMS}")
    _check_int16_ops(name, o)
    for key in ("fine_logits", "symmetric_matmul_rhs", "stream_balance", "ffn_balance", "encoder_valid_rows",
                "encoder_percentile"):
        if o.get(key) not in (False, None, "none"):
            raise InvalidInputError(f"{name}: {key} is implemented for the tflite_converter quantizer only")
    if o["float_ops"]:
        ops = require("ai_edge_quantizer.qtyping", "ai-edge-quantizer").TFLOperationName
        unknown = [op for op in o["float_ops"] if op not in ops.__members__]
        if unknown:
            raise InvalidInputError(f"{name}: float_ops {unknown} are not ops ai-edge-quantizer can leave "
                                    f"in float; choose from {sorted(ops.__members__)}")


def _check_int16_ops(name: str, o: dict[str, Any]) -> None:
    value = o.get("aeq_int16_ops")
    if not value:
        return
    if isinstance(value, dict) and set(value) - {"encoder", "decoder"}:
        raise InvalidInputError(f"{name}: aeq_int16_ops keys must be 'encoder' and/or 'decoder', got "
                                f"{sorted(value)}")
    if o["quantization"] != "int8":
        raise InvalidInputError(f"{name}: aeq_int16_ops mixes int16 into an int8 graph; it needs "
                                f"quantization 'int8', not '{o['quantization']}'")
    algorithms = require("ai_edge_quantizer.algorithm_manager", "ai-edge-quantizer")
    supported = {op.value for op in algorithms.get_supported_ops(algorithms.AlgorithmName.MIN_MAX_UNIFORM_QUANT)}
    supported -= {"INPUT", "OUTPUT"}
    bad = sorted({op for role in ("encoder", "decoder") for op in int16_ops_of(value, role)} - supported)
    if bad:
        raise InvalidInputError(f"{name}: aeq_int16_ops: ai-edge-quantizer cannot quantize {bad}; op types it "
                                f"can: {sorted(supported)}")


def _recipe(recipe: str, algorithm: str, float_ops: Iterable[str] = (),
            int16_ops: Iterable[str] = ()) -> list[dict[str, Any]]:
    aeq_recipe = require("ai_edge_quantizer.recipe", "ai-edge-quantizer recipes")
    if recipe not in RECIPES:
        raise InvalidInputError(f"ai-edge-quantizer recipe '{recipe}' unknown; choose one of {RECIPES}")
    if algorithm not in ALGORITHMS:
        raise InvalidInputError(f"ai-edge-quantizer algorithm '{algorithm}' unknown; choose one of {ALGORITHMS}")
    build = aeq_recipe.static_wi8_ai8 if recipe == "a8w8" else aeq_recipe.static_wi8_ai16
    rec = build(algorithm_key=aeq_recipe.AlgorithmName.MIN_MAX_UNIFORM_QUANT)
    if algorithm != "min_max_uniform_quantize":
        # OCTAV only supports symmetric tensors, so it cannot take every op (a8w8 activations and
        # some constants are asymmetric): it picks the clipping of the FULLY_CONNECTED weights
        rec = rec + [{**rec[0], "operation": "FULLY_CONNECTED", "algorithm_key": algorithm}]
    # per-op override: these op types get int16 activations (a16w8's op config; AEQ requantizes
    # between int8 and int16 tensors)
    a16 = aeq_recipe.static_wi8_ai16(algorithm_key=aeq_recipe.AlgorithmName.MIN_MAX_UNIFORM_QUANT)[0]
    rec = rec + [{**a16, "regex": ".*", "operation": op} for op in int16_ops]
    # per-op override: these op types stay float (selective float; breaks strict integer)
    return rec + [{"regex": ".*", "operation": op, "algorithm_key": "no_quantize"} for op in float_ops]


def _quiet():
    """AEQ draws tqdm progress bars on stderr for every calibration call (no switch to turn them
    off); keep them out of the console. Errors still propagate as exceptions."""
    return contextlib.redirect_stderr(io.StringIO())


def _global_min_max(qsv: dict, new: dict) -> dict:
    """A running min/max across calibration batches (AEQ's default is a moving average)."""
    if not qsv:
        return new
    return {**qsv, "min": np.minimum(qsv["min"], new["min"]), "max": np.maximum(qsv["max"], new["max"])}


def signature_key(model: bytes) -> tuple[str, list[str]]:
    """The single signature of ``model`` and its input names."""
    litert = require("ai_edge_litert.interpreter", "reading .tflite signatures")
    interp = litert.Interpreter(model_content=bytes(model))
    sigs = interp.get_signature_list()
    if len(sigs) != 1:
        raise ArtifactError(f"expected one signature in the FP32 model, found {sorted(sigs)}")
    key = next(iter(sigs))
    return key, list(sigs[key]["inputs"])


def calibrate(model: bytes, samples: Callable[[], Iterable[dict[str, np.ndarray]]], recipe: list[dict[str, Any]],
              range_update: str = "ema", threads: int = 2) -> tuple[dict[str, Any], int]:
    """AEQ calibration of the FP32 ``model`` on ``samples`` (dicts keyed by input name)."""
    calibrator = require("ai_edge_quantizer.calibrator", "ai-edge-quantizer calibration")
    recipe_manager = require("ai_edge_quantizer.recipe_manager", "ai-edge-quantizer calibration")
    if range_update not in RANGE_UPDATES:
        raise InvalidInputError(f"range_update '{range_update}' unknown; choose one of {RANGE_UPDATES}")
    key, names = signature_key(model)
    manager = recipe_manager.RecipeManager()
    manager.load_quantization_recipe(recipe)
    kwargs = {"qsv_update_func": _global_min_max} if range_update == "minmax" else {}
    with _quiet():
        calib = calibrator.Calibrator(bytes(model), num_threads=int(threads), **kwargs)
    count, chunk = 0, []
    for s in samples():
        chunk.append(cast_sample(s, names))
        if len(chunk) == _CHUNK:
            with _quiet():
                calib.calibrate({key: chunk}, manager)
            count, chunk = count + len(chunk), []
    if chunk:
        with _quiet():
            calib.calibrate({key: chunk}, manager)
        count += len(chunk)
    if not count:
        raise InvalidInputError("ai-edge-quantizer got an empty calibration set")
    return calib.get_model_qsvs(), count


def quantize(model: bytes, samples: Callable[[], Iterable[dict[str, np.ndarray]]], recipe: str = "a8w8",
             algorithm: str = "min_max_uniform_quantize", method: str = "ema", percentile: float = 99.99,
             fold_float_max: bool = True, float_ops: Iterable[str] = (), int16_ops: Iterable[str] = (),
             threads: int = 2) -> tuple[bytes, dict[str, Any]]:
    """Quantize FP32 .tflite bytes with AEQ; returns the quantized bytes and what was done."""
    aeq = require("ai_edge_quantizer.quantizer", "ai-edge-quantizer")
    if method not in CALIBRATION_METHODS:
        raise InvalidInputError(f"calibration method '{method}' unknown; choose one of {CALIBRATION_METHODS}")
    rec = _recipe(recipe, algorithm, float_ops, int16_ops)
    qsvs, count = calibrate(model, samples, rec, "ema" if method == "ema" else "minmax", threads)
    shrunk = _percentile_ranges(model, qsvs, samples, percentile) if method == "percentile" else 0
    q = aeq.Quantizer(bytes(model), rec)
    out = bytes(q.quantize(qsvs, enable_progress_bar=False, enable_progress_report=False).quantized_model)
    out, rewrites = postprocess(out, fold_float_max)
    report = {"recipe": recipe, "algorithm": algorithm, "method": method, "calibration_samples": count,
              **rewrites}
    if method == "percentile":
        report.update(percentile=percentile, ranges_shrunk=shrunk)
    if float_ops:
        report["float_ops"] = list(float_ops)
    return out, report


def quantize_role(model: bytes, samples, role: str, o: dict[str, Any], threads: int) -> tuple[bytes, dict]:
    """:func:`quantize` with the backend's options (``role``: encoder | decoder)."""
    method = o["calibration_method"]
    if role == "encoder":
        method = o["encoder_calibration_method"] or method
    return quantize(model, samples, RECIPE_OF[o["quantization"]], o["aeq_algorithm"], method,
                    float(o["percentile"]), bool(o["aeq_fold_float_max"]), tuple(o["float_ops"] or ()),
                    int16_ops_of(o.get("aeq_int16_ops"), role), threads)


def int16_ops_of(value, role: str) -> tuple[str, ...]:
    """``aeq_int16_ops``: a list of op types (both graphs) or ``{"encoder": [...], "decoder": [...]}``."""
    if isinstance(value, dict):
        value = value.get(role) or ()
    return tuple(value or ())


def _percentile_ranges(model: bytes, qsvs: dict[str, Any], samples, pct: float, per_sample: int = 4096,
                       cap: int = 65536) -> int:
    """Shrink each float activation's calibrated [min, max] to its value percentiles, in place
    (ranges only shrink and keep 0 inside; graph inputs and outputs keep min-max)."""
    litert = require("ai_edge_litert.interpreter", "percentile calibration")
    _, names = signature_key(model)
    interp = litert.Interpreter(model_content=bytes(model), experimental_preserve_all_tensors=True)
    runner = interp.get_signature_runner()
    edge = {d["index"] for d in runner.get_input_details().values()}
    edge |= {d["index"] for d in runner.get_output_details().values()}
    index = {n: d["index"] for n, d in runner.get_input_details().items()}
    del runner  # a live signature runner blocks resize_tensor_input
    ranged = {t["index"]: t["name"] for t in interp.get_tensor_details()
              if t["name"] in qsvs and t["index"] not in edge and np.dtype(t["dtype"]) == np.float32
              and np.size(qsvs[t["name"]].get("min", ())) == 1}
    rng = np.random.default_rng(0)
    values: dict[int, list[np.ndarray]] = {i: [] for i in ranged}
    for s in samples():
        invoke_sample(interp, index, cast_sample(s, names))
        for i in ranged:
            if sum(len(v) for v in values[i]) >= cap:
                continue
            flat = np.array(interp.get_tensor(i), copy=True).reshape(-1)
            if flat.size:
                values[i].append(flat if flat.size <= per_sample else rng.choice(flat, per_sample, replace=False))
    shrunk = 0
    for i, name in ranged.items():
        if not values[i]:
            continue
        lo, hi = np.percentile(np.concatenate(values[i]), [100.0 - pct, pct])
        q = qsvs[name]
        new_min = np.full_like(q["min"], min(max(lo, float(np.min(q["min"]))), 0.0))
        new_max = np.full_like(q["max"], max(min(hi, float(np.max(q["max"]))), 0.0))
        shrunk += int(bool(new_min.item() > np.min(q["min"]) or new_max.item() < np.max(q["max"])))
        q["min"], q["max"] = new_min, new_max
    return shrunk


def postprocess(model: bytes, fold_float_max: bool = True) -> tuple[bytes, dict[str, int]]:
    """Two rewrites of AEQ's output flatbuffer; returns the new bytes and what was rewritten.

    * Signature repair (always): when a graph output is also consumed inside the graph (the
      decoder's ``new_k_i`` feeds the attention's CONCATENATION), AEQ 0.10 inserts a requantizing
      QUANTIZE in front of the output and makes *its* result the subgraph output, but leaves the
      signature pointing at the internal tensor, whose memory the interpreter reuses (reading it
      fails: "Tensor data is null"). The signature is pointed at the real subgraph output.
    * ``fold_float_max``: ``DEQUANTIZE -> REDUCE_MAX(float) -> QUANTIZE`` becomes
      ``REDUCE_MAX(int) -> QUANTIZE``. The integer REDUCE_MAX keeps its input's scale and zero
      point (TFLite's kernel requires equal input/output parameters), which makes it exact; the
      consumers' QUANTIZE ops then requantize int->int.
    """
    # LiteRT's reader resolves AEQ's offset/size (external) buffers into inline data
    fbu = require("ai_edge_litert.tools.flatbuffer_utils", "rewriting the ai-edge-quantizer output")
    fb = require("ai_edge_litert.schema_py_generated", "rewriting the ai-edge-quantizer output")

    m = fbu.read_model_from_bytearray(bytearray(model))
    codes = [max(c.builtinCode, c.deprecatedBuiltinCode) for c in m.operatorCodes]
    done = {"folded_float_ops": 0, "repaired_signature_outputs": 0}
    for sig in m.signatureDefs or []:
        g = m.subgraphs[sig.subgraphIndex]
        outputs = set(g.outputs)
        requant = {op.inputs[0]: op.outputs[0] for op in g.operators
                   if codes[op.opcodeIndex] == fb.BuiltinOperator.QUANTIZE and op.outputs[0] in outputs}
        for item in sig.outputs:
            if item.tensorIndex not in outputs and item.tensorIndex in requant:
                item.tensorIndex = requant[item.tensorIndex]
                done["repaired_signature_outputs"] += 1
            elif item.tensorIndex not in outputs:
                raise ArtifactError(f"ai-edge-quantizer output: signature output '{item.name}' is not a "
                                    f"graph output and no QUANTIZE leads to one")
    if fold_float_max:
        done["folded_float_ops"] = _fold(m, codes, fb)
    return bytes(fbu.convert_object_to_bytearray(m)), done


def _fold(m, codes: list[int], fb) -> int:
    wanted = {getattr(fb.BuiltinOperator, n) for n in _ORDER_PRESERVING}
    integer = (fb.TensorType.INT8, fb.TensorType.INT16)
    folded = 0
    for g in m.subgraphs:
        producer = {o: op for op in g.operators for o in op.outputs}
        consumers: dict[int, list] = {}
        for op in g.operators:
            for i in op.inputs:
                if i >= 0:
                    consumers.setdefault(i, []).append(op)
        graph_io = set(g.inputs) | set(g.outputs)
        dead = []
        for op in g.operators:
            if codes[op.opcodeIndex] not in wanted:
                continue
            src, dst = op.inputs[0], op.outputs[0]
            deq = producer.get(src)
            if deq is None or codes[deq.opcodeIndex] != fb.BuiltinOperator.DEQUANTIZE:
                continue
            qin = deq.inputs[0]
            users = consumers.get(dst, [])
            if (g.tensors[qin].type not in integer or dst in graph_io or not users
                    or any(codes[u.opcodeIndex] != fb.BuiltinOperator.QUANTIZE for u in users)):
                continue
            op.inputs[0] = qin
            out_t, in_t = g.tensors[dst], g.tensors[qin]
            out_t.type = in_t.type
            qp = fb.QuantizationParametersT()
            qp.scale = list(in_t.quantization.scale)
            qp.zeroPoint = list(in_t.quantization.zeroPoint)
            out_t.quantization = qp
            folded += 1
            consumers[src].remove(op)
            if not consumers[src] and src not in graph_io:
                dead.append(deq)
        g.operators = [op for op in g.operators if all(op is not d for d in dead)]
    return folded
