"""quality (paired bootstrap) and split-generation on real torch runs of the tiny Marian."""
from __future__ import annotations

import json

import numpy as np

from orchestrator.suites.split_generation import divergence_histogram, first_divergence, token_agreement


def _b(report, name):
    return report["backends"][name]


def test_split_fp32_matches_oracle_step_by_step(measured):
    report, _, _ = measured
    m = _b(report, "torch-fp32-split")["metrics"]
    assert m["exact_match_vs_reference"] == 1.0
    assert m["tf_max_abs_logit_diff"] < 1e-3
    assert m["tf_argmax_agreement"] == 1.0
    tf = _b(report, "torch-fp32-split")["suites"]["split-generation"]["teacher_forced"]
    assert len(tf["per_step_max_abs_logit_diff"]) == 6 and tf["positions"] > 0
    div = _b(report, "torch-fp32-split")["suites"]["split-generation"]["divergence"]
    assert div["histogram"]["identical"] == div["n"] == 8


def test_quantized_boundary_logits_differ_and_divergence_recorded(measured):
    report, _, _ = measured
    raw = _b(report, "sim-int8-raw")
    # the raw boundary feeds a 4x scaled memory: logits move, outputs diverge somewhere
    assert raw["metrics"]["tf_max_abs_logit_diff"] > 1e-2
    div = raw["suites"]["split-generation"]["divergence"]
    assert div["diverged"] > 0
    assert sum(div["histogram"].values()) == div["n"]


def test_divergence_margins_from_the_reference_run(measured):
    """Only the reference scores its own output; every other backend gets the reference's margins where
    its output leaves the reference's, consistent with its divergence histogram, and the report shows them."""
    from orchestrator.report_tables import margins_table

    report, _, run_dir = measured
    ref = _b(report, "torch-fp32")["suites"]["split-generation"]
    info = ref["reference_margins"]
    assert info["sentences"] == 8 and info["steps"] >= 8 and info["self_agreement"] == 1.0
    assert (run_dir / "backends" / "torch-fp32" / info["file"]).exists()
    # the reference's entry holds the noise budget for the default targets, tighter for a higher target
    budget = ref["margins"]["noise_scale_for_identity"]
    assert ref["margins"]["reference"] and list(budget) == ["0.8", "0.9", "0.95"]
    assert all(s is None for s in budget.values()) or budget["0.8"] >= budget["0.9"] >= budget["0.95"] >= 0
    for name in ("torch-fp32-split", "sim-int8", "sim-int8-raw", "sim-int8-naive"):
        sg = _b(report, name)["suites"]["split-generation"]
        assert "reference_margins" not in sg
        mg, div = sg["margins"], sg["divergence"]
        assert mg["diverged"] + mg["unscored"] == div["diverged"], name
        curve = mg["flip_rate_by_margin"].values()
        assert sum(c["flips"] for c in curve) == mg["diverged"]
        assert sum(c["steps"] for c in curve) >= info["sentences"]
        assert _b(report, name)["metrics"]["decisive_flip_rate"] == mg["decisive_flip_rate"]
        assert _b(report, name)["metrics"]["flip_noise_scale"] == mg["noise_scale"]
        assert mg["identical"] == _b(report, name)["metrics"]["exact_match_vs_reference"]
        assert (mg["noise_scale"] == 0) == (mg["diverged"] == 0) and 0 <= mg["identical_predicted"] <= 1
    split = _b(report, "torch-fp32-split")["suites"]["split-generation"]["margins"]
    assert split["diverged"] == 0 and split["identical_predicted"] >= 0.99
    naive = _b(report, "sim-int8-naive")["suites"]["split-generation"]["margins"]
    assert naive["diverged"] > 0 and naive["ref_margin_median"] > 0
    title, header, rows = margins_table(report)
    assert title.startswith("Where outputs leave the reference") and header[-3] == "flips at 2+"
    assert header[-2:] == ["noise scale (nats)", "identical: predicted / measured"]
    assert [r[0] for r in rows] == ["torch-fp32-split", "sim-int8", "sim-int8-raw", "sim-int8-naive"]


def test_identical_outputs_get_p_value_one_and_others_a_real_test(measured):
    report, _, _ = measured
    same = _b(report, "torch-fp32-split")["suites"]["quality"]["significance"]
    assert same["identical_to_baseline"] and same["bleu_p_value"] == 1.0 and not same["significant"]
    blind = _b(report, "sim-int8-naive")["suites"]["quality"]
    sig = blind["significance"]
    assert not sig["identical_to_baseline"]
    assert 0 < sig["bleu_p_value"] <= 0.05 and sig["significant"]  # BLEU collapsed: significant
    assert "bs:100" in sig["signatures"]["BLEU"] and "seed:" in sig["signatures"]["BLEU"]
    assert 0 < sig["chrf_p_value"] <= 1 and "chrF2" in sig["signatures"]
    assert blind["metrics"]["bleu_delta_vs_reference"] < -10


def test_boundary_matrix_rows(measured):
    report, _, run_dir = measured
    bd = _b(report, "sim-int8")["suites"]["split-generation"]["boundary"]
    rows = bd["rows"]
    assert list(rows) == ["fp32enc-fp32dec", "int8enc-dequant-fp32dec", "fp32enc-quant-int8dec",
                          "int8enc-requant-int8dec", "int8enc-raw-int8dec"]
    assert rows["fp32enc-fp32dec"]["agreement_with_fp32_row"] == 1.0
    # the FP32 row of the simulated backend is the oracle itself (self-references): BLEU 100
    assert rows["fp32enc-fp32dec"]["bleu"] == 100.0
    assert rows["int8enc-raw-int8dec"]["bleu"] < rows["int8enc-requant-int8dec"]["bleu"]
    assert rows["int8enc-raw-int8dec"]["agreement_with_fp32_row"] < rows["int8enc-requant-int8dec"][
        "agreement_with_fp32_row"]
    toks = json.loads((run_dir / "backends" / "sim-int8" / rows["int8enc-raw-int8dec"]["tokens"]).read_text())
    assert len(toks) == bd["n"]
    # each greedy row's noise scale against the reference: none on the FP32 row, most on the raw boundary
    noise = _b(report, "sim-int8")["suites"]["split-generation"]["boundary_noise"]
    assert list(noise) == list(rows) and all(r["sentences"] == bd["n"] for r in noise.values())
    assert noise["fp32enc-fp32dec"]["noise_scale"] == 0.0 and noise["fp32enc-fp32dec"]["identical_predicted"] == 1.0
    assert noise["int8enc-raw-int8dec"]["noise_scale"] > noise["int8enc-requant-int8dec"]["noise_scale"]
    from orchestrator.report_tables import boundary_table

    title, header, table = boundary_table(report)
    assert header[-1] == "noise scale vs ref (nats)"
    assert ["sim-int8", "fp32enc-fp32dec", "0.000"] == [table[0][0], table[0][1], table[0][-1]]
    # torch-fp32-split has no boundary modes: no matrix
    assert "boundary" not in _b(report, "torch-fp32-split")["suites"]["split-generation"]


def test_teacher_forced_logits_file_shape(measured):
    _, _, run_dir = measured
    arr = np.load(run_dir / "backends" / "sim-int8" / "teacher_forced_logits.npy")
    assert arr.shape[:2] == (4, 6) and arr.dtype == np.float32


def test_divergence_helpers():
    assert first_divergence([1, 2, 3], [1, 2, 3]) is None
    assert first_divergence([1, 2, 3], [1, 5, 3]) == 1
    assert first_divergence([1, 2], [1, 2, 3]) == 2  # one stopped early
    h = divergence_histogram([None, 0, 1, 6, 40])
    assert h["histogram"]["identical"] == 1 and h["histogram"]["0"] == 1 and h["histogram"]["5-7"] == 1
    assert h["histogram"]["32+"] == 1 and h["diverged"] == 4 and h["first_token_differs"] == 1
    assert token_agreement([[1, 2]], [[1, 2]]) == 1.0
    assert token_agreement([[1, 2]], [[3, 2]]) < 1.0


def test_smaller_per_backend_limit_is_compared_on_the_common_prefix(tmp_path):
    """A backend run on fewer sentences (a per-backend `limit`) is scored against the
    reference's first n outputs, not penalised for the sentences it never saw."""
    from orchestrator.suites.base import CompareContext
    from orchestrator.suites.quality import QualitySuite

    refs = ["a b c d", "e f g h", "i j k l", "m n o p"]
    ref_hyps = ["a b c d", "e f g x", "i j k l", "m n o p"]
    rows = {"ref": (ref_hyps, [[1], [2], [3], [4]]), "small": (ref_hyps[:2], [[1], [9]])}
    results = {}
    for name, (hyps, toks) in rows.items():
        d = tmp_path / "backends" / name
        d.mkdir(parents=True)
        (d / "h.txt").write_text("\n".join(hyps) + "\n")
        (d / "t.json").write_text(json.dumps(toks))
        from orchestrator.suites.quality import corpus_scores

        results[name] = {"n": len(hyps), "hypotheses": "h.txt", "tokens": "t.json",
                         **corpus_scores(hyps, refs[:len(hyps)])}
    ctx = CompareContext(model=None, sources=["s"] * 4, references=refs, run_dir=tmp_path, reference_backend="ref",
                         suite_options={"bootstrap_samples": 10})
    out = QualitySuite().compare(results, ctx)
    small = out["small"]
    assert small["compared_sentences"] == 2 and small["exact_match_vs_reference"] == 0.5
    # same hypotheses on the common prefix -> no BLEU delta
    assert small["metrics"]["bleu_delta_vs_reference"] == 0.0


def test_batch1_agreement_tells_a_per_call_quantized_backend_from_a_batch_invariant_one(tiny_model, tmp_path):
    """``batch1_sentences``: the first N sources again one at a time. The sim-int8 boundary scale is the
    batch's max (per call, as dynamic-range quantization does), so its tokens depend on the batch; the FP32
    network's do not."""
    from backends.registry import get_backend
    from orchestrator.report_tables import quality_table
    from tests.orchestrator.suites.helpers import SimQuantBoundaryBackend, load_test_data, run_suites

    sources, _ = load_test_data(32)
    backends = {"torch-fp32": get_backend("torch-fp32", max_new_tokens=8),
                "sim-int8": SimQuantBoundaryBackend(name="sim-int8", max_new_tokens=8)}
    report = run_suites(tiny_model("marian"), backends, ["quality"], sources, sources, tmp_path,
                        suite_options={"quality": {"batch1_sentences": 40, "bootstrap_samples": 0}})
    fp32, sim = (_b(report, n) for n in ("torch-fp32", "sim-int8"))
    assert fp32["metrics"]["batch1_agreement"] == 1.0
    assert fp32["suites"]["quality"]["batch1"] == {"sentences": 32, "batch_size": 16, "differ": 0,
                                                   "first_differing": []}
    b1 = sim["suites"]["quality"]["batch1"]
    assert b1["sentences"] == 32 and 0 < b1["differ"] == len(b1["first_differing"]) < 32  # 1-based, in order
    assert sim["metrics"]["batch1_agreement"] == round(1 - b1["differ"] / 32, 4) < 1.0
    title, head, rows = quality_table(report)
    assert head[-1] == "same at batch 1" and rows[0][-1] == "100.0%" and rows[1][-1] != "100.0%"

    # at batch size 1 there is nothing to compare; off by default; the option is checked
    report = run_suites(tiny_model("marian"), {"torch-fp32": get_backend("torch-fp32", max_new_tokens=8)},
                        ["quality"], sources[:4], sources[:4], tmp_path / "b1", settings={"batch_size": 1},
                        suite_options={"quality": {"batch1_sentences": 4, "bootstrap_samples": 0}})
    assert "batch1" not in _b(report, "torch-fp32")["suites"]["quality"]
    assert "batch1_agreement" not in _b(report, "torch-fp32")["metrics"]
    assert quality_table(report)[1][-1] == "identical to ref"


def test_batch1_sentences_is_off_by_default_and_checked():
    import pytest

    from backends.errors import InvalidInputError
    from orchestrator.suites.quality import QualitySuite

    assert QualitySuite().options({}, "[suites.quality]")["batch1_sentences"] == 0
    with pytest.raises(InvalidInputError, match="batch1_sentences must be a non-negative integer"):
        QualitySuite().options({"batch1_sentences": -1}, "[suites.quality]")
