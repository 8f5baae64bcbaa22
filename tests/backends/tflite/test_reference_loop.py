"""reference_loop.py runs the host loop from generation.json alone and reproduces the backend's tokens."""
from __future__ import annotations

import ast
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from backends.tflite import reference_loop
from backends.tflite.reference_loop import ReferenceLoop
from tests.backends.tflite.conftest import SOURCES, translate

INT8 = {"calibration_sources": 8}
CASES = [
    ("marian", "tflite-fp32-split", {}),
    ("marian", "tflite-fp32-split", {"cross_kv": "decoder"}),  # the encoder states cross the boundary
    ("marian", "tflite-int8", INT8),
    ("marian", "tflite-int8", {"fine_logits": True, **INT8}),  # two logits outputs
    ("marian", "tflite-int8-naive", INT8),  # boundary_mode raw: the loop reproduces the failure too
    ("bart", "tflite-int8", INT8),
    ("t5", "tflite-int8", INT8),
]


def source_ids(bundle, backend, text: str) -> list[int]:
    enc = bundle.encode_sources([text], backend.max_source_length)
    return [int(t) for t, m in zip(enc.input_ids[0], enc.attention_mask[0]) if m]


@pytest.mark.parametrize("family,name,options", CASES, ids=[f"{f}-{n}-{'-'.join(o)}" for f, n, o in CASES])
def test_reference_loop_reproduces_the_backend(prepared, family, name, options):
    bundle, be = prepared(family, name, **options)
    loop = ReferenceLoop(be.artifacts.directory)
    for text in SOURCES:  # one sentence at a time, as an app runs it
        assert loop.translate(source_ids(bundle, be, text)) == translate(bundle, be, [text])[0], text


def test_generation_json_states_the_rules_the_loop_needs(prepared):
    bundle, be = prepared("marian", "tflite-int8", **INT8)
    gen = json.loads(Path(be.artifacts.files["generation"]).read_text())
    assert gen["self_attention_mask"]["length"] == gen["static"]["cache_length"] + 1
    assert gen["boundary_mode"] == "convert"
    assert gen["tokenizer"]["files"] == ["source.spm", "target.spm", "vocab.json"] + [
        f for f in ("tokenizer_config.json", "special_tokens_map.json") if (bundle.path / f).exists()]
    naive = json.loads(Path(prepared("marian", "tflite-int8-naive", **INT8)[1].artifacts.files["generation"])
                       .read_text())
    assert naive["boundary_mode"] == "raw"


def test_reference_loop_imports_nothing_from_seqquant():
    tree = ast.parse(Path(reference_loop.__file__).read_text())
    roots = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    roots |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert roots <= {"__future__", "json", "sys", "pathlib", "numpy", "ai_edge_litert"}, roots


def test_reference_loop_runs_as_a_script_next_to_the_artifacts(prepared, tmp_path):
    bundle, be = prepared("marian", "tflite-int8", **INT8)
    for p in Path(be.artifacts.directory).iterdir():
        shutil.copyfile(p, tmp_path / p.name)
    shutil.copyfile(reference_loop.__file__, tmp_path / "reference_loop.py")
    ids = source_ids(bundle, be, SOURCES[0])
    r = subprocess.run([sys.executable, "reference_loop.py", ".", *map(str, ids)], cwd=tmp_path,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert [int(t) for t in r.stdout.split()] == translate(bundle, be, [SOURCES[0]])[0]
    usage = subprocess.run([sys.executable, "reference_loop.py", "."], cwd=tmp_path, capture_output=True,
                           text=True, timeout=300)
    assert usage.returncode == 2 and "EXPORT_DIR" in usage.stderr


def test_reference_loop_refuses_what_it_cannot_run(prepared, tmp_path):
    bundle, be = prepared("marian", "tflite-fp32-split")
    for p in Path(be.artifacts.directory).iterdir():
        shutil.copyfile(p, tmp_path / p.name)
    loop = ReferenceLoop(tmp_path)
    S = loop.spec["static"]["source_length"]
    with pytest.raises(ValueError, match="static source length"):
        loop.translate([5] * (S + 1))
    with pytest.raises(ValueError, match="static source length"):
        loop.translate([])
    with pytest.raises(ValueError, match="max_new_tokens"):
        loop.translate([5, 0], max_new_tokens=loop.spec["static"]["max_new_tokens"] + 1)
    gen = json.loads((tmp_path / "generation.json").read_text())
    gen["format"] = "seqquant-tflite-generation/99"
    (tmp_path / "generation.json").write_text(json.dumps(gen))
    with pytest.raises(ValueError, match="format"):
        ReferenceLoop(tmp_path)


def test_reference_loop_runs_the_measured_kernels(prepared, tmp_path):
    """Same artifacts, other LiteRT kernels: the loop follows export.json (or --kernels) and then
    reproduces the backend run with those kernels; an unknown name is refused."""
    from backends.tflite.runtime import KERNELS

    assert reference_loop.KERNELS == KERNELS  # one resolver table, the shipped one
    bundle, be = prepared("marian", "tflite-int8", kernels="reference", **INT8)
    for p in Path(be.artifacts.directory).iterdir():
        shutil.copyfile(p, tmp_path / p.name)
    assert ReferenceLoop(tmp_path).kernels == "xnnpack"  # no export.json: LiteRT's default
    (tmp_path / "export.json").write_text(json.dumps({"kernels": "reference"}))
    loop = ReferenceLoop(tmp_path)
    assert loop.kernels == "reference"
    for text in SOURCES:
        assert loop.translate(source_ids(bundle, be, text)) == translate(bundle, be, [text])[0], text
    with pytest.raises(ValueError, match="kernels must be one of"):
        ReferenceLoop(tmp_path, kernels="gpu")
    shutil.copyfile(reference_loop.__file__, tmp_path / "reference_loop.py")
    ids = [str(i) for i in source_ids(bundle, be, SOURCES[0])]
    r = subprocess.run([sys.executable, "reference_loop.py", ".", "--kernels", "builtin", *ids], cwd=tmp_path,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and r.stdout.split(), r.stderr
    bad = subprocess.run([sys.executable, "reference_loop.py", ".", "--kernels", "gpu", *ids], cwd=tmp_path,
                         capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "--kernels xnnpack|builtin|reference" in bad.stderr
