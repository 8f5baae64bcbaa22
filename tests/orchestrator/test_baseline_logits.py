"""Golden logits: a baseline keeps each probe source's top-k first-step logits and each teacher-forced position's
top-k step logits; a later run is compared on them."""
from __future__ import annotations

import copy
import json

import numpy as np
import pytest

from orchestrator.attribution import attribute
from orchestrator.baseline import compare_to_baseline, load_baseline, save_baseline
from orchestrator.baseline_logits import read_first_step, read_teacher_forced
from orchestrator.report_html import render_html
from orchestrator.report_tables import baseline_table
from orchestrator.suites.split_generation import TF_LOGITS, TF_PREFIX, prefix_digest
from tests.orchestrator.suites.conftest import measured_report


@pytest.fixture(scope="module")
def report(tiny_model, tmp_path_factory):
    rep = copy.deepcopy(measured_report(tiny_model, tmp_path_factory)[0])
    attribute(rep, {})
    return rep


@pytest.fixture(scope="module")
def run_dir(tiny_model, tmp_path_factory):
    return measured_report(tiny_model, tmp_path_factory)[2]


def _text(res) -> str:
    return " ".join(r[1] for r in baseline_table({"baseline": {**res, "file": "b.json"}})[2])


def test_read_first_step_is_what_the_suite_saved(report, run_dir):
    logits, problems = read_first_step(report, run_dir)
    assert problems == [] and set(logits) == {n for n, b in report["backends"].items() if b["status"] == "ok"}
    s = report["backends"]["sim-int8"]["suites"]["source-sensitivity"]
    got = logits["sim-int8"]
    assert got["logits"].shape[0] == s["n_sources"] and got["logits"].dtype == np.float32
    assert (got["sources_sha256"], got["batch_size"]) == (s["sources_sha256"], s["batch_size"])
    np.testing.assert_array_equal(got["logits"], np.load(run_dir / "backends" / "sim-int8" / s["logits"]))


def test_saved_top_k_reloads_bit_exact_and_the_same_run_compares_exact(report, run_dir, tmp_path):
    logits, _ = read_first_step(report, run_dir)
    save_baseline(report, tmp_path / "b.json", None, logits)
    base = load_baseline(tmp_path / "b.json")  # through JSON text: the values must survive it exactly
    saved = base["backends"]["sim-int8"]["first_step"]
    x = logits["sim-int8"]["logits"]
    k = report["backends"]["sim-int8"]["suites"]["source-sensitivity"]["top_k"]
    assert saved["k"] == k and len(saved["ids"]) == x.shape[0]
    row = [int(t) for t in saved["ids"][0].split()]
    assert row[0] == int(x[0].argmax()) and [np.float32(v) for v in saved["values"][0].split()] == list(x[0, row])
    res = compare_to_baseline(report, base, {}, None, logits)
    assert res["ok"] and all(r["exact"] and r["max_abs_diff"] == 0 and r["argmax_changed"] == 0
                             for r in res["first_step"].values())
    assert f"bit-identical to the baseline's: {', '.join(sorted(logits))}" in _text(res)
    json.dumps(res)


def test_moved_logits_are_measured_and_gated_only_when_named(report, run_dir, tmp_path):
    logits, _ = read_first_step(report, run_dir)
    base = save_baseline(report, tmp_path / "b.json", None, logits)
    cur = copy.deepcopy(logits)
    x = cur["sim-int8"]["logits"]
    top = int(x[2].argmax())
    x[2, top] += 0.25  # numbers move, the first token does not
    x[4, int(np.argsort(-x[4])[1])] = x[4].max() + 1.0  # the runner-up overtakes: the first token changes
    res = compare_to_baseline(report, base, {}, None, cur)
    r = res["first_step"]["sim-int8"]
    assert res["ok"] and not r["exact"] and r["argmax_changed"] == 1 and r["first_argmax_changed"] == [5]
    assert r["max_abs_diff"] > 0.25
    assert "sim-int8: max |Δ|" in _text(res) and "first token changed on 1 (first: source 5)" in _text(res)
    assert "first-step logits vs the baseline" in render_html({**report, "baseline": res})
    # named in [tolerances]: beyond abs + rel * |saved| is a regression naming the logit, within it is not
    regs = compare_to_baseline(report, base, {"first_step_logit_diff": 0.1}, None, cur)["regressions"]
    assert [(g["backend"], g["metric"]) for g in regs] == [("sim-int8", "first_step_logit_diff")]
    assert regs[0]["current"] == r["max_abs_diff"] and "saved logits moved beyond the tolerance" in regs[0]["reason"]
    assert compare_to_baseline(report, base, {"first_step_logit_diff": 100.0}, None, cur)["ok"]
    only_small = copy.deepcopy(logits)
    only_small["sim-int8"]["logits"][2, top] += 0.25
    assert not compare_to_baseline(report, base, {"first_step_logit_diff": 0.1}, None, only_small)["ok"]
    assert compare_to_baseline(report, base, {"first_step_logit_diff": {"abs": 0.1, "rel": 1.0}}, None,
                               only_small)["ok"]


def test_other_probes_are_not_compared_and_say_why(report, run_dir, tmp_path):
    logits, _ = read_first_step(report, run_dir)
    base = save_baseline(report, tmp_path / "b.json", None, logits)
    for change, why in ((lambda e: e.update(sources_sha256="other"), "other probe sources"),
                        (lambda e: e.update(batch_size=(e["batch_size"] or 0) + 1), "probe batch size"),
                        (lambda e: e.update(logits=e["logits"][:-1]), "saved rows")):
        cur = copy.deepcopy(logits)
        change(cur["sim-int8"])
        r = compare_to_baseline(report, base, {"first_step_logit_diff": 0}, None, cur)
        assert r["first_step"]["sim-int8"]["comparable"] is False and why in r["first_step"]["sim-int8"]["reason"]
        assert "first_step_logit_diff" not in {g["metric"] for g in r["regressions"]}
    saved_at, other = copy.deepcopy(report), copy.deepcopy(report)
    saved_at["settings"]["max_source_length"], other["settings"]["max_source_length"] = 64, 7
    at64 = save_baseline(saved_at, tmp_path / "s.json", None, logits)
    r = compare_to_baseline(other, at64, {}, None, logits)["first_step"]["sim-int8"]
    assert r["comparable"] is False and "max_source_length" in r["reason"]
    gone = {n: e for n, e in logits.items() if n != "sim-int8"}
    assert "no readable" in compare_to_baseline(report, base, {}, None, gone)["first_step"]["sim-int8"]["reason"]
    # a baseline saved without logits compares none
    assert compare_to_baseline(report, save_baseline(report, tmp_path / "m.json"), {}, None, logits)["first_step"] == {}


def test_unreadable_logits_are_named(report, run_dir, tmp_path):
    import shutil

    copy_dir = tmp_path / "run"
    shutil.copytree(run_dir / "backends", copy_dir / "backends")
    name = report["backends"]["sim-int8"]["suites"]["source-sensitivity"]["logits"]
    (copy_dir / "backends" / "sim-int8" / name).write_bytes(b"not a npy file")
    np.save(copy_dir / "backends" / "torch-fp32" / name, np.arange(4))
    logits, problems = read_first_step(report, copy_dir)
    assert "sim-int8" not in logits and "torch-fp32" not in logits and "torch-fp32-split" in logits
    assert any(p.startswith("sim-int8: cannot read its first-step logits") for p in problems)
    assert any(p.startswith("torch-fp32:") and "[sources, vocabulary]" in p for p in problems)


def test_teacher_forced_logits_are_kept_per_valid_position_and_compared(report, run_dir, tmp_path):
    steps, problems = read_teacher_forced(report, run_dir)
    assert problems == [] and set(steps) == {n for n, b in report["backends"].items() if b["status"] == "ok"}
    d = run_dir / "backends" / "sim-int8"
    saved = np.load(d / TF_LOGITS)
    valid = np.asarray(json.loads((d / TF_PREFIX).read_text())["valid"], dtype=bool)
    got = steps["sim-int8"]
    np.testing.assert_array_equal(got["logits"], saved[valid])
    assert got["logits"].shape[0] == int(valid.sum())  # one row per valid position
    assert got["batch_size"] == saved.shape[0] and got["sources_sha256"] == prefix_digest(
        np.asarray(json.loads((d / TF_PREFIX).read_text())["ids"]), valid)

    base = save_baseline(report, tmp_path / "b.json", None, None, steps)
    base = load_baseline(tmp_path / "b.json")
    kept = base["backends"]["sim-int8"]["teacher_forced"]
    assert kept["k"] == 5 and len(kept["ids"]) == int(valid.sum())
    res = compare_to_baseline(report, base, {}, None, None, steps)
    assert res["ok"] and all(r["exact"] for r in res["teacher_forced"].values()) and res["first_step"] == {}
    assert "bit-identical to the baseline's" in " ".join(r[1] for r in baseline_table(
        {"baseline": {**res, "file": "b.json"}})[2] if r[0] == "teacher-forced logits")

    cur = copy.deepcopy(steps)
    x = cur["sim-int8"]["logits"]
    x[3, int(np.argsort(-x[3])[1])] = x[3].max() + 1.0  # the runner-up overtakes at the 4th position
    res = compare_to_baseline(report, base, {}, None, None, cur)
    r = res["teacher_forced"]["sim-int8"]
    assert res["ok"] and r["argmax_changed"] == 1 and r["first_argmax_changed"] == [4]
    assert "top token changed at 1 (first: position 4)" in _text(res)
    assert "teacher-forced logits vs the baseline" in render_html({**report, "baseline": res})
    regs = compare_to_baseline(report, base, {"teacher_forced_logit_diff": 0.1}, None, None, cur)["regressions"]
    assert [(g["backend"], g["metric"]) for g in regs] == [("sim-int8", "teacher_forced_logit_diff")]
    assert "on position 4" in regs[0]["reason"]
    # the first-step gate does not gate these, and other prefixes are not compared
    assert compare_to_baseline(report, base, {"first_step_logit_diff": 0.1}, None, None, cur)["ok"]
    other = copy.deepcopy(steps)
    other["sim-int8"]["sources_sha256"] = "other"
    r = compare_to_baseline(report, base, {"teacher_forced_logit_diff": 0}, None, None, other)
    assert r["ok"] and "other teacher-forced prefixes" in r["teacher_forced"]["sim-int8"]["reason"]
    gone = {n: e for n, e in steps.items() if n != "sim-int8"}
    assert "no readable teacher-forced" in compare_to_baseline(report, base, {}, None, None, gone)[
        "teacher_forced"]["sim-int8"]["reason"]


def test_unreadable_teacher_forced_logits_are_named(report, run_dir, tmp_path):
    import shutil

    copy_dir = tmp_path / "run"
    shutil.copytree(run_dir / "backends", copy_dir / "backends")
    (copy_dir / "backends" / "sim-int8" / TF_LOGITS).write_bytes(b"not a npy file")
    np.save(copy_dir / "backends" / "torch-fp32" / TF_LOGITS, np.zeros((2, 3), np.float32))
    steps, problems = read_teacher_forced(report, copy_dir)
    assert "sim-int8" not in steps and "torch-fp32" not in steps and "torch-fp32-split" in steps
    assert any(p.startswith("sim-int8: cannot read its teacher-forced logits") for p in problems)
    assert any(p.startswith("torch-fp32:") and "[sentences, steps, vocabulary]" in p for p in problems)


def test_teacher_forced_rows_are_the_valid_positions_only(report, run_dir, tmp_path):
    import shutil

    copy_dir = tmp_path / "run"
    shutil.copytree(run_dir / "backends", copy_dir / "backends")
    prefix = copy_dir / "backends" / "sim-int8" / TF_PREFIX
    saved = json.loads(prefix.read_text())
    saved["valid"][1][-2:] = [False, False]  # a shorter reference: its last positions are padding
    prefix.write_text(json.dumps(saved))
    before, _ = read_teacher_forced(report, run_dir)
    steps, problems = read_teacher_forced(report, copy_dir)
    logits = np.load(copy_dir / "backends" / "sim-int8" / TF_LOGITS)
    valid = np.asarray(saved["valid"], dtype=bool)
    assert problems == [] and steps["sim-int8"]["logits"].shape[0] == int(valid.sum()) == valid.size - 2
    np.testing.assert_array_equal(steps["sim-int8"]["logits"], logits[valid])
    assert steps["sim-int8"]["sources_sha256"] != before["sim-int8"]["sources_sha256"]  # other rows: not comparable
