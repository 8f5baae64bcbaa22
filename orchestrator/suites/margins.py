"""Where a backend's greedy output leaves the reference's, and how close the reference's own call was.

A quantized backend that is healthy but noisy changes the greedy output only where the
reference model itself hesitated (its top two tokens nearly tied); a broken one changes it where
the reference was sure. Counting "identical to FP32" cannot tell these apart; this can.

``score_own_output`` (run in the *reference* backend's worker) teacher-forces the reference's
own greedy output (the quality suite's tokens) through ``encode``/``decode_step`` and keeps, per
step, the top-``k`` token ids and log-probabilities after the family's logits processing: the
scores greedy search took its argmax over. ``margin_stats`` (run in ``compare()``) reads them
for another backend's tokens:

* at each sentence's first divergence step, the reference's **margin**: log p(reference's
  token) − log p(backend's token), in nats; the backend's token's rank in the reference's
  distribution (2 = the reference's runner-up);
* the **flip rate by margin**: over every step both outputs reached with the same prefix (the
  shared prefix and the divergence step), the share of steps where the backend chose another
  token, binned by the reference's top-1 − top-2 margin at that step. A backend whose logits
  carry a little noise flips only the lowest bins; a source-blind one flips every bin;
* the **decisive flip rate**: the same over the steps where the reference's margin is at least
  ``near_tie_nats`` (a step it was sure of);
* the **noise scale**: the flip curve summed up in one number. Each step is modelled as the reference's
  top-1 - top-2 margin ``m`` plus noise, logistic with scale ``s``, so the backend flips the step with
  probability ``1 / (1 + exp(m / s))`` (half the exact ties; 27% at ``m = s``; the noise on the margin
  has standard deviation ``s * pi / sqrt(3)``). ``s`` is the maximum-likelihood fit over the steps both
  outputs reached with the same prefix, and the model is checked by what it predicts: the share of
  sentences identical to the reference, ``prod(1 - P(flip))`` over every step of the reference's
  output, against the share measured;
* the **noise budget** (:func:`noise_scale_for`): the largest scale at which the same model predicts
  a target share of identical outputs (e.g. 80%) on the reference's own margins -- how much less
  noise a backend needs to reach a target, before anyone tries a recipe.
"""
from __future__ import annotations

import hashlib
import json
from typing import Any

import numpy as np

from backends.generation import _log_softmax, process_scores
from orchestrator.suites.util import topk_ids

#: upper edges (nats) of the reference-margin bins of the flip-rate curve; the last bin is open
MARGIN_EDGES = (0.1, 0.25, 0.5, 1.0, 2.0)


#: fitted noise scales are searched in [SCALE_MIN, SCALE_MAX] nats (a backend flipping even sure steps
#: at random sits at the top; one that never flips is 0)
SCALE_MIN, SCALE_MAX = 1e-4, 1e3


def _log_sigmoid(x: np.ndarray) -> np.ndarray:
    return -np.logaddexp(0.0, -x)


def _golden_min(f, lo: float, hi: float, iters: int = 80) -> float:
    """The minimum of a unimodal ``f`` on ``[lo, hi]`` (golden-section search)."""
    g = (np.sqrt(5.0) - 1.0) / 2.0
    a, b = lo, hi
    c, d = b - g * (b - a), a + g * (b - a)
    fc, fd = f(c), f(d)
    for _ in range(iters):
        if fc <= fd:
            b, d, fd = d, c, fc
            c = b - g * (b - a)
            fc = f(c)
        else:
            a, c, fc = c, d, fd
            d = a + g * (b - a)
            fd = f(d)
    return (a + b) / 2.0


def fit_noise_scale(margins: np.ndarray, flipped: np.ndarray) -> float | None:
    """Maximum-likelihood scale ``s`` (nats) of the logistic flip model ``P(flip | m) = 1 / (1 + exp(m / s))``
    over steps with reference top-1 - top-2 margins ``margins`` and whether the backend flipped them;
    None without steps, 0.0 without flips. The log-likelihood is concave in ``1 / s``, so a search over
    ``log s`` finds its one maximum."""
    m = np.asarray(margins, dtype=np.float64)
    f = np.asarray(flipped, dtype=bool)
    if m.size == 0:
        return None
    if not f.any():
        return 0.0

    def nll(log_s: float) -> float:
        s = np.exp(log_s)
        return -float(np.sum(_log_sigmoid(-m[f] / s)) + np.sum(_log_sigmoid(m[~f] / s)))

    return float(np.exp(_golden_min(nll, np.log(SCALE_MIN), np.log(SCALE_MAX))))


def predicted_identical(top2: np.ndarray, offsets: np.ndarray, scale: float) -> float:
    """Share of sentences the logistic flip model with ``scale`` predicts identical to the reference:
    the mean over sentences of ``prod(1 - P(flip))`` over every step of the reference's output
    (``top2``: its top-1 - top-2 margin per step; sentence i's steps are ``offsets[i]:offsets[i + 1]``,
    ``offsets[0] = 0``; steps past ``offsets[-1]`` belong to sentences not asked about)."""
    n = len(offsets) - 1
    if n <= 0:
        return 1.0
    m = np.asarray(top2, dtype=np.float64)[:int(offsets[-1])]
    if scale <= 0:
        keep = np.where(m > 0, 0.0, np.log(0.5))  # a zero-noise backend still splits exact ties
    else:
        keep = _log_sigmoid(m / scale)
    per_sentence = np.zeros(n)
    lens = np.diff(offsets)
    nonempty = lens > 0
    per_sentence[nonempty] = np.add.reduceat(keep, offsets[:-1][nonempty])
    return float(np.mean(np.exp(per_sentence)))


def noise_scale_for(top2: np.ndarray, offsets: np.ndarray, target: float) -> float | None:
    """The largest logistic noise scale at which :func:`predicted_identical` still reaches ``target``
    (None when even a noiseless backend would not: the reference's exact ties alone cost more)."""
    if predicted_identical(top2, offsets, 0.0) < target:
        return None
    if predicted_identical(top2, offsets, SCALE_MIN) < target:
        return 0.0
    lo, hi = np.log(SCALE_MIN), np.log(SCALE_MAX)
    for _ in range(80):  # predicted_identical falls as the scale grows
        mid = (lo + hi) / 2.0
        lo, hi = (mid, hi) if predicted_identical(top2, offsets, float(np.exp(mid))) >= target else (lo, mid)
    return float(np.exp(lo))


def top2_margins(scored: dict[str, np.ndarray]) -> np.ndarray:
    """The reference's top-1 - top-2 log-prob margin per scored step (inf with a top-1 only)."""
    logp = scored["logp"]
    return (logp[:, 0] - logp[:, 1]).astype(np.float64) if logp.shape[1] > 1 else np.full(len(logp), np.inf)


def bin_labels(edges=MARGIN_EDGES) -> list[str]:
    lows = (0.0,) + tuple(edges)
    return [f"{lo:g}-{hi:g}" for lo, hi in zip(lows, edges)] + [f"{edges[-1]:g}+"]


def tokens_digest(tokens: list[list[int]]) -> str:
    """Identifies the outputs a reference's margins were scored on (compare() checks it still holds)."""
    return hashlib.sha256(json.dumps(tokens, separators=(",", ":")).encode()).hexdigest()[:16]


def scored_steps(tokens: list[int], max_new_tokens: int) -> int:
    """Steps a greedy output of ``tokens`` took: one per token, plus the EOS prediction unless the
    output stopped at ``max_new_tokens``."""
    return min(len(tokens) + 1, max_new_tokens)


def score_own_output(backend, model, sources: list[str], tokens: list[list[int]], batch_size: int,
                     top_k: int = 5, progress=None) -> dict[str, np.ndarray]:
    """Teacher-force ``tokens`` (this backend's own greedy outputs for ``sources``) and keep the
    processed top-``k`` log-probabilities per step: arrays ``ids [S, k]``, ``logp [S, k]``,
    ``chosen [S]`` (the token greedy took) and ``offsets [N + 1]`` (sentence i's steps are
    ``offsets[i]:offsets[i + 1]``)."""
    if len(sources) != len(tokens):
        raise ValueError(f"{len(sources)} sources but {len(tokens)} outputs")
    conv = model.conventions
    max_new = backend.max_new_tokens
    ids_out, lp_out, chosen_out, counts = [], [], [], []
    bs = max(1, int(batch_size))
    for start in range(0, len(sources), bs):
        toks = tokens[start:start + bs]
        steps = [scored_steps(t, max_new) for t in toks]
        n_steps = max(steps)
        prefix = np.full((len(toks), n_steps + 1), conv.pad_token_id, dtype=np.int64)
        prefix[:, 0] = conv.decoder_start_token_id
        for r, t in enumerate(toks):
            seq = (list(t) + [conv.eos_token_id])[:steps[r]]
            prefix[r, 1:1 + len(seq)] = seq
        enc = model.encode_sources(sources[start:start + bs], backend.max_source_length)
        state = backend.encode(enc.input_ids, enc.attention_mask)
        cache = None
        per_step = []
        for s in range(n_steps):
            logits, cache = backend.decode_step(state, prefix[:, :s + 1], cache)
            scores = process_scores(np.array(logits, dtype=np.float32), prefix[:, :s + 1], 1 + max_new, conv)
            logp = _log_softmax(scores.astype(np.float64))
            top = topk_ids(logp, top_k)
            per_step.append((top, np.take_along_axis(logp, top, axis=1)))
        for r in range(len(toks)):
            ids_out.append(np.stack([per_step[s][0][r] for s in range(steps[r])]))
            lp_out.append(np.stack([per_step[s][1][r] for s in range(steps[r])]))
            chosen_out.append(prefix[r, 1:steps[r] + 1])
            counts.append(steps[r])
        if progress is not None:
            progress(min(start + bs, len(sources)), len(sources))
    return {"ids": np.concatenate(ids_out).astype(np.int32), "logp": np.concatenate(lp_out).astype(np.float32),
            "chosen": np.concatenate(chosen_out).astype(np.int32),
            "offsets": np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)}


def self_agreement(scored: dict[str, np.ndarray]) -> float:
    """Share of steps whose processed argmax is the token the output holds (1.0 unless the backend's
    step logits and its own generation disagree, e.g. batch-padding effects)."""
    return float(np.mean(scored["ids"][:, 0] == scored["chosen"])) if len(scored["chosen"]) else 1.0


def margin_stats(scored: dict[str, np.ndarray], ref_tokens: list[list[int]], tokens: list[list[int]],
                 eos_token_id: int, near_tie_nats: float, edges=MARGIN_EDGES) -> dict[str, Any]:
    """The reference's margins where ``tokens`` leave ``ref_tokens`` and the flip rate by margin.
    ``scored`` is :func:`score_own_output` of ``ref_tokens``."""
    from orchestrator.suites.split_generation import first_divergence

    ids, logp, off = scored["ids"], scored["logp"], scored["offsets"]
    top2 = top2_margins(scored)
    n_bins = len(edges) + 1
    flips, steps = np.zeros(n_bins, dtype=np.int64), np.zeros(n_bins, dtype=np.int64)
    margins, ranks = [], []
    seen_all, flipped_all = [], []
    unscored = dec_steps = dec_flips = identical = 0
    for i, (toks, ref) in enumerate(zip(tokens, ref_tokens)):
        n = int(off[i + 1] - off[i])
        d = first_divergence(list(toks), list(ref))
        if d is not None and d >= n:  # past the reference's scored steps (it stopped at max_new_tokens)
            unscored += 1
            d = None
        last = n - 1 if d is None else d
        seen = top2[off[i]:off[i] + last + 1]
        bins = np.searchsorted(edges, seen, side="right")
        np.add.at(steps, bins, 1)
        dec_steps += int(np.sum(seen >= near_tie_nats))
        seen_all.append(seen)
        flipped_all.append(np.arange(seen.size) == (seen.size - 1 if d is not None else -1))
        identical += int(list(toks) == list(ref))
        if d is None:
            continue
        flips[bins[-1]] += 1
        dec_flips += int(seen[-1] >= near_tie_nats)
        row = off[i] + d
        mine = toks[d] if d < len(toks) else eos_token_id
        hit = np.nonzero(ids[row] == mine)[0]
        if hit.size:
            ranks.append(int(hit[0]) + 1)
            margins.append(float(logp[row, 0] - logp[row, hit[0]]))
        else:  # outside the stored top-k: the margin is at least the top-1 - top-k gap
            ranks.append(0)
            margins.append(float(logp[row, 0] - logp[row, -1]))
    m = np.asarray(margins)
    r = np.asarray(ranks)
    k = ids.shape[1]
    labels = bin_labels(edges)
    scale = fit_noise_scale(np.concatenate(seen_all) if seen_all else np.zeros(0),
                            np.concatenate(flipped_all) if flipped_all else np.zeros(0, bool))
    out: dict[str, Any] = {
        "diverged": int(m.size), "unscored": unscored, "top_k": int(k), "near_tie_nats": near_tie_nats,
        "ref_margin_median": float(np.median(m)) if m.size else None,
        "ref_margin_max": float(np.max(m)) if m.size else None,
        "near_tie_share": float(np.mean(m < near_tie_nats)) if m.size else None,
        "runner_up_share": float(np.mean(r == 2)) if m.size else None,
        "outside_top_k_share": float(np.mean(r == 0)) if m.size else None,
        "decisive_steps": dec_steps, "decisive_flips": dec_flips,
        "decisive_flip_rate": dec_flips / dec_steps if dec_steps else None,
        "flip_rate_by_margin": {lab: {"steps": int(s), "flips": int(f), "rate": float(f / s) if s else None}
                                for lab, s, f in zip(labels, steps, flips)},
        "noise_scale": scale,
        "identical": identical / len(tokens) if tokens else None,
        "identical_predicted": predicted_identical(top2, off[:len(tokens) + 1], scale) if scale is not None
        else None,
    }
    return out
