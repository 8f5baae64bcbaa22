"""Export a local checkpoint to ONNX with optimum-onnx: encoder, decoder, decoder-with-past.

The decoders are exported unmerged (``no_post_process=True``) so every component is a plain graph
without ``If`` subgraphs: ORT's static quantizer cannot calibrate subgraphs, and separate files let
each component be quantized and audited on its own.
"""
from __future__ import annotations

import os
import shutil
import warnings
from pathlib import Path
from typing import Any

from backends._imports import require
from backends.errors import ArtifactError

COMPONENTS = {"encoder": "encoder_model.onnx", "decoder": "decoder_model.onnx",
              "decoder_with_past": "decoder_with_past_model.onnx"}


def export_seq2seq(model, outdir: Path, opset: int | None = None, threads: int = 2) -> dict[str, str]:
    """Export ``model`` (a ModelBundle) into ``outdir``; return ``{component: filename}``."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    torch = require("torch", "ONNX export")
    exporters = require("optimum.exporters.onnx", "ONNX export")
    old_threads = torch.get_num_threads()
    torch.set_num_threads(max(1, int(threads)))
    scratch = outdir / "_export"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            exporters.main_export(str(model.path), scratch, task="text2text-generation-with-past",
                                  opset=opset, no_post_process=True, local_files_only=True,
                                  do_validation=False, library_name="transformers")
    except Exception as exc:  # optimum raises ValueError/KeyError/RuntimeError for unsupported models
        raise ArtifactError(f"optimum-onnx could not export {model.path} ({model.family_name}): "
                            f"{type(exc).__name__}: {exc}") from exc
    finally:
        torch.set_num_threads(old_threads)
    files = {}
    for role, fname in COMPONENTS.items():
        src = scratch / fname
        if not src.exists():
            found = sorted(p.name for p in scratch.glob("*.onnx"))
            raise ArtifactError(f"optimum-onnx export of {model.path} produced {found}, missing {fname}")
        shutil.move(str(src), outdir / fname)
        data = scratch / (fname + "_data")  # external data (models > 2 GB)
        if data.exists():
            shutil.move(str(data), outdir / data.name)
        files[role] = fname
    shutil.rmtree(scratch, ignore_errors=True)
    return files


def graph_summary(path: Path) -> dict[str, Any]:
    """Op-type histogram and opset of one ONNX file (for the artifact audit)."""
    onnx = require("onnx", "ONNX graph audit")
    m = onnx.load(str(path), load_external_data=False)
    ops: dict[str, int] = {}
    for node in m.graph.node:
        ops[node.op_type] = ops.get(node.op_type, 0) + 1
    opset = {o.domain or "ai.onnx": o.version for o in m.opset_import}
    return {"nodes": len(m.graph.node), "ops": dict(sorted(ops.items())), "opset": opset}
