"""Baselines: save a measured report, gate a later report on it."""
from __future__ import annotations

import copy
import json

import pytest

from backends.errors import InvalidInputError
from orchestrator.attribution import attribute
from orchestrator.baseline import compare_to_baseline, load_baseline, parse_tolerance, read_outputs, save_baseline
from orchestrator.report_html import render_html
from orchestrator.report_tables import baseline_table
from tests.orchestrator.suites.conftest import measured_report


@pytest.fixture(scope="module")
def report(tiny_model, tmp_path_factory):
    rep, _, _ = measured_report(tiny_model, tmp_path_factory)
    rep = copy.deepcopy(rep)
    attribute(rep, {})
    return rep


@pytest.fixture(scope="module")
def run_dir(tiny_model, tmp_path_factory):
    return measured_report(tiny_model, tmp_path_factory)[2]


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
    # each metric in the direction its suite declares, the baseline's own outputs_changed lower
    for metric in ("decisive_flip_rate", "flip_noise_scale", "numerics_defects", "cross_source_same_argmax",
                   "cpu_ms_p50", "outputs_changed"):
        assert parse_tolerance(metric, 0.01)["direction"] == "lower", metric
    for metric in ("token_agreement_vs_reference", "near_tie_divergence_share", "first_step_argmax_agreement"):
        assert parse_tolerance(metric, 0.01)["direction"] == "higher", metric
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


def test_golden_outputs_saved_and_compared_sentence_by_sentence(report, run_dir, tmp_path):
    outputs, problems = read_outputs(report, run_dir)
    assert problems == [] and set(outputs) == {n for n, b in report["backends"].items() if b["status"] == "ok"}
    base = save_baseline(report, tmp_path / "b.json", outputs)
    saved = load_baseline(tmp_path / "b.json")["backends"]["sim-int8"]["outputs"]
    assert saved["n"] == len(outputs["sim-int8"]) and saved["tokens"][0] == " ".join(map(str, outputs["sim-int8"][0]))
    res = compare_to_baseline(report, base, {}, outputs)
    assert res["ok"] and all(o["changed"] == 0 for o in res["outputs"].values())

    cur = copy.deepcopy(outputs)
    cur["sim-int8"][1] = cur["sim-int8"][1] + [7]
    res = compare_to_baseline(report, base, {}, cur)  # metrics level, one sentence flipped: reported, not gated
    o = res["outputs"]["sim-int8"]
    assert res["ok"] and (o["changed"], o["first_changed"]) == (1, [2])
    assert o["changed_fraction"] == round(1 / len(cur["sim-int8"]), 6)
    for spec, ok in ((0, False), ("0%", False), (0.99, True), ("99%", True)):
        res = compare_to_baseline(report, base, {"outputs_changed": spec}, cur)
        assert res["ok"] is ok, spec
    regs = compare_to_baseline(report, base, {"outputs_changed": 0}, cur)["regressions"]
    assert [(r["backend"], r["metric"]) for r in regs] == [("sim-int8", "outputs_changed")]
    reason = regs[0]["reason"]
    assert "outputs differ from the baseline's on 1 of" in reason and "first: sentence 2" in reason

    gated = {**compare_to_baseline(report, base, {}, cur), "file": "b.json"}
    text = " ".join(r[1] for r in baseline_table({"baseline": gated})[2])
    assert f"sim-int8: 1 of {len(cur['sim-int8'])} sentences changed" in text
    assert "identical to the baseline's on every sentence: sim-int8-naive" in text
    assert "sim-int8: 1 of" in render_html({**report, "baseline": gated})


def test_golden_outputs_not_comparable_is_said_not_gated(report, run_dir, tmp_path):
    outputs, _ = read_outputs(report, run_dir)
    base = save_baseline(report, tmp_path / "b.json", outputs)
    other = copy.deepcopy(report)
    other["settings"]["num_beams"] = 4
    res = compare_to_baseline(other, base, {"outputs_changed": 0}, outputs)
    o = res["outputs"]["sim-int8"]
    assert o["comparable"] is False and "num_beams 1 -> 4" in o["reason"]
    assert "outputs_changed" not in {r["metric"] for r in res["regressions"]}
    # the batch changes what a per-call-quantized backend generates (tflite-dynamic: 6 of 1000 sentences
    # differ between batch 1 and 32 on the default model): outputs at another batch size are not comparable
    other = copy.deepcopy(report)
    other["settings"]["batch_size"] = report["settings"]["batch_size"] + 1
    o = compare_to_baseline(other, base, {"outputs_changed": 0}, outputs)["outputs"]["sim-int8"]
    assert o["comparable"] is False and f"batch_size {report['settings']['batch_size']} -> " in o["reason"]
    short = {n: t[:-1] for n, t in outputs.items()}
    assert "saved sentences" in compare_to_baseline(report, base, {}, short)["outputs"]["sim-int8"]["reason"]
    gone = {n: t for n, t in outputs.items() if n != "sim-int8"}
    assert "no readable" in compare_to_baseline(report, base, {}, gone)["outputs"]["sim-int8"]["reason"]
    # a baseline saved without outputs (or before they were saved) compares metrics only
    assert compare_to_baseline(report, save_baseline(report, tmp_path / "m.json"), {}, outputs)["outputs"] == {}


def test_unreadable_outputs_are_named(report, run_dir, tmp_path):
    import shutil

    copy_dir = tmp_path / "run"
    shutil.copytree(run_dir / "backends", copy_dir / "backends")
    tokens = report["backends"]["sim-int8"]["suites"]["quality"]["tokens"]
    (copy_dir / "backends" / "sim-int8" / tokens).write_text("[[1, 2], 3]")
    (copy_dir / "backends" / "torch-fp32" / tokens).unlink()
    outputs, problems = read_outputs(report, copy_dir)
    assert "sim-int8" not in outputs and "torch-fp32" not in outputs and "torch-fp32-split" in outputs
    assert any(p.startswith("sim-int8:") and "list of token-id lists" in p for p in problems)
    assert any(p.startswith("torch-fp32:") and "cannot read" in p for p in problems)


def test_artifacts_compared_with_the_baselines_by_their_bytes(report, run_dir, tmp_path):
    """Same cache key, other bytes: the build depends on something the key does not hold (the machine). The
    default model's tflite-int8 was built into other bytes on another machine of the same kind, with the same
    code and versions, and kept 71.3% of FP32's outputs instead of 69.9%: outputs that change then are not the
    runtime's doing, and the report says which it is."""
    outputs, _ = read_outputs(report, run_dir)
    base = save_baseline(report, tmp_path / "b.json", outputs)
    art = report["backends"]["sim-int8"]["artifacts"]
    saved = load_baseline(tmp_path / "b.json")["backends"]["sim-int8"]["artifacts"]
    assert saved == {"cache_key": art["cache_key"], "sha256": art["sha256"], "built_on": art["built_on"]}
    assert art["sha256"] and art["built_on"]["isa"] is not None
    res = compare_to_baseline(report, base, {}, outputs)
    built = {n for n, b in report["backends"].items() if b["status"] == "ok" and b["artifacts"].get("sha256")}
    assert built >= {"sim-int8", "torch-fp32-split"}
    assert {n: a["kind"] for n, a in res["artifacts"].items()} == {n: "same" for n in built}
    text = " ".join(r[1] for r in baseline_table({"baseline": {**res, "file": "b.json"}})[2])
    assert f"the same bytes as the baseline's: {', '.join(sorted(built))}" in text

    cur, flipped = copy.deepcopy(report), copy.deepcopy(outputs)
    role = sorted(art["sha256"])[0]
    cur["backends"]["sim-int8"]["artifacts"]["sha256"][role] = "0" * 64
    flipped["sim-int8"][1] = flipped["sim-int8"][1] + [7]
    res = compare_to_baseline(cur, base, {}, flipped)
    a = res["artifacts"]["sim-int8"]
    assert (a["kind"], a["changed"], res["ok"]) == ("rebuilt", [role], True)  # said, not gated
    text = " ".join(r[1] for r in baseline_table({"baseline": {**res, "file": "b.json"}})[2])
    assert f"sim-int8: rebuilt from the same inputs (cache key {art['cache_key'][:12]}) into other bytes ({role})" in text
    assert "built on machines of the same description" in text  # this test built both
    assert "sim-int8: 1 of" in text and "the artifacts were rebuilt into other bytes" in text
    assert "rebuilt from the same inputs" in render_html({**cur, "baseline": res})
    # built where the CPU offers other instructions (ONEDNN_MAX_CPU_ISA=SSE41 alone rebuilds the default
    # model's tflite-int8 into other bytes): the note names the difference
    cur["backends"]["sim-int8"]["artifacts"]["built_on"] = {**art["built_on"], "isa": ["sse4_2", "avx512f"],
                                                            "dispatch_env": {"ONEDNN_MAX_CPU_ISA": "SSE41"}}
    note = compare_to_baseline(cur, base, {}, flipped)["artifacts"]["sim-int8"]["note"]
    assert "built on another machine: isa " in note and "+avx512f" in note and "ONEDNN_MAX_CPU_ISA" in note

    cur["backends"]["sim-int8"]["artifacts"]["cache_key"] = "f" * 64
    a = compare_to_baseline(cur, base, {}, flipped)["artifacts"]["sim-int8"]
    assert a["kind"] == "other-inputs" and f"cache key {art['cache_key'][:12]} -> ffffffffffff" in a["note"]
    # unchanged bytes but changed tokens: the runtime, its kernels or the machine changed them
    res = compare_to_baseline(report, base, {}, flipped)
    text = " ".join(r[1] for r in baseline_table({"baseline": {**res, "file": "b.json"}})[2])
    assert "sim-int8: 1 of" in text and "from the same artifact bytes: the runtime" in text
    # ... unless seqquant's own search loop changed: the signature says so and the cause names it
    cur = copy.deepcopy(report)
    cur["backends"]["sim-int8"]["signature"]["settings"]["host_loop"] = "shared, every row every step"
    res = compare_to_baseline(cur, base, {}, flipped)
    assert res["signature_changes"]["sim-int8"]["host_loop"] == [
        report["backends"]["sim-int8"]["signature"]["settings"]["host_loop"], "shared, every row every step"]
    text = " ".join(r[1] for r in baseline_table({"baseline": {**res, "file": "b.json"}})[2])
    assert "from the same artifact bytes, and seqquant's host loop changed" in text
    # a baseline from before host_loop was recorded: a runtime's own search loop is no change of seqquant's
    cur["backends"]["sim-int8"]["signature"]["settings"]["host_loop"] = "native"
    old_base = copy.deepcopy(base)
    old_base["backends"]["sim-int8"]["signature"]["settings"].pop("host_loop")
    assert "sim-int8" not in compare_to_baseline(cur, old_base, {}, flipped)["signature_changes"]
    # a baseline saved before digests were recorded compares no artifacts
    old = copy.deepcopy(base)
    for b in old["backends"].values():
        b.pop("artifacts", None)
    assert compare_to_baseline(report, old, {}, outputs)["artifacts"] == {}


def test_another_machine_is_named_and_qualifies_time_regressions(report, tmp_path):
    rep = copy.deepcopy(report)
    rep["machine"] = {"cpu": "AMD EPYC", "arch": "x86_64", "cores": 2, "isa": ["avx2", "fma"], "memory_gb": 23.5,
                      "os": "Linux", "python": "3.11.7", "dispatch_env": {}}
    base = save_baseline(rep, tmp_path / "b.json")
    assert load_baseline(tmp_path / "b.json")["machine"] == rep["machine"]
    res = compare_to_baseline(rep, base, {})
    assert res["machine"]["differences"] == []
    assert ["machine", "the same machine description as the baseline's"] in baseline_table({"baseline": res})[2]
    cur = copy.deepcopy(rep)
    cur["machine"].update(cpu="Intel Xeon", isa=["avx2", "fma", "avx512f"], cores=4)
    m = cur["backends"]["torch-fp32-split"]["metrics"]
    m["latency_p90_ms"] *= 2
    m["bleu"] -= 5
    res = compare_to_baseline(cur, base, {"latency_p90_ms": "25%", "bleu": 0.5})
    assert res["machine"]["differences"] == ["cpu AMD EPYC -> Intel Xeon", "cores 2 -> 4", "isa +avx512f"]
    reasons = {r["metric"]: r["reason"] for r in res["regressions"] if r["backend"] == "torch-fp32-split"}
    assert "measured on another machine: cpu AMD EPYC -> Intel Xeon" in reasons["latency_p90_ms"]
    assert "another machine" not in reasons["bleu"]  # accuracy does not belong to the machine
    rows = baseline_table({"baseline": res})[2]
    assert ["machine", "another machine than the baseline's: cpu AMD EPYC -> Intel Xeon; cores 2 -> 4; "
                       "isa +avx512f"] in rows
    assert "REGRESSION</b>; another machine than the baseline&#x27;s: cpu AMD EPYC -&gt; Intel Xeon" in render_html(
        {**cur, "baseline": res})


def test_results_reused_from_the_run_directory_are_said_not_measured_again(report, tmp_path):
    """Re-running the command a baseline was saved from reuses every stored result: the gate then checks the
    stored run, not the runtime as it is now (the default run: compare --baseline in 0.8 s, all identical)."""
    base = save_baseline(report, tmp_path / "b.json")
    assert compare_to_baseline(report, base, {})["reused"] == []
    cur = copy.deepcopy(report)
    cur["run"] = {"backends_run": ["sim-int8"], "backends_reused": ["torch-fp32", "torch-fp32-split", "other"]}
    res = compare_to_baseline(cur, base, {})
    assert res["reused"] == ["torch-fp32", "torch-fp32-split"] and res["ok"]  # said, not gated
    text = ("not measured again, results reused from the run directory: torch-fp32, torch-fp32-split; --force "
            "(or another --out) re-measures")
    assert ["reused", text] in baseline_table({"baseline": res})[2]
    assert "not measured again" in render_html({**cur, "baseline": res})
