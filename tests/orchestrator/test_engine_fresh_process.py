"""A backend whose artifacts are built in this run measures its suites in a fresh process: the
memory a conversion leaves behind must not count as the runtime's peak RSS."""
import json
import re

import pytest

from orchestrator.cli_app import main


def _run(model, out, cache):
    argv = ["compare", "--model", str(model), "--backends", "torch-fp32", "--limit", "3", "--max-new-tokens", "6",
            "--suites", "quality,speed", "--timeout", "240", "--out", str(out), "--cache-dir", str(cache), "--quiet"]
    assert main(argv) in (0, 3)
    report = json.loads((out / "report.json").read_text())
    log = (out / "backends" / "torch-fp32" / "worker.log").read_text()
    pids = [int(p) for p in re.findall(r"=== seqquant worker for torch-fp32 pid (\d+)", log)]
    suite_pids = {s: json.loads((out / "backends" / "torch-fp32" / "suites" / f"{s}.json").read_text())["pid"]
                  for s in ("quality", "speed")}
    return report["backends"]["torch-fp32"], pids, suite_pids


@pytest.fixture(scope="module")
def runs(tiny_model, tmp_path_factory):
    base = tmp_path_factory.mktemp("fresh")
    cold = _run(tiny_model("marian"), base / "cold", base / "cache")
    warm = _run(tiny_model("marian"), base / "warm", base / "cache")  # new run dir, artifacts cached
    return cold, warm


def test_built_artifacts_then_suites_in_a_new_process(runs):
    (rec, pids, suite_pids), _ = runs
    assert rec["status"] == "ok"
    assert len(pids) == 2 and pids[0] != pids[1], pids  # the build process, then the suites' process
    assert set(suite_pids.values()) == {pids[1]}
    t = rec["timings"]
    assert t["build_wall_seconds"] > 0 and t["build_prepare_seconds"] is not None
    assert t["wall_seconds"] >= t["build_wall_seconds"]
    assert rec["suites"]["speed"]["peak_rss_bytes"] > 0


def test_cached_artifacts_run_in_one_process(runs):
    _, (rec, pids, suite_pids) = runs
    assert rec["status"] == "ok" and len(pids) == 1
    assert set(suite_pids.values()) == {pids[0]}
    assert "build_wall_seconds" not in rec["timings"]
