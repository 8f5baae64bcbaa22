"""Target selection under constraints, on the measured tiny-Marian report."""
from __future__ import annotations

import copy

import pytest

from backends.errors import InvalidInputError
from orchestrator.attribution import attribute
from orchestrator.selection import effective_constraints, select_targets
from tests.orchestrator.suites.conftest import measured_report


@pytest.fixture(scope="module")
def report(tiny_model, tmp_path_factory):
    rep, _, _ = measured_report(tiny_model, tmp_path_factory)
    rep = copy.deepcopy(rep)
    attribute(rep, {})
    return rep


def test_default_constraints_rank_by_latency(report):
    sel = select_targets(report, {"rank_tolerance": {}})  # exact latencies decide
    feasible = {"torch-fp32", "torch-fp32-split", "sim-int8"}
    assert set(sel["ranking"]) == feasible
    assert sel["chosen"] == sel["ranking"][0] and sel["fallback_chain"] == sel["ranking"][1:]
    p50 = [report["backends"][n]["metrics"]["latency_p50_ms"] for n in sel["ranking"]]
    assert p50 == sorted(p50)
    assert "BLEU drop" in sel["rejected"]["sim-int8-naive"] or "source-blind" in sel["rejected"]["sim-int8-naive"]
    assert "BLEU drop" in sel["rejected"]["sim-int8-raw"]


def test_rank_by_follows_each_metrics_declared_direction(report):
    """Agreement metrics rank the most agreeing backend first, error metrics the smallest: as the suites
    declare, not a list kept in selection."""
    rep = copy.deepcopy(report)
    c = {"require_verdict_pass": False, "max_bleu_drop": -1, "allow_source_blind": True, "rank_tolerance": {}}
    for i, name in enumerate(("torch-fp32-split", "sim-int8", "sim-int8-raw")):
        rep["backends"][name]["metrics"].update({"token_agreement_vs_reference": 0.5 + 0.1 * i,
                                                 "decisive_flip_rate": 0.1 * i})
    names = ["torch-fp32-split", "sim-int8", "sim-int8-raw"]
    sel = select_targets(rep, {**c, "backends": names, "rank_by": ["token_agreement_vs_reference"]})
    assert sel["ranking"] == names[::-1]
    sel = select_targets(rep, {**c, "backends": names, "rank_by": ["decisive_flip_rate"]})
    assert sel["ranking"] == names


def test_int8_only_picks_the_passing_int8(report):
    sel = select_targets(report, {"precision": "int8-weights"})
    assert sel["chosen"] == "sim-int8" and sel["fallback_chain"] == []
    assert "not INT8" in sel["rejected"]["torch-fp32"]


def test_source_blind_rejected_unless_allowed(report):
    sel = select_targets(report, {"max_bleu_drop": -1, "precision": "int8-weights"})
    assert "source-blind" in sel["rejected"]["sim-int8-naive"]
    loose = {"max_bleu_drop": -1, "precision": "int8-weights", "allow_source_blind": True}
    sel = select_targets(report, loose)  # still fails the run's [bar], so the verdict keeps it out
    assert "fails the [bar]: verdict 'calibration'" in sel["rejected"]["sim-int8-naive"]
    sel = select_targets(report, {**loose, "require_verdict_pass": False})
    assert "sim-int8-naive" in sel["ranking"]


def test_full_int8_needs_an_op_audit(report):
    rep = copy.deepcopy(report)
    sel = select_targets(rep, {"precision": "full-int8"})
    assert sel["chosen"] is None and "op audit" in sel["rejected"]["sim-int8"]
    rep["backends"]["sim-int8"]["artifacts"]["full_int8"] = True
    rep["backends"]["sim-int8-raw"]["artifacts"]["full_int8"] = False
    sel = select_targets(rep, {"precision": "full-int8", "max_bleu_drop": -1})
    assert sel["chosen"] == "sim-int8"
    assert "float ops" in sel["rejected"]["sim-int8-raw"]


def test_integer_only_admits_int16_activations(report):
    """A mixed int8/int16 graph is integer-only but not full INT8: the two constraints differ."""
    rep = copy.deepcopy(report)
    art = rep["backends"]["sim-int8"]["artifacts"]
    art.update(full_int8=False, integer_only=True)
    rep["backends"]["sim-int8-raw"]["artifacts"].update(full_int8=False, integer_only=False)
    assert "non-int8 activations" in select_targets(rep, {"precision": "full-int8"})["rejected"]["sim-int8"]
    sel = select_targets(rep, {"precision": "integer-only", "max_bleu_drop": -1})
    assert sel["chosen"] == "sim-int8"
    assert "integer-only required" in sel["rejected"]["sim-int8-raw"]


def test_infeasible_limits_and_runtime_filter(report):
    sel = select_targets(report, {"runtimes": ["tflite"]})
    assert sel["chosen"] is None and all("not allowed" in r for r in sel["rejected"].values())
    sel = select_targets(report, {"max_bytes": 1})
    assert sel["chosen"] is None and "max_bytes" in sel["rejected"]["torch-fp32"]
    sel = select_targets(report, {"max_p90_latency_ms": 1e-6})
    assert sel["chosen"] is None and "p90 latency" in sel["rejected"]["sim-int8"]
    rep = copy.deepcopy(report)
    rep["backends"]["torch-fp32"]["status"] = "failed"
    rep["backends"]["torch-fp32"]["reason"] = "boom"
    assert "failed: boom" in select_targets(rep, {})["rejected"]["torch-fp32"]


def test_unmeasured_latency_rejects(report):
    rep = copy.deepcopy(report)
    del rep["backends"]["sim-int8"]["metrics"]["latency_p90_ms"]
    sel = select_targets(rep, {"max_p90_latency_ms": 1e9})
    assert "not measured" in sel["rejected"]["sim-int8"]


def _with_metrics(report, values):
    rep = copy.deepcopy(report)
    for name, (p50, size, exact) in values.items():
        rep["backends"][name]["metrics"].update(latency_p50_ms=p50, bytes=size, exact_match_vs_reference=exact)
    return rep


def test_rank_tolerance_turns_near_ties_into_a_quality_decision(report):
    names = ("torch-fp32", "torch-fp32-split", "sim-int8")
    # 5% apart in p50, 2% in size: a tie under the default tolerances, so agreement decides
    rep = _with_metrics(report, {"torch-fp32": (20.0, 1_000_000, 0.70), "torch-fp32-split": (21.0, 1_020_000, 0.90),
                                 "sim-int8": (40.0, 500_000, 0.99)})
    sel = select_targets(rep, {"backends": list(names)})
    assert sel["ranking"] == ["torch-fp32-split", "torch-fp32", "sim-int8"]
    assert sel["decided_by"] == "exact_match_vs_reference"
    assert sel["rank_tolerance"] == {"latency_p50_ms": "10%", "bytes": "5%"}
    # without tolerances the exact p50 decides
    exact = select_targets(rep, {"backends": list(names), "rank_tolerance": {}})
    assert exact["ranking"] == ["torch-fp32", "torch-fp32-split", "sim-int8"] and exact["decided_by"] == "latency_p50_ms"
    # a clear speed difference is never overridden by quality; size breaks a latency tie first
    rep = _with_metrics(report, {"torch-fp32": (20.0, 1_000_000, 0.70), "torch-fp32-split": (21.0, 900_000, 0.60),
                                 "sim-int8": (30.0, 500_000, 0.99)})
    sel = select_targets(rep, {"backends": list(names)})
    assert sel["ranking"] == ["torch-fp32-split", "torch-fp32", "sim-int8"] and sel["decided_by"] == "bytes"
    # an absolute tolerance, and a full tie left to the name
    rep = _with_metrics(report, {"torch-fp32": (20.0, 1_000_000, 0.9), "torch-fp32-split": (20.0, 1_000_000, 0.9),
                                 "sim-int8": (22.0, 1_000_000, 0.95)})
    sel = select_targets(rep, {"backends": list(names), "rank_tolerance": {"latency_p50_ms": {"abs": 2.5}}})
    assert sel["chosen"] == "sim-int8" and sel["decided_by"] == "exact_match_vs_reference"
    assert sel["fallback_chain"] == ["torch-fp32", "torch-fp32-split"]
    sel = select_targets(rep, {"backends": ["torch-fp32", "torch-fp32-split"]})
    assert sel["chosen"] == "torch-fp32" and sel["decided_by"] == "name"
    assert select_targets(rep, {"backends": ["sim-int8"]})["decided_by"] is None


def test_constraint_validation():
    with pytest.raises(InvalidInputError, match="unknown"):
        effective_constraints({"max_latency": 3})
    with pytest.raises(InvalidInputError, match="precision"):
        effective_constraints({"precision": "int4"})
    with pytest.raises(InvalidInputError, match="list of strings"):
        effective_constraints({"runtimes": [1]})
    assert effective_constraints({"runtimes": "tflite"})["runtimes"] == ["tflite"]
    with pytest.raises(InvalidInputError, match="rank_tolerance latency_p90_ms: cannot read 'ten%'"):
        effective_constraints({"rank_tolerance": {"latency_p90_ms": "ten%"}})
    with pytest.raises(InvalidInputError, match="rank_tolerance must be a table"):
        effective_constraints({"rank_tolerance": "10%"})


def test_mobile_matrix_constraints_load():
    from pathlib import Path

    from orchestrator.matrix import load_constraints

    c = effective_constraints(load_constraints(Path(__file__).resolve().parents[2] / "matrices" / "mobile-int8.toml"))
    assert c["runtimes"] == ["tflite"] and c["precision"] == "full-int8"


def test_size_falls_back_to_checkpoint_weights_without_speed(report):
    rep = copy.deepcopy(report)
    for b in rep["backends"].values():
        b["metrics"].pop("bytes", None)
        b["metrics"].pop("latency_p90_ms", None)
        b["metrics"].pop("latency_p50_ms", None)
    real = rep["backends"]["torch-fp32"]["artifacts"]["bytes"]
    assert real > 100_000  # the artifacts' bytes are used without the speed suite
    sel = select_targets(rep, {"max_bytes": real - 1})
    assert f"{real} bytes > max_bytes" in sel["rejected"]["torch-fp32"]
    # an artifact that only points at the checkpoint: its weights count
    rep["backends"]["torch-fp32"]["artifacts"].update(bytes=10, weights_bytes=real)
    assert f"{real} bytes > max_bytes" in select_targets(rep, {"max_bytes": real - 1})["rejected"]["torch-fp32"]


def test_selection_follows_the_bar_by_default(report):
    """A stricter [bar] that sim-int8 fails keeps it out of the selection (the reason names its verdict);
    ``require_verdict_pass = false`` ranks it on the constraints alone; a report without verdicts selects
    nothing by default and says why."""
    rep = copy.deepcopy(report)
    rep["backends"]["sim-int8"]["metrics"]["exact_match_vs_reference"] = 0.7
    attribute(rep, {"min_int8_agreement": 0.8})
    kind = rep["backends"]["sim-int8"]["verdict"]["kind"]
    assert kind != "pass"
    sel = select_targets(rep, {"precision": "int8-weights"})
    assert sel["chosen"] is None
    assert f"fails the [bar]: verdict '{kind}'" in sel["rejected"]["sim-int8"]
    assert select_targets(rep, {"precision": "int8-weights", "require_verdict_pass": False})["chosen"] == "sim-int8"
    assert select_targets(rep, {})["chosen"] in {"torch-fp32", "torch-fp32-split"}  # FP32 still passes
    for b in rep["backends"].values():
        b.pop("verdict", None)
    sel = select_targets(rep, {})
    assert sel["chosen"] is None and "no verdict" in sel["rejected"]["torch-fp32"]
