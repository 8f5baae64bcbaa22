"""The benchmark printer: which time target a run is judged against (cold: all artifacts built, warm: all
reused, neither: mixed), and that targets are judged only on runs that have what they are defined for."""
from __future__ import annotations

import json
import re

import pytest

import orchestrator.benchmark as benchmark
from orchestrator.benchmark import (COLD_TARGET_S, WARM_TARGET_S, benchmark_summary, format_summary, run_kind,
                                    time_target_gaps, verdict_gaps)
from orchestrator.matrix import MATRICES_DIR, load_matrix
from tests.orchestrator.test_console import minimal_report

BENCH = load_matrix(MATRICES_DIR / "benchmark.toml")


def _report(backends: dict, wall: float, ran: list[str], reused: list[str]) -> dict:
    return {"reference_backend": "a", "backends": backends,
            "run": {"wall_seconds": wall, "backends_run": ran, "backends_reused": reused}}


def _built(key: str) -> dict:
    return {"status": "ok", "metrics": {}, "artifacts": {"cache_key": key, "reused": False},
            "timings": {"build_wall_seconds": 12.0}}


def _cached(key: str) -> dict:
    return {"status": "ok", "metrics": {}, "artifacts": {"cache_key": key, "reused": True}, "timings": {}}


def _bench(wall: float, cached: tuple[str, ...] = (), warm: bool = False) -> dict:
    """A report of the whole benchmark (matrices/benchmark.toml on the default model, every sentence)."""
    rep = minimal_report()
    rep["data"].update(n_sentences=1000, lines_in_files=1000)
    rep["settings"].update(limit=0, num_beams=1)
    rep["suites"] = {s: {"status": "ok", "reason": None} for s in BENCH.suites}
    rep["backends"] = {n: (_cached if warm or n in cached else _built)(f"k-{n}") for n in BENCH.backends}
    names = sorted(rep["backends"])
    rep["run"].update(wall_seconds=wall, backends_run=[] if warm else names, backends_reused=names if warm else [])
    return rep


# ---------------------------------------------------------------------------------------------
# which target
# ---------------------------------------------------------------------------------------------
def test_all_built_is_cold():
    rep = _report({"a": _built("k1"), "b": _built("k2"), "skipped": {"status": "skipped", "metrics": {}}},
                  COLD_TARGET_S - 1, ["a", "b"], [])
    assert run_kind(rep) == ("cold", ["a", "b"], 2)
    s = benchmark_summary(_bench(COLD_TARGET_S - 1))
    assert (s["run_kind"], s["time_target_seconds"], s["time_target_met"]) == ("cold", COLD_TARGET_S, True)
    assert s["time_target_not_judged"] == []
    assert f"(cold target {COLD_TARGET_S} s): met" in format_summary(s)


def test_parallel_builds_are_reported():
    rep = _bench(10)
    rep["run"]["parallel_builds"] = 2
    assert format_summary(benchmark_summary(rep)).endswith("artifacts built 2 at a time")


def test_cold_over_target_is_missed():
    s = benchmark_summary(_bench(COLD_TARGET_S + 1))
    assert s["time_target_met"] is False and "MISSED" in format_summary(s)


def test_built_in_a_fresh_process_counts_as_built():
    # the suites ran in a second process that found the artifacts the first one built
    b = _built("k1")
    b["artifacts"]["reused"] = True
    assert run_kind(_report({"a": b}, 10, ["a"], []))[0] == "cold"


def test_some_reused_is_mixed_and_judged_against_neither_target():
    rep = _report({"a": _built("k1"), "b": _cached("k2")}, 100, ["a", "b"], [])
    assert run_kind(rep) == ("mixed", ["a"], 2)
    s = benchmark_summary(_bench(100, cached=("torch-fp32",)))
    assert s["time_target_seconds"] is None and s["time_target_met"] is None and not s["warm"]
    text = format_summary(s)
    assert f"{len(BENCH.backends) - 1} of {len(BENCH.backends)} backends built" in text and "torch-fp32-split" in text
    assert "neither" in text and "MISSED" not in text


def test_everything_reused_is_warm():
    s = benchmark_summary(_bench(WARM_TARGET_S + 1, warm=True))
    assert (s["run_kind"], s["warm"], s["time_target_seconds"], s["time_target_met"]) == \
        ("warm", True, WARM_TARGET_S, False)
    assert f"(warm target {WARM_TARGET_S} s): MISSED" in format_summary(s)


# ---------------------------------------------------------------------------------------------
# judged only on the whole benchmark
# ---------------------------------------------------------------------------------------------
def test_a_small_run_is_not_judged_against_the_time_targets():
    """5 sentences, quality only, 2 backends, built cold in 29 s: not "met"."""
    rep = minimal_report()
    rep["backends"]["onnx-fp32"] = _built("k2")
    rep["backends"]["torch-fp32"].update(_built("k1"))
    rep["run"]["wall_seconds"] = 29
    s = benchmark_summary(rep)
    assert s["run_kind"] == "cold" and s["time_target_met"] is None
    gaps = " ".join(s["time_target_not_judged"])
    assert "5 of 1000 sentences" in gaps and "split-generation" in gaps and "tflite-int8" in gaps
    text = format_summary(s)
    assert "wall time 29 s: time targets" in text and "not judged: 5 of 1000 sentences" in text
    assert ": met" not in text and "MISSED" not in text
    # the same small run re-run (everything reused) is not judged against the warm target either
    rep["run"].update(backends_run=[], backends_reused=["onnx-fp32", "torch-fp32"])
    s = benchmark_summary(rep)
    assert s["run_kind"] == "warm" and s["time_target_met"] is None and s["time_target_not_judged"]


@pytest.mark.parametrize("change,needle", [
    (lambda r: r["model"].update(path="/models/opus-mt-en-fr"), "not the default model"),
    (lambda r: r["data"].update(src="/d/my.en"), "test set /d/my.en is not the default"),
    (lambda r: r["data"].update(n_sentences=999), "999 of 1000 sentences"),
    (lambda r: r["data"].pop("lines_in_files"), "does not say how many"),
    (lambda r: r["settings"].update(num_beams=4), "beam size 4"),
    (lambda r: r["suites"].pop("speed"), "suite(s) not run: speed"),
    (lambda r: r["suites"]["speed"].update(status="skipped"), "suite(s) not run: speed"),
    (lambda r: r["backends"].pop("ct2-int8-mkl"), "not in the run: ct2-int8-mkl"),
    (lambda r: r["backends"]["tflite-int8"].update(status="failed"), "not ok: tflite-int8 failed"),
    (lambda r: r["backends"]["ct2-int8"].update(status="skipped"), "not ok: ct2-int8 skipped"),
])
def test_each_missing_part_of_the_benchmark_is_named(change, needle):
    rep = _bench(COLD_TARGET_S - 1)
    assert time_target_gaps(rep) == []
    change(rep)
    gaps = time_target_gaps(rep)
    assert len(gaps) == 1 and needle in gaps[0], gaps
    s = benchmark_summary(rep)
    assert s["time_target_met"] is None and "not judged: " + gaps[0] in format_summary(s)


def test_a_skipped_empty_line_still_counts_as_every_sentence():
    rep = _bench(10)
    rep["data"].update(n_sentences=998, skipped_empty_lines=2)
    assert time_target_gaps(rep) == []


def test_verdict_expectations_need_the_quality_suite_and_the_reference():
    rep = _bench(10)
    rep["backends"]["tflite-int8"]["verdict"] = {"kind": "pass"}
    rep["backends"]["tflite-int8-naive"]["verdict"] = {"kind": "pass"}  # expected: calibration
    assert verdict_gaps(rep) == []
    s = benchmark_summary(rep)
    got = {e["backend"]: e["met"] for e in s["verdict_expectations"]}
    assert got["tflite-int8"] is True and got["tflite-int8-naive"] is False
    assert "[MISS] tflite-int8-naive" in format_summary(s) and s["model_note"] is None
    for change, needle in ((lambda r: r["suites"].pop("quality"), "quality suite did not run"),
                           (lambda r: r["suites"]["quality"].update(status="skipped"), "quality suite did not run"),
                           (lambda r: r["backends"]["torch-fp32"].update(status="failed"), "reference backend")):
        other = json.loads(json.dumps(rep))
        change(other)
        s = benchmark_summary(other)
        assert all(e["met"] is None for e in s["verdict_expectations"])
        assert needle in " ".join(s["verdict_expectations_not_judged"])
        text = format_summary(s)
        assert "verdicts as expected: not judged: " in text and "MISS" not in text


def test_verdict_expectations_on_another_model_say_whose_they_are():
    rep = _bench(10)
    rep["model"]["path"] = "/models/opus-mt-en-fr"
    text = format_summary(benchmark_summary(rep))
    assert "the expectations are the default model's; this run's model is /models/opus-mt-en-fr" in text


# ---------------------------------------------------------------------------------------------
# the command
# ---------------------------------------------------------------------------------------------
def test_a_file_that_is_not_a_report_is_exit_2(tmp_path, capsys):
    (tmp_path / "report.json").write_text('{"x": 1}')
    assert benchmark.main([str(tmp_path)]) == 2
    err = capsys.readouterr()
    assert "is not a seqquant report" in err.err and err.out == ""
    assert benchmark.main([str(tmp_path / "nope")]) == 2
    assert "does not exist" in capsys.readouterr().err
    (tmp_path / "report.json").write_text("[1, 2")
    assert benchmark.main([str(tmp_path / "report.json")]) == 2
    assert "is not a report.json" in capsys.readouterr().err
    for text, why in (("[1]", "expected a JSON object"), ('{"schema_version": 2, "backends": {}}', "schema_version 2"),
                      ('{"reference_backend": "a", "backends": {"a": {"metrics": []}}}', "backends.a has no status"),
                      ('{"reference_backend": "a", "backends": {"a": {"status": "ok"}}, "run": {"wall_seconds": "1"}}',
                       "run.wall_seconds '1' is not a number")):
        (tmp_path / "report.json").write_text(text)
        assert benchmark.main([str(tmp_path)]) == 2
        assert why in capsys.readouterr().err


def test_a_report_prints(tmp_path, capsys):
    (tmp_path / "report.json").write_text(json.dumps(_bench(100)))
    assert benchmark.main([str(tmp_path), "--json"]) == 0
    s = json.loads(capsys.readouterr().out)
    assert s["n_sentences"] == 1000 and s["time_target_met"] is True


def test_the_docstring_names_only_real_commands():
    from orchestrator.cli_app import build_parser

    commands = set(build_parser()._subparsers._group_actions[0].choices)
    named = set(re.findall(r"python cli\.py (\w[\w-]*)", benchmark.__doc__))
    assert named and named <= commands, named - commands


def test_noise_scales_and_the_reference_budget_print():
    rep = _bench(100)
    names = sorted(rep["backends"])
    ref, other = names[0], names[1]
    rep["reference_backend"] = ref
    rep["backends"][ref]["suites"] = {"split-generation": {"margins": {
        "reference": True, "noise_scale_for_identity": {"0.8": 0.0861, "0.9": 0.0382, "0.95": None}}}}
    rep["backends"][other]["metrics"]["flip_noise_scale"] = 0.1514
    s = benchmark_summary(rep)
    assert s["backends"][other]["noise_scale"] == 0.1514
    assert s["noise_budget"] == ("noise scale <= 0.086 nats for 80% identical, <= 0.038 for 90%, "
                                 "none reaches 95% (the reference's exact ties)")
    text = format_summary(s)
    assert "noise budget (flip model on the reference's margins): noise scale <= 0.086 nats" in text
    row = next(line for line in text.splitlines() if line.startswith(other + " "))
    assert "0.151" in row


def test_the_verdicts_at_the_issues_agreement_target_print_without_touching_the_run():
    from orchestrator.attribution import attribute

    rep = minimal_report()
    for name, mode, em in (("x-int8", "static", 0.7), ("y-int8", "dynamic", 0.85)):
        rep["backends"][name] = {"status": "ok", "signature": {"runtime": "onnxruntime", "precision": "int8",
                                                               "quantization": {"mode": mode}},
                                 "metrics": {"bleu": 30.4, "exact_match_vs_reference": em}, "suites": {}}
    rep["verdict"] = attribute(rep, {})
    before = json.dumps(rep)
    s = benchmark_summary(rep)
    at = s["at_issue_bar"]
    assert at["headline"].startswith("INT8 ships: y-int8 meet the bar; failing: x-int8 (")
    assert at["verdicts"]["x-int8"] != "pass" and at["verdicts"]["y-int8"] == "pass"
    assert json.dumps(rep) == before  # judged on a copy
    text = format_summary(s)
    assert "min_int8_agreement=0.8" in text and "  verdict: INT8 ships: y-int8" in text
    rep["verdict"] = attribute(rep, {"min_int8_agreement": 0.9})  # the run's bar asks for more already
    assert benchmark_summary(rep)["at_issue_bar"] is None


# ---------------------------------------------------------------------------------------------
# issue 3's targets, one by one
# ---------------------------------------------------------------------------------------------
def _issue3(**changes) -> dict:
    """A report of the benchmark's issue-3 backends with the figures of a real run; ``changes`` maps
    "backend.metric" (``.`` -> ``__``) to a new value (None deletes it)."""
    rep = minimal_report()
    rep["data"].update(n_sentences=1000, lines_in_files=1000)
    figures = {"torch-fp32": (34.76, 0.0, 1.0, 0.447, 1.0, 94.1, 39.8),
               "tflite-fp32-split": (34.76, 0.0, 1.0, 0.447, 1.0, 27.6, 56.4),
               "tflite-int8": (34.89, 0.13, 0.713, 0.447, 0.99, 15.6, 15.1),
               "ct2-int8": (35.01, 0.25, 0.736, 0.430, 0.99, 18.3, 10.6),
               "tflite-int8-naive": (0.72, -34.04, 0.0, 0.999, 0.49, 42.7, 14.9),
               "tflite-dynamic": (34.92, 0.16, 0.901, 0.448, 0.99, 5.9, 14.7)}
    for name, (bleu, delta, em, cos, argmax, p50, mb) in figures.items():
        rep["backends"][name] = {"status": "ok", "suites": {}, "metrics": {
            "bleu": bleu, "bleu_delta_vs_reference": delta, "exact_match_vs_reference": em,
            "cross_source_cosine": cos, "first_step_argmax_agreement": argmax, "latency_p50_ms": p50,
            "bytes": mb * 1e6}}
    for key, value in changes.items():
        name, metric = key.replace("__", "-").rsplit(".", 1) if "." in key else (key.replace("__", "-"), None)
        if metric is None:
            rep["backends"][name] = value
        elif value is None:
            del rep["backends"][name]["metrics"][metric]
        else:
            rep["backends"][name]["metrics"][metric] = value
    return rep


def _targets(rep: dict) -> dict[str, dict]:
    return {t["target"]: t for t in benchmark_summary(rep)["issue_targets"]}


def test_issue_3s_targets_are_judged_one_by_one_and_print():
    s = benchmark_summary(_issue3())
    targets = {t["target"]: t for t in s["issue_targets"]}
    assert len(targets) == 9
    missed = [n for n, t in targets.items() if t["met"] is False]
    assert missed == ["tflite-int8 identical to FP32 >= 80%"]
    assert all(t["met"] is True for n, t in targets.items() if n not in missed)
    assert targets["tflite-int8 identical to FP32 >= 80%"]["measured"] == "71.3%"
    assert targets["tflite-int8 p50 latency <= 1.5x ct2-int8's"]["measured"] == "15.6 vs 18.3 ms (x0.852)"
    assert targets["tflite-int8 size <= 30% of tflite-fp32-split's"]["measured"] == "15.1 vs 56.4 MB (x0.268)"
    text = format_summary(s)
    assert "issue 3's targets: 8 of 9 met" in text
    assert "  [MISS] tflite-int8 identical to FP32 >= 80%: 71.3%" in text
    assert "  [met] tflite-int8-naive source-blind (cross-source cosine >= 0.98 or BLEU < 5): cosine 0.999, BLEU 0.72" in text


@pytest.mark.parametrize("change, target", [
    ({"tflite__fp32__split.exact_match_vs_reference": 0.994}, "tflite-fp32-split identical to torch-fp32 >= 99.5%"),
    ({"tflite__int8.bleu_delta_vs_reference": -0.51}, "tflite-int8 BLEU >= FP32 BLEU - 0.5"),
    ({"tflite__int8.cross_source_cosine": 0.498}, "tflite-int8 cross-source cosine within 0.05 of FP32's"),
    ({"tflite__int8.cross_source_cosine": 0.396}, "tflite-int8 cross-source cosine within 0.05 of FP32's"),
    ({"tflite__int8.first_step_argmax_agreement": 0.94}, "tflite-int8 first-step argmax = FP32's on >= 95% of sources"),
    ({"tflite__int8.bytes": 17.0e6}, "tflite-int8 size <= 30% of tflite-fp32-split's"),
    ({"tflite__int8.latency_p50_ms": 27.7, "ct2__int8.latency_p50_ms": 20.0},
     "tflite-int8 p50 latency <= tflite-fp32-split's"),
    ({"tflite__int8.latency_p50_ms": 27.5, "ct2__int8.latency_p50_ms": 18.3},
     "tflite-int8 p50 latency <= 1.5x ct2-int8's"),
    ({"tflite__int8__naive.cross_source_cosine": 0.97, "tflite__int8__naive.bleu": 5.0},
     "tflite-int8-naive source-blind (cross-source cosine >= 0.98 or BLEU < 5)"),
])
def test_each_issue_3_target_misses_just_past_its_bar(change, target):
    targets = _targets(_issue3(**change))
    assert targets[target]["met"] is False, targets[target]
    assert [n for n, t in targets.items() if t["met"] is False and n != "tflite-int8 identical to FP32 >= 80%"] \
        == [target]


def test_the_naive_recipe_is_blind_by_either_sign():
    assert _targets(_issue3(**{"tflite__int8__naive.cross_source_cosine": 0.5}))[
        "tflite-int8-naive source-blind (cross-source cosine >= 0.98 or BLEU < 5)"]["met"] is True  # BLEU 0.72
    assert _targets(_issue3(**{"tflite__int8__naive.bleu": 30.0}))[
        "tflite-int8-naive source-blind (cross-source cosine >= 0.98 or BLEU < 5)"]["met"] is True  # cosine 0.999


def test_an_issue_3_target_without_its_figures_is_not_judged_and_says_why():
    targets = _targets(_issue3(**{"ct2__int8": {"status": "failed", "reason": "boom", "metrics": {}},
                                  "tflite__int8.first_step_argmax_agreement": None}))
    ct2 = targets["tflite-int8 p50 latency <= 1.5x ct2-int8's"]
    assert ct2["met"] is None and ct2["why_not_judged"] == "ct2-int8 is failed in this run"
    argmax = targets["tflite-int8 first-step argmax = FP32's on >= 95% of sources"]
    assert argmax["met"] is None and "no first_step_argmax_agreement" in argmax["why_not_judged"]
    rep = _issue3()
    del rep["backends"]["tflite-fp32-split"]
    targets = _targets(rep)
    assert targets["tflite-int8 size <= 30% of tflite-fp32-split's"]["why_not_judged"] == \
        "tflite-fp32-split is not in the run"
    text = format_summary(benchmark_summary(rep))
    assert "issue 3's targets: 5 of 9 met, 3 not judged" in text
    assert "  [not judged] tflite-int8 size <= 30% of tflite-fp32-split's: tflite-fp32-split is not in the run" in text


def test_issue_3s_targets_name_whose_they_are_on_a_smaller_or_other_run():
    rep = _issue3()
    rep["reference_backend"] = "tflite-fp32-split"
    targets = _targets(rep)
    assert targets["tflite-fp32-split identical to torch-fp32 >= 99.5%"]["why_not_judged"] == \
        "the run's reference is tflite-fp32-split, not torch-fp32"
    assert targets["tflite-int8 identical to FP32 >= 80%"]["met"] is False  # FP32 either way
    rep = _issue3()
    rep["data"]["n_sentences"] = 100
    rep["model"]["path"] = "/m/other-model"
    s = benchmark_summary(rep)
    assert s["issue_targets_scope"] == ["on 100 of the test set's 1000 sentences (the targets are for every one)",
                                        "on model /m/other-model (the targets are the default model's)"]
    text = format_summary(s)
    assert "issue 3's targets: 8 of 9 met (on 100 of the test set's 1000 sentences" in text
    assert "not strict INT8): 9 of 9 met (on 100 of the test set's 1000 sentences" in text  # the alternative too
    assert benchmark_summary(_issue3())["issue_targets_scope"] == []


def test_the_same_targets_print_for_the_per_call_recipe_in_tflite_int8s_place():
    s = benchmark_summary(_issue3())
    alt = {t["target"]: t for t in s["issue_targets_alternatives"]["tflite-dynamic"]}
    assert len(alt) == 9 and all(t["met"] is True for t in alt.values()), alt
    assert alt["tflite-dynamic identical to FP32 >= 80%"]["measured"] == "90.1%"
    assert alt["tflite-dynamic p50 latency <= tflite-fp32-split's"]["measured"] == "5.9 vs 27.6 ms (x0.214)"
    text = format_summary(s)
    assert ("the same targets with tflite-dynamic in tflite-int8's place (int8 weights, matmul inputs quantized "
            "per call: not strict INT8): 9 of 9 met") in text
    assert "  [met] tflite-dynamic identical to FP32 >= 80%: 90.1%" in text
    assert text.index("issue 3's targets: 8 of 9 met") < text.index("the same targets with tflite-dynamic")
    rep = _issue3()
    del rep["backends"]["tflite-dynamic"]  # not in the run: nothing printed for it
    s = benchmark_summary(rep)
    assert s["issue_targets_alternatives"] == {} and "the same targets with" not in format_summary(s)
