"""Which time target a run is judged against: cold (all artifacts built), warm (all reused), or
neither (mixed: some built, some from the cache)."""
from __future__ import annotations

from orchestrator.benchmark import COLD_TARGET_S, WARM_TARGET_S, benchmark_summary, format_summary, run_kind


def _report(backends: dict, wall: float, ran: list[str], reused: list[str]) -> dict:
    return {"reference_backend": "a", "backends": backends,
            "run": {"wall_seconds": wall, "backends_run": ran, "backends_reused": reused}}


def _built(key: str) -> dict:
    return {"status": "ok", "metrics": {}, "artifacts": {"cache_key": key, "reused": False},
            "timings": {"build_wall_seconds": 12.0}}


def _cached(key: str) -> dict:
    return {"status": "ok", "metrics": {}, "artifacts": {"cache_key": key, "reused": True}, "timings": {}}


def test_all_built_is_cold():
    rep = _report({"a": _built("k1"), "b": _built("k2"), "skipped": {"status": "skipped", "metrics": {}}},
                  COLD_TARGET_S - 1, ["a", "b"], [])
    assert run_kind(rep) == ("cold", ["a", "b"], 2)
    s = benchmark_summary(rep)
    assert (s["run_kind"], s["time_target_seconds"], s["time_target_met"]) == ("cold", COLD_TARGET_S, True)
    assert "cold target" in format_summary(s) and "met" in format_summary(s)


def test_parallel_builds_are_reported():
    rep = _report({"a": _built("k1"), "b": _built("k2")}, 10, ["a", "b"], [])
    rep["run"]["parallel_builds"] = 2
    assert format_summary(benchmark_summary(rep)).endswith("artifacts built 2 at a time")


def test_cold_over_target_is_missed():
    s = benchmark_summary(_report({"a": _built("k1")}, COLD_TARGET_S + 1, ["a"], []))
    assert s["time_target_met"] is False and "MISSED" in format_summary(s)


def test_built_in_a_fresh_process_counts_as_built():
    # the suites ran in a second process that found the artifacts the first one built
    b = _built("k1")
    b["artifacts"]["reused"] = True
    assert run_kind(_report({"a": b}, 10, ["a"], []))[0] == "cold"


def test_some_reused_is_mixed_and_judged_against_neither_target():
    rep = _report({"a": _built("k1"), "b": _cached("k2")}, 100, ["a", "b"], [])
    assert run_kind(rep) == ("mixed", ["a"], 2)
    s = benchmark_summary(rep)
    assert s["time_target_seconds"] is None and s["time_target_met"] is None and not s["warm"]
    text = format_summary(s)
    assert "1 of 2 backends built" in text and "(a)" in text and "neither" in text and "MISSED" not in text


def test_everything_reused_is_warm():
    rep = _report({"a": _cached("k1")}, WARM_TARGET_S + 1, [], ["a"])
    s = benchmark_summary(rep)
    assert (s["run_kind"], s["warm"], s["time_target_seconds"], s["time_target_met"]) == \
        ("warm", True, WARM_TARGET_S, False)
