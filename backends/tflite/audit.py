"""Op audit of a .tflite file: every op with its input/output dtypes, whether the graph is
integer-only (no float compute op anywhere) and whether it is *strict* full INT8 (integer-only
with int8 activations: no int16 activation tensor either, as in 16x8 or mixed int8/int16 graphs)."""
from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from backends._imports import require
from backends.tflite.graphs import op_location

EDGE_OPS = ("QUANTIZE", "DEQUANTIZE")
FLOAT_TYPES = ("float32", "float16", "float64")


def _dtype_name(d) -> str:
    import numpy as np

    return np.dtype(d).name


def audit_model(path: str | Path) -> dict[str, Any]:
    litert = require("ai_edge_litert.interpreter", "the op audit")
    interp = litert.Interpreter(model_path=str(path))
    tensors = {t["index"]: t for t in interp.get_tensor_details()}
    graph_inputs = {d["index"] for d in interp.get_input_details()}
    graph_outputs = {d["index"] for d in interp.get_output_details()}
    ops, float_ops, edge_ops = [], [], []
    for op in interp._get_ops_details():  # noqa: SLF001 - the only API listing ops
        ins = [_dtype_name(tensors[i]["dtype"]) for i in op["inputs"] if i >= 0 and i in tensors]
        outs = [_dtype_name(tensors[i]["dtype"]) for i in op["outputs"] if i in tensors]
        entry = {"index": int(op["index"]), "op": op["op_name"], "inputs": ins, "outputs": outs}
        first_out = next((i for i in op["outputs"] if i in tensors), None)
        if first_out is not None:
            entry["where"] = op_location(tensors[first_out]["name"])
        ops.append(entry)
        has_float = any(t in FLOAT_TYPES for t in ins + outs)
        if op["op_name"] in EDGE_OPS:
            at_edge = any(i in graph_inputs for i in op["inputs"]) or any(o in graph_outputs for o in op["outputs"])
            if has_float and not at_edge:
                float_ops.append(entry)
            elif has_float:
                edge_ops.append(entry)
        elif has_float:
            float_ops.append(entry)
    counts = Counter(o["op"] for o in ops)
    activations = {t for o in ops for t in o["outputs"] if t in ("int8", "int16")}
    float_counts = Counter(o["op"] for o in float_ops)
    return {
        "file": Path(path).name,
        "bytes": Path(path).stat().st_size,
        "num_ops": len(ops),
        "op_counts": dict(sorted(counts.items())),
        "float_compute_ops": len(float_ops),
        "float_op_counts": dict(sorted(float_counts.items())),
        "float_ops": [f"{o['op']} {o.get('where', '?')}" for o in float_ops],  # where float compute remains
        "edge_quantize_ops": len(edge_ops),
        "activation_dtypes": sorted(activations),
        "integer_only": not float_ops and bool(activations),
        "full_int8": not float_ops and activations == {"int8"},
        "io": {"inputs": {tensors[i]["name"]: _dtype_name(tensors[i]["dtype"]) for i in graph_inputs},
               "outputs": {tensors[i]["name"]: _dtype_name(tensors[i]["dtype"]) for i in graph_outputs}},
        "ops": ops,
    }
