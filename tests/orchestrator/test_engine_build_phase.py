"""The build phase: artifacts built ``build_jobs`` at a time in their own processes before the suites run one
backend at a time. Real backends (PyTorch split, CTranslate2) on the tiny Marian model, plus plugin backends
that fail while building (a Python error, a segfault) or are skipped by preflight."""
import json
import threading
import time

import pytest

from backends.base import sha256_file
from backends.machine import build_identity, describe
from orchestrator.cli_app import main
from orchestrator.engine import build_jobs
from orchestrator.isolation import run_isolated
from tests.fixtures.faulty_backends import register_faulty_backends

GOOD = ["torch-fp32-split", "ct2-fp32"]
BACKENDS = GOOD + ["test-raise-prepare", "test-segfault-prepare", "test-preflight-skip"]


@pytest.fixture(scope="module")
def runs(tiny_model, tmp_path_factory):
    pytest.importorskip("ctranslate2")
    register_faulty_backends()
    out = tmp_path_factory.mktemp("build_phase") / "run"
    argv = ["compare", "--model", str(tiny_model("marian")), "--backends", ",".join(BACKENDS), "--limit", "3",
            "--max-new-tokens", "6", "--suites", "quality", "--reference", "torch-fp32-split",
            "--timeout", "240", "--out", str(out), "--quiet"]
    rc1 = main(argv + ["--build-jobs", "2"])
    first = json.loads((out / "report.json").read_text())
    logs = {n: (out / "backends" / n / "worker.log").read_text() for n in GOOD}
    rc2 = main(argv + ["--build-jobs", "1"])
    second = json.loads((out / "report.json").read_text())
    return dict(rc1=rc1, rc2=rc2, first=first, second=second, logs=logs, out=out)


def test_built_in_the_build_phase_then_suites_in_their_own_process(runs):
    assert runs["rc1"] in (0, 3)
    for name in GOOD:
        b = runs["first"]["backends"][name]
        assert b["status"] == "ok", b.get("reason")
        assert b["artifacts"]["reused"] is False  # built in this run
        t = b["timings"]
        assert t["build_wall_seconds"] > 0 and t["wall_seconds"] >= t["build_wall_seconds"]
        assert b["metrics"]["bleu"] is not None
    assert runs["first"]["backends"]["ct2-fp32"]["metrics"]["exact_match_vs_reference"] == 1.0
    assert runs["first"]["run"]["parallel_builds"] == 2


def test_the_report_records_every_artifact_file_digest_and_the_machines(runs):
    # what a baseline compares: the bytes a backend ran, the same when the second run reuses them, the
    # machine that built them and the one that measured the run
    here = describe()
    assert runs["first"]["machine"] == here
    for name in GOOD:
        art = runs["first"]["backends"][name]["artifacts"]
        assert art["sha256"] == {role: sha256_file(path) for role, path in art["files"].items()}, name
        assert runs["second"]["backends"][name]["artifacts"]["sha256"] == art["sha256"], name
        assert art["built_on"] == build_identity(here), name


def test_one_build_process_and_one_suite_process(runs):
    # quality alone never asks for a fresh suite process: two processes means the build phase built
    for name, log in runs["logs"].items():
        assert log.count(f"=== seqquant worker for {name}") == 2, name


def test_build_failures_are_recorded_and_do_not_stop_the_others(runs):
    b = runs["first"]["backends"]
    assert b["test-raise-prepare"]["status"] == "failed"
    assert "prepare failed" in b["test-raise-prepare"]["reason"] and "converter exploded" in b["test-raise-prepare"]["reason"]
    assert b["test-segfault-prepare"]["status"] == "failed" and "SIGSEGV" in b["test-segfault-prepare"]["reason"]
    assert b["test-segfault-prepare"]["exit"]["signal"] == "SIGSEGV"
    assert b["test-preflight-skip"]["status"] == "skipped"


def test_build_jobs_is_not_part_of_any_fingerprint(runs):
    # the same command with another --build-jobs reuses every finished result and retries the failures
    assert runs["rc2"] in (0, 3)
    run = runs["second"]["run"]
    assert set(GOOD) <= set(run["backends_reused"])
    assert {"test-raise-prepare", "test-segfault-prepare"} <= set(run["backends_run"])
    assert runs["second"]["settings"]["build_jobs"] == 1 and runs["second"]["run"]["parallel_builds"] == 1


def test_build_jobs_setting():
    assert build_jobs(3) == 3
    assert 1 <= build_jobs(0) <= 4


def _hang(conn, payload):
    conn.send(("started",))
    while True:
        time.sleep(60)


def test_run_isolated_stops_when_asked():
    stop = threading.Event()
    threading.Timer(1.0, stop.set).start()
    t0 = time.monotonic()
    out = run_isolated(_hang, None, timeout=120, stop=stop)
    assert out.interrupted and not out.ok and not out.timed_out
    assert time.monotonic() - t0 < 30 and "interrupted" in out.describe(120)
