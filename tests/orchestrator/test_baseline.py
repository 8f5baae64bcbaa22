"""Baselines: save a measured report, gate a later report on it."""
from __future__ import annotations

import copy
import json

import pytest

from backends.errors import InvalidInputError
from orchestrator.attribution import attribute
from orchestrator.baseline import compare_to_baseline, load_baseline, parse_tolerance, save_baseline
from tests.orchestrator.suites.conftest import measured_report


@pytest.fixture(scope="module")
def report(tiny_model, tmp_path_factory):
    rep, _, _ = measured_report(tiny_model, tmp_path_factory)
    rep = copy.deepcopy(rep)
    attribute(rep, {})
    return rep


def test_roundtrip_same_report_is_ok(report, tmp_path):
    path = tmp_path / "base.json"
    save_baseline(report, path)
    base = load_baseline(path)
    assert base["backends"]["sim-int8"]["metrics"]["bleu"] == report["backends"]["sim-int8"]["metrics"]["bleu"]
    assert base["backends"]["sim-int8"]["signature"]["backend"] == "sim-int8"
    res = compare_to_baseline(report, base, {})
    assert res["ok"] and res["regressions"] == []
    assert res["deltas"]["sim-int8"]["bleu"]["delta"] == 0
    json.dumps(res)


def test_bleu_drop_beyond_tolerance_is_a_regression(report, tmp_path):
    base = json.loads(json.dumps(save_baseline(report, tmp_path / "b.json")))
    cur = copy.deepcopy(report)
    # the current run's sim-int8 row is the measured raw-boundary row (a real degradation)
    cur["backends"]["sim-int8"]["metrics"] = dict(report["backends"]["sim-int8-raw"]["metrics"])
    cur["backends"]["sim-int8"]["verdict"] = report["backends"]["sim-int8-raw"]["verdict"]
    res = compare_to_baseline(cur, base, {"bleu": 0.5})
    assert not res["ok"]
    regs = {(r["backend"], r["metric"]) for r in res["regressions"]}
    assert ("sim-int8", "bleu") in regs and ("sim-int8", "verdict") in regs
    # a tolerance wide enough accepts the BLEU change (the verdict change is still reported)
    res = compare_to_baseline(cur, base, {"bleu": 1000, "chrf": 1000, "exact_match_vs_reference": 1})
    assert ("sim-int8", "bleu") not in {(r["backend"], r["metric"]) for r in res["regressions"]}


def test_latency_relative_tolerance(report, tmp_path):
    base = save_baseline(report, tmp_path / "b.json")
    cur = copy.deepcopy(report)
    m = cur["backends"]["torch-fp32-split"]["metrics"]
    m["latency_p90_ms"] = m["latency_p90_ms"] * 1.2
    assert compare_to_baseline(cur, base, {"latency_p90_ms": "25%"})["ok"]
    m["latency_p90_ms"] = base["backends"]["torch-fp32-split"]["metrics"]["latency_p90_ms"] * 1.5
    res = compare_to_baseline(cur, base, {"latency_p90_ms": "25%"})
    assert [r["metric"] for r in res["regressions"]] == ["latency_p90_ms"]


def test_missing_backend_and_fingerprint(report, tmp_path):
    base = save_baseline(report, tmp_path / "b.json")
    cur = copy.deepcopy(report)
    del cur["backends"]["torch-fp32-split"]
    cur["data"]["fingerprint"] = "other"
    res = compare_to_baseline(cur, base, {})
    assert res["missing_backends"] == ["torch-fp32-split"]
    metrics = {r["metric"] for r in res["regressions"]}
    assert {"status", "data_fingerprint"} <= metrics and not res["fingerprints"]["match"]


def test_signature_changes_recorded(report, tmp_path):
    base = save_baseline(report, tmp_path / "b.json")
    cur = copy.deepcopy(report)
    cur["backends"]["sim-int8"]["signature"]["runtime_version"] = "99.0"
    res = compare_to_baseline(cur, base, {})
    assert res["ok"] and res["signature_changes"]["sim-int8"]["runtime_version"][1] == "99.0"
    # the same artifacts run by other LiteRT kernels: a signature change too
    cur["backends"]["sim-int8"]["signature"].setdefault("settings", {})["kernels"] = "reference"
    res = compare_to_baseline(cur, base, {})
    assert res["signature_changes"]["sim-int8"]["kernels"] == [None, "reference"]


def test_tolerance_parsing_and_bad_files(tmp_path):
    assert parse_tolerance("bleu", 0.5) == {"direction": "higher", "abs": 0.5}
    assert parse_tolerance("bleu", -0.5) == {"direction": "higher", "abs": 0.5}
    assert parse_tolerance("latency_p90_ms", "25%") == {"direction": "lower", "rel": 0.25}
    assert parse_tolerance("x", {"abs": 1, "direction": "lower"}) == {"direction": "lower", "abs": 1.0}
    with pytest.raises(InvalidInputError):
        parse_tolerance("bleu", "lots")
    with pytest.raises(InvalidInputError):
        parse_tolerance("bleu", {"absolute": 1})
    bad = tmp_path / "x.json"
    bad.write_text("{}")
    with pytest.raises(InvalidInputError, match="not a seqquant baseline"):
        load_baseline(bad)
    with pytest.raises(InvalidInputError, match="does not exist; create one with `python cli.py baseline save"):
        load_baseline(tmp_path / "missing.json")
    bad.write_bytes(b"\xff\xfe not text")
    with pytest.raises(InvalidInputError, match="is not a JSON baseline file"):
        load_baseline(bad)
    with pytest.raises(InvalidInputError, match="is not a JSON baseline file"):
        load_baseline(tmp_path)  # a directory
    # an empty baseline (what `baseline save` wrote for a non-report before) would pass any run
    bad.write_text(json.dumps({"schema": "seqquant-baseline/1", "backends": {}}))
    with pytest.raises(InvalidInputError, match="has no backends"):
        load_baseline(bad, where="--baseline x.json")


def test_a_report_without_backends_is_not_saved(tmp_path):
    path = tmp_path / "b.json"
    for rep in ({"x": 1}, {"backends": {}}, {"backends": []}):
        with pytest.raises(InvalidInputError, match="no backends"):
            save_baseline(rep, path)
    assert not path.exists()


def test_save_replaces_a_baseline_but_never_another_file(report, tmp_path):
    path = tmp_path / "b.json"
    save_baseline(report, path)
    first = json.loads(path.read_text())
    save_baseline(report, path)  # updating a baseline: the normal flow
    assert json.loads(path.read_text())["backends"] == first["backends"]
    other = tmp_path / "report.json"
    other.write_text('{"schema_version": 1}')
    with pytest.raises(InvalidInputError, match="exists and is not a seqquant baseline: not overwriting it"):
        save_baseline(report, other)
    assert other.read_text() == '{"schema_version": 1}'
    with pytest.raises(InvalidInputError, match="is a directory"):
        save_baseline(report, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.json", "report.json"]  # no .tmp left
