"""`python cli.py export`: the measured artifacts, checked and copied with their provenance."""
from __future__ import annotations

import copy
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from backends.model import ModelBundle
from orchestrator.cli_app import main
from orchestrator.errors import RunDirError
from orchestrator.export import export_backend


@pytest.fixture(scope="module")
def run(tiny_model, tmp_path_factory):
    base = tmp_path_factory.mktemp("export")
    out = base / "run"
    argv = ["compare", "--model", str(tiny_model("marian")), "--backends", "torch-fp32,tflite-fp32-split",
            "--limit", "3", "--max-new-tokens", "6", "--max-source-length", "32", "--suites", "quality",
            "--timeout", "400", "--out", str(out), "--cache-dir", str(base / "cache"), "--quiet"]
    assert main(argv) in (0, 3)
    return out, json.loads((out / "report.json").read_text())


def test_export_copies_what_the_run_measured(run, tmp_path, capsys):
    out, report = run
    dest = tmp_path / "ship"
    assert main(["export", str(out), "--backend", "tflite-fp32-split", "--to", str(dest)]) == 0
    assert "reference_loop.py" in capsys.readouterr().out
    info = json.loads((dest / "export.json").read_text())
    rec = report["backends"]["tflite-fp32-split"]
    assert info["backend"] == "tflite-fp32-split" and info["runtime"] == "tflite" and info["kernels"] == "xnnpack"
    assert info["metrics"]["bleu"] == rec["metrics"]["bleu"]
    assert info["measured_by"]["command"] == report["command"]
    assert set(info["roles"]) == {"encoder", "decoder", "generation"}
    assert {"reference_loop.py", "generation.json", "model/config.json", "model/vocab.json",
            "model/source.spm", "model/target.spm"} <= set(info["files"])
    assert not any(f.endswith((".safetensors", ".bin")) for f in info["files"])  # no torch weights
    manifest = json.loads((Path(rec["artifacts"]["directory"]) / "manifest.json").read_text())
    for m in manifest["files"].values():
        assert info["files"][m["path"]]["sha256"] == m["sha256"]
    # the shipped loop, run from the export alone, gives the tokens the run measured
    bundle = ModelBundle.load(report["model"]["path"])
    src = Path(report["data"]["src"])
    import gzip

    first = next(l.strip() for l in (gzip.open(src, "rt") if src.suffix == ".gz" else open(src)))
    enc = bundle.encode_sources([first], 32)
    ids = [str(int(t)) for t, m in zip(enc.input_ids[0], enc.attention_mask[0]) if m]
    r = subprocess.run([sys.executable, "reference_loop.py", ".", *ids], cwd=dest, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    measured = json.loads((out / "backends" / "tflite-fp32-split" / "hypotheses.tokens.json").read_text())[0]
    assert [int(t) for t in r.stdout.split()] == measured


def test_export_defaults_to_the_selected_backend(run, tmp_path):
    out, report = run
    chosen = report["selection"]["chosen"]
    info = export_backend(report, out, tmp_path / "d")
    assert info["backend"] == chosen and info["selected"] is True
    if chosen == "torch-fp32":
        assert "model.safetensors" in info["files"] and "reference_loop.py" not in info["files"]


def test_export_refuses_a_non_empty_destination_and_unknown_backends(run, tmp_path, capsys):
    out, _ = run
    dest = tmp_path / "busy"
    dest.mkdir()
    (dest / "keep.txt").write_text("mine")
    assert main(["export", str(out), "--backend", "tflite-fp32-split", "--to", str(dest)]) == 2
    assert "--force" in capsys.readouterr().err and (dest / "keep.txt").read_text() == "mine"
    assert main(["export", str(out), "--backend", "onnx-fp32", "--to", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert "not in this run" in err and "tflite-fp32-split" in err and not (tmp_path / "x").exists()
    assert main(["export", str(out), "--backend", "tflite-fp32-split", "--to", str(dest), "--force"]) == 0
    assert not (dest / "keep.txt").exists() and (dest / "export.json").exists()


def _with_artifacts_copy(report, name, tmp_path):
    rep = copy.deepcopy(report)
    art = rep["backends"][name]["artifacts"]
    copy_dir = tmp_path / "artifacts"
    shutil.copytree(art["directory"], copy_dir)
    art["directory"] = str(copy_dir)
    return rep, copy_dir


def test_export_checks_the_artifacts_and_the_model_and_writes_nothing_on_failure(run, tmp_path):
    out, report = run
    name = "tflite-fp32-split"
    rep, art_dir = _with_artifacts_copy(report, name, tmp_path)
    enc = next(art_dir.glob("encoder*.tflite"))
    data = bytearray(enc.read_bytes())
    data[len(data) // 2] ^= 0xFF
    enc.write_bytes(bytes(data))
    dest = tmp_path / "ship"
    with pytest.raises(RunDirError, match="checksum mismatch"):
        export_backend(rep, out, dest, name)
    rep2 = copy.deepcopy(report)
    rep2["backends"][name]["artifacts"]["cache_key"] = "0" * 64
    with pytest.raises(RunDirError, match="other artifacts"):
        export_backend(rep2, out, dest, name)
    rep3 = copy.deepcopy(report)
    rep3["model"]["content_hash"] = "f" * 64
    with pytest.raises(RunDirError, match="changed since the run"):
        export_backend(rep3, out, dest, name)
    rep4 = copy.deepcopy(report)
    rep4["backends"][name]["artifacts"]["directory"] = str(tmp_path / "gone")
    with pytest.raises(RunDirError, match="gone"):
        export_backend(rep4, out, dest, name)
    rep5 = copy.deepcopy(report)
    rep5["backends"][name]["status"], rep5["backends"][name]["reason"] = "failed", "exit code 1"
    with pytest.raises(RunDirError, match="nothing to export"):
        export_backend(rep5, out, dest, name)
    assert not dest.exists() and not (tmp_path / "ship.partial").exists()
