"""The selective-float rescue search: the greedy strategy on given outcomes, a trial read from a report with the
verdict rules' own bar check, the matrix table it writes, bad requests refused before anything runs, and the
whole search on a tiny Marian model with real TFLite builds."""
import json
import tomllib
from pathlib import Path

import pytest

from backends.tflite.graphs import scoped_regions
from orchestrator.cli_app import main
from orchestrator.rescue import (Trial, identity_vs_base, mcnemar_exact, search, trial_from_report,
                                 variant_toml)
from tests.test_cli import err_of

PARTS = ("a", "b", "c", "d")


def canonical(parts):
    return tuple(p for p in PARTS if p in set(parts))


def measuring(outcomes: dict[tuple[str, ...], tuple[float, bool]], sizes: dict | None = None):
    """A measure over fixed outcomes (identical share, meets the bar) that records what it was asked."""
    asked: list[tuple[str, list[tuple[str, ...]]]] = []

    def measure(sets, phase):
        asked.append((phase, list(sets)))
        out = {}
        for s in sets:
            if s not in outcomes:
                out[s] = Trial(s, "x-" + "-".join(s), phase, status="failed", misses=["failed: crashed"])
                continue
            em, ok = outcomes[s]
            out[s] = Trial(s, "x-" + "-".join(s), phase, passes=ok,
                           metrics={"exact_match_vs_reference": em, "bleu": 30.0,
                                    **({"bytes": sizes[s]} if sizes and s in sizes else {})})
        return out
    return measure, asked


def test_a_base_that_meets_the_bar_ends_the_search():
    measure, asked = measuring({(): (0.9, True)})
    trials, found = search(measure, (), PARTS, canonical)
    assert found is trials[0] and found.parts == () and asked == [("base", [()])]


def test_one_part_alone_that_meets_the_bar_ends_the_search_smallest_first():
    outcomes = {(): (0.7, False), ("a",): (0.72, False), ("b",): (0.81, True), ("c",): (0.85, True),
                ("d",): (0.6, False)}
    measure, asked = measuring(outcomes, sizes={("b",): 30e6, ("c",): 20e6})
    trials, found = search(measure, (), PARTS, canonical)
    assert found.parts == ("c",)  # both pass; c is smaller on disk
    assert [p for p, _ in asked] == ["base", "alone"] and asked[1][1] == [("a",), ("b",), ("c",), ("d",)]
    assert len(trials) == 5


def test_parts_are_added_in_the_order_of_what_each_alone_buys():
    outcomes = {(): (0.70, False), ("a",): (0.71, False), ("b",): (0.75, False), ("c",): (0.73, False),
                ("d",): (0.69, False), ("b", "c"): (0.77, False), ("a", "b", "c"): (0.81, True)}
    measure, asked = measuring(outcomes)
    trials, found = search(measure, (), PARTS, canonical)
    # b (0.75), then c (0.73), then a (0.71): each set named in canonical order, however it was built
    assert [s for phase, sets in asked if phase == "cumulative" for s in sets] == [("b", "c"), ("a", "b", "c")]
    assert found.parts == ("a", "b", "c") and found.phase == "cumulative"


def test_no_set_meets_the_bar_and_a_failed_variant_ranks_last():
    outcomes = {(): (0.70, False), ("a",): (0.71, False), ("c",): (0.72, False), ("d",): (0.65, False),
                ("a", "c"): (0.74, False), ("a", "c", "d"): (0.75, False), ("a", "b", "c", "d"): (0.76, False)}
    measure, asked = measuring(outcomes)  # ("b",) is missing: that variant "crashes"
    trials, found = search(measure, (), PARTS, canonical)
    assert found is None
    cumulative = [s for phase, sets in asked if phase == "cumulative" for s in sets]
    assert cumulative == [("a", "c"), ("a", "c", "d"), ("a", "b", "c", "d")]  # b, which failed, added last
    assert len(trials) == 1 + 4 + 3 and trials[2].status == "failed"


def test_units_of_several_parts_are_refined_coarse_to_fine():
    """A unit (a region in both graphs: a + b) is tried as one step; in the set found, each of its parts is
    dropped in turn and stays dropped while the set meets the bar. A set asked for twice is measured once."""
    outcomes = {(): (0.70, False), ("a", "b"): (0.74, False), ("c",): (0.72, False), ("d",): (0.71, False),
                ("a", "b", "c"): (0.81, True), ("b", "c"): (0.80, True), ("c",): (0.72, False)}
    measure, asked = measuring(outcomes)
    trials, found = search(measure, (), [("a", "b"), "c", "d"], canonical)
    assert asked[1] == ("alone", [("a", "b"), ("c",), ("d",)])
    assert [(phase, sets) for phase, sets in asked[2:]] == [("cumulative", [("a", "b", "c")]),
                                                            ("refine", [("b", "c")])]
    # dropping a met the bar; dropping b next gives ("c",), measured already: not measured again
    assert found.parts == ("b", "c") and found.phase == "refine" and len(trials) == 1 + 3 + 2


def test_a_unit_that_alone_meets_the_bar_is_refined_too():
    outcomes = {(): (0.70, False), ("a", "b"): (0.9, True), ("c", "d"): (0.7, False), ("b",): (0.7, False),
                ("a",): (0.85, True)}
    measure, asked = measuring(outcomes)
    trials, found = search(measure, (), [("a", "b"), ("c", "d")], canonical)
    assert [phase for phase, _ in asked] == ["base", "alone", "refine", "refine"]
    assert asked[2][1] == [("b",)] and asked[3][1] == [("a",)] and found.parts == ("a",)


def test_parts_already_float_are_the_start_and_not_searched_again():
    outcomes = {("b",): (0.7, False), ("a", "b"): (0.9, True), ("b", "c"): (0.7, False), ("b", "d"): (0.7, False)}
    measure, asked = measuring(outcomes)
    trials, found = search(measure, ("b",), PARTS, canonical)
    assert asked[0] == ("base", [("b",)]) and asked[1] == ("alone", [("a", "b"), ("b", "c"), ("b", "d")])
    assert found.parts == ("a", "b")


def _report(em_int8: float, status: str = "ok", bleu: float = 30.1, source_blind: bool = False):
    from tests.orchestrator.test_console import minimal_report

    rep = minimal_report()
    rep["backends"]["x-int8"] = {"status": status, "reason": None if status == "ok" else "killed by signal 9",
                                 "signature": {"runtime": "tflite", "precision": "int8-mixed",
                                               "quantization": {"mode": "int8"}},
                                 "metrics": {"bleu": bleu, "exact_match_vs_reference": em_int8,
                                             "source_blind": source_blind},
                                 "artifacts": {"bytes": 21_000_000}, "suites": {"quality": {"status": "ok"}}}
    return rep


def test_a_trial_is_judged_by_the_verdict_rules_bar():
    ref_bleu = _report(0.7)["backends"]["torch-fp32"]["metrics"]["bleu"]
    t = trial_from_report(_report(0.7, bleu=ref_bleu), "x-int8", ("ffn",), "alone", {"min_int8_agreement": 0.8})
    assert (t.passes, t.status, t.metrics["bytes"]) == (False, "ok", 21_000_000)
    assert t.misses == ["identical 70.0% (bar 80.0%)"]
    assert trial_from_report(_report(0.85, bleu=ref_bleu), "x-int8", ("ffn",), "alone",
                             {"min_int8_agreement": 0.8}).passes
    blind = trial_from_report(_report(0.85, bleu=ref_bleu, source_blind=True), "x-int8", (), "base", {})
    assert not blind.passes and "source-blind" in blind.misses[0]
    low = trial_from_report(_report(0.85, bleu=ref_bleu - 2), "x-int8", (), "base", {"max_bleu_drop": 0.5})
    assert not low.passes and low.misses[0].startswith("BLEU drop 2.00 (bar 0.50)")
    crashed = trial_from_report(_report(0.85, status="failed"), "x-int8", (), "base", {})
    assert (crashed.passes, crashed.status) == (False, "failed") and "killed by signal 9" in crashed.misses[0]
    assert trial_from_report(_report(0.85), "nope", (), "base", {}).status == "missing"


def test_mcnemar_exact_p_values():
    assert mcnemar_exact(0, 0) == 1.0 and mcnemar_exact(5, 5) == 1.0
    assert mcnemar_exact(10, 0) == pytest.approx(2 / 1024) == mcnemar_exact(0, 10)
    assert mcnemar_exact(3, 1) == pytest.approx(2 * (1 + 4) / 16)
    assert mcnemar_exact(60, 30) < 0.01 < mcnemar_exact(40, 30)


def test_identity_vs_base_pairs_sentences(tmp_path):
    """Sentence by sentence against the reference: gained = only the variant matches, lost = only the base."""
    from orchestrator.run_store import RunStore

    store = RunStore(tmp_path)
    tokens = {"ref": [[1], [2], [3], [4], [5]], "base": [[1], [9], [9], [4], [9]], "var": [[1], [2], [3], [9], [9]]}
    for name, toks in tokens.items():
        store.backend_dir(name).mkdir(parents=True)
        (store.backend_dir(name) / "hypotheses.tokens.json").write_text(json.dumps(toks))
    v = identity_vs_base(tmp_path, "ref", "base", "var")
    assert (v["gained"], v["lost"], v["sentences"]) == (2, 1, 5) and v["p_value"] == 1.0
    (store.backend_dir("var") / "hypotheses.tokens.json").write_text(json.dumps([[1]]))
    assert identity_vs_base(tmp_path, "ref", "base", "var") is None  # other sentences: not paired
    assert identity_vs_base(tmp_path, "ref", "base", "missing") is None


def test_the_variant_table_is_a_valid_matrix():
    from orchestrator.matrix import parse_matrix

    text = variant_toml("tflite-int8-float-ffn-lm_head", "tflite-int8", "float_regions", ("ffn", "lm_head"),
                        {"min_int8_agreement": 0.8, "fail_source_blind": True}, 'python cli.py rescue --set "x"')
    m = parse_matrix(tomllib.loads(text), None)
    assert m.variants["tflite-int8-float-ffn-lm_head"]["options"] == {"float_regions": ["ffn", "lm_head"]}
    assert m.variants["tflite-int8-float-ffn-lm_head"]["base"] == "tflite-int8"
    assert m.bar == {"min_int8_agreement": 0.8, "fail_source_blind": True}


def test_force_can_name_backends():
    from orchestrator.config import resolve_config

    cfg = resolve_config({"force": frozenset({"tflite-int8"})})
    assert cfg.forces("tflite-int8") and not cfg.forces("torch-fp32") and cfg.forces()
    assert not resolve_config({"force": frozenset()}).forces()
    assert resolve_config({"force": True}).forces("anything")


@pytest.mark.parametrize("args,why", [
    (["--backend", "tflite-dynamic"], "float_regions (selective float) needs quantization 'int8'"),
    (["--backend", "onnx-static-int8"], "cannot leave parts of its network in float"),
    (["--backend", "no-such-backend"], "Unknown backend 'no-such-backend'"),
    (["--parts", "ffn,gelu"], "--parts: unknown float part(s) ['gelu']; choose from encoder.layer_norm"),
    (["--parts", "encoder.lm_head"], "unknown float part(s) ['encoder.lm_head']"),
    (["--backend", "tflite-int8", "--reference", "tflite-int8"], "is the reference backend"),
    (["--set", "min_int8=0.8"], "unknown key(s) ['min_int8']"),
    (["--suites", "speed"], "rescue needs the quality suite"),
])
def test_a_bad_request_is_refused_before_anything_runs(tmp_path, capsys, args, why):
    out = tmp_path / "run"
    assert main(["rescue", "--out", str(out), *args]) == 2
    assert why in err_of(capsys)
    assert not out.exists()


@pytest.fixture
def own_registry():
    """The variants a search registers in this process leave with the test (matrices name some alike)."""
    from backends import registry

    saved = dict(registry._registry)
    yield
    registry._registry.clear()
    registry._registry.update(saved)


def test_rescue_on_a_tiny_model_builds_and_judges_every_variant(tiny_model, tmp_path, capsys, own_registry):
    """The whole search with real TFLite builds: base, each part alone, the two together; every variant in
    the run's report; then a bar the best of them meets is found, reusing every result. The parts are one graph's
    region (encoder.layer_norm) or a region named alone, which stands for it in every graph (lm_head: the
    decoder's)."""
    model, out, cache = tiny_model("marian"), tmp_path / "run", tmp_path / "cache"
    common = ["rescue", "--model", str(model), "--limit", "12", "--parts", "lm_head,encoder.layer_norm",
              "--out", str(out), "--cache-dir", str(cache), "--quiet"]
    code = main([*common, "--set", "min_int8_agreement=1.0", "--set", "max_bleu_drop=100"])
    result = json.loads((out / "rescue.json").read_text())
    report = json.loads((out / "report.json").read_text())
    phases = [(t["phase"], tuple(t["parts"])) for t in result["trials"]]
    assert phases[:3] == [("base", ()), ("alone", ("encoder.layer_norm",)), ("alone", ("decoder.lm_head",))]
    names = [t["backend"] for t in result["trials"]]
    assert names[:3] == ["tflite-int8", "tflite-int8-float-encoder.layer_norm", "tflite-int8-float-lm_head"]
    for t in result["trials"]:  # every trial is in the run's report, measured, with the metric it was judged by
        rec = report["backends"][t["backend"]]
        assert rec["status"] == t["status"] == "ok"
        assert rec["metrics"]["exact_match_vs_reference"] == t["metrics"]["exact_match_vs_reference"]
        assert t["passes"] == (t["metrics"]["exact_match_vs_reference"] >= 1.0)
        assert rec["signature"]["settings"].get("float_regions", []) == list(t["parts"])
    for t in result["trials"][1:]:  # paired against the base: its identical count moves by gained - lost
        v = t["vs_base"]
        assert v["baseline"] == "tflite-int8" and v["sentences"] == 12 and 0 <= v["p_value"] <= 1
        assert t["metrics"]["exact_match_vs_reference"] == pytest.approx(
            result["trials"][0]["metrics"]["exact_match_vs_reference"] + (v["gained"] - v["lost"]) / 12, abs=1e-4)
    assert result["trials"][0]["vs_base"] is None and "vs base" in (out / "rescue.md").read_text()
    assert report["backends"]["tflite-int8-float-lm_head"]["signature"]["precision"] == "int8-mixed"
    assert code == (0 if result["found"] else 3)
    if result["found"] is None:  # then the two together were tried as well
        assert phases[3] == ("cumulative", ("encoder.layer_norm", "decoder.lm_head")) and len(phases) == 4
        assert not (out / "rescue.toml").exists()
    assert "rescue of tflite-int8" in (out / "rescue.md").read_text()
    # a bar the best variant meets: the search stops there (and measures nothing again)
    best = max(result["trials"][1:], key=lambda t: t["metrics"]["exact_match_vs_reference"])
    base_em = result["trials"][0]["metrics"]["exact_match_vs_reference"]
    target = best["metrics"]["exact_match_vs_reference"]
    capsys.readouterr()
    assert main([*common, "--set", f"min_int8_agreement={target}", "--set", "max_bleu_drop=100"]) == 0
    again = json.loads((out / "rescue.json").read_text())
    if base_em >= target:
        assert again["found"]["backend"] == "tflite-int8" and len(again["trials"]) == 1
    else:
        assert again["found"]["metrics"]["exact_match_vs_reference"] >= target
        table = tomllib.loads((out / "rescue.toml").read_text())
        listed = table["variants"][again["found"]["backend"]]["options"]["float_regions"]
        assert scoped_regions(listed) == tuple(again["found"]["parts"])
    assert "meets the bar" in err_of(capsys)
    final = json.loads((out / "report.json").read_text())
    assert all(b.get("reused") for b in final["backends"].values())
