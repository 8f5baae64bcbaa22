"""Divergence margins: the reference's scores where a backend's output leaves it."""
from __future__ import annotations

import numpy as np
import pytest

from orchestrator.suites.margins import (bin_labels, fit_noise_scale, margin_stats, noise_scale_for, predicted_identical,
                                         score_own_output, scored_steps, self_agreement)

EOS = 0


def _scored(rows: list[list[tuple[list[int], list[float]]]]) -> dict[str, np.ndarray]:
    """Hand-made reference scores: per sentence, per step (top-k ids, their log-probs)."""
    ids = [r[0] for sent in rows for r in sent]
    logp = [r[1] for sent in rows for r in sent]
    return {"ids": np.array(ids, np.int32), "logp": np.array(logp, np.float32),
            "chosen": np.array([i[0] for i in ids], np.int32),
            "offsets": np.cumsum([0] + [len(s) for s in rows]).astype(np.int64)}


# reference outputs [5, 6] and [7]; each step scores its token, EOS (0) closes
REF = [[5, 6], [7]]
SCORED = _scored([
    [([5, 9, 8], [-0.1, -2.5, -3.0]),   # top-2 margin 2.4
     ([6, 4, 3], [-0.6, -0.8, -4.0]),   # 0.2
     ([0, 2, 1], [-0.05, -3.5, -4.0])],  # 3.45
    [([7, 1, 2], [-0.3, -1.6, -3.0]),   # 1.3
     ([0, 3, 1], [-0.2, -1.9, -5.0])],  # 1.7
])


def test_margins_at_the_first_divergence_and_flip_rates():
    # sentence 0 takes the runner-up at a near tie; sentence 1 takes the 3rd choice where the reference was sure
    s = margin_stats(SCORED, REF, [[5, 4], [2]], EOS, near_tie_nats=1.0)
    assert s["diverged"] == 2 and s["unscored"] == 0 and s["top_k"] == 3
    assert s["ref_margin_median"] == pytest.approx((0.2 + 2.7) / 2, abs=1e-5)
    assert s["ref_margin_max"] == pytest.approx(2.7, abs=1e-5)
    assert s["near_tie_share"] == 0.5 and s["runner_up_share"] == 0.5 and s["outside_top_k_share"] == 0.0
    # steps reached with the same prefix: s0 steps 0 (2.4) and 1 (0.2, flipped); s1 step 0 (1.3, flipped)
    curve = s["flip_rate_by_margin"]
    assert list(curve) == bin_labels() == ["0-0.1", "0.1-0.25", "0.25-0.5", "0.5-1", "1-2", "2+"]
    assert curve["0.1-0.25"] == {"steps": 1, "flips": 1, "rate": 1.0}
    assert curve["1-2"] == {"steps": 1, "flips": 1, "rate": 1.0}
    assert curve["2+"] == {"steps": 1, "flips": 0, "rate": 0.0}
    assert curve["0-0.1"] == {"steps": 0, "flips": 0, "rate": None}
    assert (s["decisive_steps"], s["decisive_flips"], s["decisive_flip_rate"]) == (2, 1, 0.5)


def test_identical_outputs_count_every_step_and_flip_none():
    s = margin_stats(SCORED, REF, [list(t) for t in REF], EOS, near_tie_nats=1.0)
    assert s["diverged"] == 0 and s["ref_margin_median"] is None and s["near_tie_share"] is None
    assert sum(c["steps"] for c in s["flip_rate_by_margin"].values()) == 5  # all 3 + 2 steps, EOS included
    assert sum(c["flips"] for c in s["flip_rate_by_margin"].values()) == 0
    assert s["decisive_steps"] == 4 and s["decisive_flip_rate"] == 0.0


def test_an_early_eos_outside_the_top_k_gets_a_lower_bound_margin():
    # sentence 0 stops after one token: at step 1 the backend chose EOS, which the reference ranked below top-3
    s = margin_stats(SCORED, REF, [[5], [7]], EOS, near_tie_nats=1.0)
    assert s["diverged"] == 1 and s["outside_top_k_share"] == 1.0 and s["runner_up_share"] == 0.0
    assert s["ref_margin_median"] == pytest.approx(-0.6 - -4.0, abs=1e-5)  # top-1 - top-3: at least this
    # a longer output diverges where the reference predicted EOS
    s = margin_stats(SCORED, REF, [[5, 6, 2], [7]], EOS, near_tie_nats=1.0)
    assert s["diverged"] == 1 and s["ref_margin_median"] == pytest.approx(3.45, abs=1e-5)
    assert s["flip_rate_by_margin"]["2+"] == {"steps": 2, "flips": 1, "rate": 0.5}


def test_a_higher_near_tie_threshold_reclassifies():
    s = margin_stats(SCORED, REF, [[5, 4], [2]], EOS, near_tie_nats=3.0)
    assert s["near_tie_share"] == 1.0 and s["decisive_steps"] == 0 and s["decisive_flip_rate"] is None


def test_scored_steps():
    assert scored_steps([], 8) == 1 and scored_steps([1, 2], 8) == 3
    assert scored_steps(list(range(8)), 8) == 8  # stopped at max_new_tokens: no EOS prediction


def test_score_own_output_on_a_tiny_model(tiny_model):
    """Teacher-forcing a backend's own greedy output reproduces its choices (argmax = the token taken),
    across batches with padding, and the margins of an output against itself show no divergence."""
    from backends.model import ModelBundle
    from backends.registry import get_backend
    from tests.orchestrator.suites.helpers import load_test_data

    model_dir = tiny_model("marian")
    bundle = ModelBundle.load(model_dir)
    sources, _ = load_test_data(7)
    be = get_backend("torch-fp32-split", max_new_tokens=6)
    be.prepare(bundle, model_dir.parent / "margins-artifacts")
    with be:
        enc = bundle.encode_sources(sources, be.max_source_length)
        tokens = be.generate(enc.input_ids, enc.attention_mask)
        scored = score_own_output(be, bundle, sources, tokens, batch_size=3, top_k=4)
    eos = bundle.conventions.eos_token_id
    counts = np.diff(scored["offsets"])
    assert counts.tolist() == [scored_steps(t, 6) for t in tokens]
    chosen = [(list(t) + [eos])[:scored_steps(t, 6)] for t in tokens]
    assert scored["chosen"].tolist() == [x for c in chosen for x in c]
    assert scored["ids"].shape == scored["logp"].shape == (int(counts.sum()), 4)
    assert self_agreement(scored) == 1.0
    lp = scored["logp"]  # processed scores: a forced EOS at the last step leaves -inf for the rest
    assert np.all(lp[:, :-1] >= lp[:, 1:]) and np.all(lp <= 0) and np.all(np.isfinite(lp[:, 0]))
    assert np.all(np.exp(scored["logp"]).sum(axis=1) <= 1 + 1e-5)
    s = margin_stats(scored, tokens, tokens, eos, near_tie_nats=1.0)
    assert s["diverged"] == 0 and sum(c["steps"] for c in s["flip_rate_by_margin"].values()) == counts.sum()
    with pytest.raises(ValueError, match="7 sources but 6 outputs"):
        score_own_output(be, bundle, sources, tokens[:6], batch_size=3)


def test_noise_scale_and_predicted_identity_on_the_hand_made_example():
    s = margin_stats(SCORED, REF, [list(t) for t in REF], EOS, near_tie_nats=1.0)
    assert s["noise_scale"] == 0.0 and s["identical"] == 1.0 and s["identical_predicted"] == 1.0
    s = margin_stats(SCORED, REF, [[5, 4], [2]], EOS, near_tie_nats=1.0)
    assert s["identical"] == 0.0 and s["noise_scale"] > 0
    # flips at margins 0.2 and 1.3, a keep at 2.4: the fit is the one maximum of the likelihood
    m, f = np.array([2.4, 0.2, 1.3]), np.array([False, True, True])
    assert s["noise_scale"] == pytest.approx(fit_noise_scale(m, f))
    nll = lambda x: -np.sum(np.where(f, -np.logaddexp(0, m / x), -np.logaddexp(0, -m / x)))  # noqa: E731
    assert nll(s["noise_scale"]) <= min(nll(s["noise_scale"] * 0.9), nll(s["noise_scale"] * 1.1))


def test_fit_noise_scale_edges():
    assert fit_noise_scale(np.zeros(0), np.zeros(0, bool)) is None
    assert fit_noise_scale(np.array([0.1, 2.0]), np.array([False, False])) == 0.0


def test_predicted_identical_by_hand():
    # sentence 0: one step at margin ln 3 (keeps 3/4 at s = 1); sentence 1: an exact tie (1/2) and a sure step
    top2, off = np.array([np.log(3.0), 0.0, np.inf]), np.array([0, 1, 3])
    assert predicted_identical(top2, off, 1.0) == pytest.approx((0.75 + 0.5) / 2)
    assert predicted_identical(top2, off, 0.0) == pytest.approx((1.0 + 0.5) / 2)  # noiseless still splits ties
    assert noise_scale_for(top2, off, 0.9) is None  # the exact tie alone keeps it at 75%
    s = noise_scale_for(top2, off, 0.7)
    assert predicted_identical(top2, off, s) == pytest.approx(0.7, abs=1e-6)
    assert noise_scale_for(top2, off, 0.6) > s  # a lower target allows more noise
    # the first sentence alone: the steps after offsets[-1] belong to sentences not asked about
    assert predicted_identical(top2, off[:2], 1.0) == pytest.approx(0.75)


def test_the_flip_model_recovers_a_known_noise_scale_from_greedy_outputs():
    """Simulated backends flip each step of the reference's output with the logistic model's
    probability and continue on their own token: margin_stats sees only tokens, yet fits the scale
    and predicts the identical share it measures."""
    rng = np.random.default_rng(0)
    n, steps = 3000, 6
    margins = rng.exponential(0.8, size=(n, steps))
    rows = [[([10 + t, 50 + t], [0.0, -float(margins[i, t])]) for t in range(steps)] for i in range(n)]
    scored = _scored(rows)
    ref = [[10 + t for t in range(steps - 1)] for _ in range(n)]
    scored["ids"][scored["offsets"][1:] - 1, 0] = EOS  # each output's last step predicts EOS
    for true_s in (0.05, 0.2):
        flips = rng.random((n, steps)) < 1.0 / (1.0 + np.exp(margins / true_s))
        outs = []
        for i in range(n):
            t = int(np.argmax(flips[i])) if flips[i].any() else None
            if t is None:
                outs.append(list(ref[i]))
            else:
                outs.append(ref[i][:t] + [50 + t])
        s = margin_stats(scored, ref, outs, EOS, near_tie_nats=1.0)
        assert s["noise_scale"] == pytest.approx(true_s, rel=0.15)
        assert s["identical_predicted"] == pytest.approx(s["identical"], abs=0.03)
        assert s["identical"] == pytest.approx(np.mean(~flips.any(axis=1)))


def test_identity_targets_must_be_shares():
    from backends.errors import InvalidInputError
    from orchestrator.suites.split_generation import SplitGenerationSuite

    suite = SplitGenerationSuite()
    assert suite.options({"identity_targets": [0.5, 0.99]}, "[w]")["identity_targets"] == [0.5, 0.99]
    with pytest.raises(InvalidInputError, match=r"identity_targets must be shares .*\[1\.2, 0, True\]"):
        suite.options({"identity_targets": [0.8, 1.2, 0, True]}, "[w]")
