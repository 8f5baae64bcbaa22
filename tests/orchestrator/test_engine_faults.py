"""Fault injection through the real engine: crash, segfault, NaN logits, preflight skip, prepare error,
corrupt artifact, and resume without recomputing finished backends.

One run of six plugin backends (real PyTorch split backends on the tiny Marian model, misbehaving in
``decode_step``/``prepare``), then the *same command again* after corrupting one cached artifact.
"""
import json
from pathlib import Path

import pytest

from orchestrator.cli_app import main
from tests.fixtures.faulty_backends import COUNTER_ENV, register_faulty_backends

BACKENDS = ["test-counting", "test-crash", "test-segfault", "test-nan", "test-preflight-skip", "test-raise-prepare"]


@pytest.fixture(scope="module")
def runs(tiny_model, tmp_path_factory):
    register_faulty_backends()
    import os

    base = tmp_path_factory.mktemp("faults")
    counter = base / "activations.txt"
    os.environ[COUNTER_ENV] = str(counter)
    out = base / "run"
    argv = ["compare", "--model", str(tiny_model("marian")), "--backends", ",".join(BACKENDS), "--limit", "3",
            "--max-new-tokens", "6", "--suites", "quality", "--reference", "test-counting", "--timeout", "240",
            "--out", str(out), "--quiet"]
    try:
        rc1 = main(argv)
        first = json.loads((out / "report.json").read_text())
        activations_after_first = counter.read_text().splitlines()
        suite_file = out / "backends" / "test-counting" / "suites" / "quality.json"
        suite_before = suite_file.read_text()
        # corrupt test-crash's cached artifact (it is re-run: its process died); test-segfault's is the control
        art = Path(sorted(first["backends"]["test-crash"]["artifacts"]["files"].values())[0])
        good = art.read_bytes()
        art.write_bytes(bytes(b ^ 0xFF for b in good[:4]) + good[4:])
        rc2 = main(argv)
        second = json.loads((out / "report.json").read_text())
    finally:
        os.environ.pop(COUNTER_ENV, None)
    return dict(rc1=rc1, rc2=rc2, first=first, second=second, out=out, counter=counter,
                activations_after_first=activations_after_first, suite_before=suite_before, suite_file=suite_file,
                art=art, good=good)


def test_run_completes_despite_faults(runs):
    assert runs["rc1"] in (0, 3) and runs["rc2"] in (0, 3)  # 3 only if selection finds nothing feasible
    assert list(runs["first"]["backends"]) == BACKENDS


def test_abort_is_failed_with_signal_and_log_tail(runs):
    b = runs["first"]["backends"]["test-crash"]
    assert b["status"] == "failed" and "SIGABRT" in b["reason"] and "quality" in b["reason"]
    assert b["exit"]["signal"] == "SIGABRT"
    assert any("about to abort in decode_step" in line for line in b["log_tail"]) or \
        any("Fatal Python error" in line for line in b["log_tail"])
    assert b["suites"]["quality"]["status"] == "failed"


def test_segfault_is_failed_with_signal(runs):
    b = runs["first"]["backends"]["test-segfault"]
    assert b["status"] == "failed" and "SIGSEGV" in b["reason"]


def test_nan_logits_are_detected_and_recorded(runs):
    b = runs["first"]["backends"]["test-nan"]
    assert b["status"] == "failed"
    assert "NonFiniteLogitsError" in b["reason"] and "NaN" in b["reason"]
    assert b["suites"]["quality"]["status"] == "failed" and "bleu" not in b["metrics"]


def test_preflight_and_prepare_errors(runs):
    skip = runs["first"]["backends"]["test-preflight-skip"]
    assert skip["status"] == "skipped" and "int16 GEMM is not supported" in skip["reason"]
    bad = runs["first"]["backends"]["test-raise-prepare"]
    assert bad["status"] == "failed" and "prepare failed" in bad["reason"] and "converter exploded" in bad["reason"]


def test_healthy_backend_unaffected(runs):
    b = runs["first"]["backends"]["test-counting"]
    assert b["status"] == "ok" and b["reason"] is None
    q = b["suites"]["quality"]
    assert q["status"] == "ok" and q["n"] == 3 and 0 <= b["metrics"]["bleu"] <= 100
    assert b["metrics"]["exact_match_vs_reference"] == 1.0  # it is the reference
    assert b["signature"]["backend"] == "test-counting" and b["artifacts"]["bytes"] > 0


def test_resume_does_not_recompute_finished_backends(runs):
    second = runs["second"]
    assert runs["counter"].read_text().splitlines() == runs["activations_after_first"]
    assert len(runs["activations_after_first"]) == 1  # activated once, in the first run only
    assert runs["suite_file"].read_text() == runs["suite_before"]  # not rewritten
    assert second["backends"]["test-counting"]["reused"] is True
    assert second["backends"]["test-counting"]["suites"]["quality"]["reused"] is True
    assert second["backends"]["test-counting"]["metrics"]["bleu"] == \
        runs["first"]["backends"]["test-counting"]["metrics"]["bleu"]
    assert second["backends"]["test-nan"]["reused"] is True  # a recorded suite failure is a finished result
    assert "test-counting" in second["run"]["backends_reused"]
    assert {"test-crash", "test-segfault"} <= set(second["run"]["backends_run"])  # died: retried


def test_corrupt_artifact_detected_and_rebuilt(runs):
    first, second = runs["first"]["backends"], runs["second"]["backends"]
    assert first["test-crash"]["artifacts"]["reused"] is False  # built in the first run
    assert second["test-segfault"]["artifacts"]["reused"] is True  # control: intact artifact reused
    assert second["test-crash"]["artifacts"]["reused"] is False  # checksum mismatch -> rebuilt
    assert runs["art"].read_bytes() == runs["good"]


def test_report_schema_fields(runs):
    r = runs["first"]
    for key in ("schema_version", "tool", "command", "created", "model", "data", "settings", "reference_backend",
                "backends", "suites", "run", "warnings"):
        assert key in r
    assert r["schema_version"] == 1 and r["tool"]["name"] == "seqquant"
    assert r["model"]["family"] == "marian" and len(r["model"]["content_hash"]) == 64
    assert r["data"]["n_sentences"] == 3 and r["data"]["calibration"]["n_sentences"] > 0
    assert r["command"].startswith("python cli.py compare")
    for b in r["backends"].values():
        assert b["status"] in ("ok", "failed", "skipped")
        assert {"reason", "signature", "metrics", "artifacts", "suites", "timings"} <= set(b)
    md = (runs["out"] / "report.md").read_text()
    assert "test-crash" in md and "SIGABRT" in md and r["command"] in md


def test_native_generators_report_non_finite_logits(tiny_model, tmp_path):
    """Finite weights, NaN activations: the backends whose own loop (transformers generate, CTranslate2)
    never shows logits to the worker's guard are still failed with the reason, and the run completes."""
    from tests.fixtures.tiny_models import overflowing_copy

    model = overflowing_copy(tiny_model("marian"), tmp_path / "m")
    out = tmp_path / "run"
    rc = main(["compare", "--model", str(model), "--backends", "torch-fp32,ct2-fp32", "--suites", "quality",
               "--limit", "2", "--max-new-tokens", "6", "--out", str(out), "--cache-dir", str(tmp_path / "cache"),
               "--quiet"])
    assert rc in (0, 3)
    report = json.loads((out / "report.json").read_text())
    for name in ("torch-fp32", "ct2-fp32"):
        b = report["backends"][name]
        assert b["status"] == "failed" and "NonFiniteLogitsError" in b["reason"] and "NaN" in b["reason"], b
        assert "bleu" not in b["metrics"]
