"""source-sensitivity and speed on real torch runs of the tiny Marian."""
from __future__ import annotations

import pytest

from backends.errors import InvalidInputError
from orchestrator.suites.source_sensitivity import CANONICAL, pair_sources
from orchestrator.suites.util import suite_options


def test_reference_sees_the_source(measured):
    report, _, _ = measured
    ss = report["backends"]["torch-fp32"]["suites"]["source-sensitivity"]
    assert ss["n_pairs"] == 5 and ss["canonical_sources"] == list(CANONICAL)
    assert ss["cross_cosine_mean"] < 0.98
    assert ss["source_blind"] is False
    assert ss["cosine_to_reference_mean"] == pytest.approx(1.0, abs=1e-6)
    split = report["backends"]["torch-fp32-split"]["suites"]["source-sensitivity"]
    assert split["argmax_agreement_with_reference"] == 1.0 and split["source_blind"] is False


def test_zero_calibrated_boundary_is_source_blind(measured):
    report, _, _ = measured
    ss = report["backends"]["sim-int8-naive"]["suites"]["source-sensitivity"]
    assert ss["cross_cosine_mean"] > 0.999 and ss["same_argmax_rate"] == 1.0
    assert ss["source_blind"] is True
    assert report["backends"]["sim-int8-naive"]["metrics"]["source_blind"] is True
    assert ss["cosine_to_reference_mean"] < 0.99
    # the requantized boundary keeps the source
    assert report["backends"]["sim-int8"]["suites"]["source-sensitivity"]["source_blind"] is False


def test_pairs_are_fixed_and_disjoint():
    src = [f"sentence {i}" for i in range(200)]
    a, pairs = pair_sources(src, 50, seed=0)
    b, _ = pair_sources(src, 50, seed=0)
    c, _ = pair_sources(src, 50, seed=1)
    assert a == b and a != c
    assert a[:2] == list(CANONICAL) and len(pairs) == 51
    assert len(set(a[2:])) == 100  # no source used twice


def test_speed_fields(measured):
    report, _, _ = measured
    sp = report["backends"]["torch-fp32-split"]["suites"]["speed"]
    assert sp["latency_n"] == 3 and sp["throughput_n"] == 4 and sp["threads"] == 2
    assert 0 < sp["latency_ms"]["p50"] <= sp["latency_ms"]["p90"] <= sp["latency_ms"]["max"]
    m = report["backends"]["torch-fp32-split"]["metrics"]
    assert m["bytes"] > 100_000  # torch: the checkpoint's weights
    assert m["peak_rss_mb"] > 50 and m["throughput_sps"] > 0 and m["tokens_per_s"] > 0


def test_suite_options_validation():
    class Ctx:
        suite_options = {"pairs": 3}

    assert suite_options(Ctx, "source-sensitivity", {"pairs": 50, "seed": 0})["pairs"] == 3
    Ctx.suite_options = {"source-sensitivity": {"seed": 2}, "speed": {"warmup": 1}}
    assert suite_options(Ctx, "source-sensitivity", {"pairs": 50, "seed": 0}) == {"pairs": 50, "seed": 2}
    Ctx.suite_options = {"pairz": 3}
    with pytest.raises(InvalidInputError, match="pairz"):
        suite_options(Ctx, "source-sensitivity", {"pairs": 50})
    Ctx.suite_options = {"pairs": "many"}
    with pytest.raises(InvalidInputError, match="integer"):
        suite_options(Ctx, "source-sensitivity", {"pairs": 50})


def test_speed_time_budget_bounds_the_samples(tiny_model, tmp_path):
    from backends.model import ModelBundle
    from backends.registry import get_backend
    from orchestrator.suites.base import SuiteContext
    from orchestrator.suites.speed import MIN_LATENCY_SAMPLES, SpeedSuite
    from tests.orchestrator.suites.helpers import load_test_data

    bundle = ModelBundle.load(tiny_model("marian"))
    src, ref = load_test_data(16)
    b = get_backend("torch-fp32-split", max_new_tokens=4)
    b.prepare(bundle, tmp_path / "art")
    ctx = SuiteContext(model=bundle, sources=src, references=ref, outdir=tmp_path / "out",
                       suite_options={"warmup": 0, "latency_n": 12, "throughput_n": 16, "throughput_batch": 2,
                                      "max_seconds": 1e-4})
    with b:
        res = SpeedSuite().run(b, ctx)
    assert res["latency_n"] == MIN_LATENCY_SAMPLES and res["throughput_n"] == 2 and res["budget_limited"]
    assert res["cpu_ms_p50"] > 0


def test_reference_comparison_needs_the_same_probe_sources(tmp_path):
    """A backend run with a smaller per-backend limit probes other test-set pairs: its rows are not
    compared with the reference's (they would look like a broken model)."""
    import numpy as np

    from orchestrator.suites.base import CompareContext
    from orchestrator.suites.source_sensitivity import LOGITS, SourceSensitivitySuite, texts_digest

    rng = np.random.default_rng(0)
    logits = rng.normal(size=(6, 12)).astype(np.float32)
    results = {}
    for name, texts in (("ref", ["a", "b"]), ("same", ["a", "b"]), ("limited", ["a", "c"])):
        d = tmp_path / "backends" / name
        d.mkdir(parents=True)
        np.save(d / LOGITS, logits)
        results[name] = {"logits": LOGITS, "cross_cosine_mean": 0.4, "top_k": 3,
                         "sources_sha256": texts_digest(texts)}
    ctx = CompareContext(model=None, sources=[], references=[], run_dir=tmp_path, reference_backend="ref")
    out = SourceSensitivitySuite().compare(results, ctx)
    assert out["same"]["cosine_to_reference_mean"] == pytest.approx(1.0)
    assert "cosine_to_reference_mean" not in out["limited"]
    assert "probe sources differ" in out["limited"]["reference_comparison_skipped"]
