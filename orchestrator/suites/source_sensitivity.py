"""Source sensitivity: does the decoder still see the source at the first step?

``run()`` (in the backend's worker) computes ``backend.first_step_logits`` (decoder prefix =
the decoder start token) for the two canonical unrelated sentences plus ``pairs`` pairs of
test-set sources drawn with a fixed seed (disjoint indices), ``batch_size`` sources per
call (default 8). It saves the logits to
``first_step_logits.npy`` and reports, over the pairs:

* ``cross_cosine_mean/max/min`` — cosine of the two sources' first-step logits (1.0 = the
  decoder produces the same distribution whatever the source: *source-blind*);
* ``same_argmax_rate`` — share of pairs whose first token is the same;
* ``top10_overlap_mean`` — shared top-10 ids (fraction);
* ``logit_range_mean`` — max - min of a logit row (a collapsed range hints at saturation);
* ``canonical`` — the same numbers for the canonical pair alone.

``compare()`` (parent) adds, against the reference backend and *the same source*:
``cosine_to_reference_mean/min``, ``argmax_agreement_with_reference``,
``top10_overlap_with_reference``, and the ``source_blind`` flag:

    source_blind = cross_cosine_mean >= blind_threshold
                   and reference cross_cosine_mean <= cross_cosine_mean - blind_margin

(with no reference result only the first condition is used).

Options (``[suites.source-sensitivity]`` in the matrix; defaults):

    pairs = 50              # test-set pairs in addition to the canonical pair
    seed = 0                # which pairs
    top_k = 10              # top-k overlap
    batch_size = 8          # sources per first_step_logits call
    blind_threshold = 0.98  # cross-source cosine at/above which a backend looks source-blind
    blind_margin = 0.02     # ... provided the reference's cross-source cosine is this much lower
"""
from __future__ import annotations

import hashlib
from typing import Any

import numpy as np

from orchestrator.suites.base import CompareContext, Suite, SuiteContext
from orchestrator.suites.util import cosine_rows, finite, sample_indices, suite_options, topk_ids, topk_overlap

CANONICAL = ("The committee approved the budget after a long debate.",
             "The patient developed a fever after the second injection.")
LOGITS = "first_step_logits.npy"
DEFAULTS: dict[str, Any] = {"pairs": 50, "seed": 0, "top_k": 10, "batch_size": 8,
                            "blind_threshold": 0.98, "blind_margin": 0.02}


def pair_sources(sources: list[str], pairs: int, seed: int) -> tuple[list[str], list[tuple[int, int]]]:
    """Canonical pair first, then ``pairs`` disjoint pairs of test-set sources.

    Returns (texts, [(i, j) row pairs into texts]).
    """
    texts = list(CANONICAL)
    idx = sample_indices(len(sources), 2 * pairs, seed)
    rng = np.random.default_rng(seed + 1)
    idx = [idx[i] for i in rng.permutation(len(idx))]  # unrelated partners, not neighbours
    for k in range(len(idx) // 2):
        texts += [sources[idx[2 * k]], sources[idx[2 * k + 1]]]
    return texts, [(2 * k, 2 * k + 1) for k in range(len(texts) // 2)]


def texts_digest(texts: list[str]) -> str:
    return hashlib.sha256("\n".join(texts).encode("utf-8")).hexdigest()[:16]


def cross_stats(logits: np.ndarray, pairs: list[tuple[int, int]], k: int) -> dict[str, Any]:
    a = logits[[i for i, _ in pairs]]
    b = logits[[j for _, j in pairs]]
    cos = cosine_rows(a, b)
    same = topk_ids(a, 1)[:, 0] == topk_ids(b, 1)[:, 0]
    ovl = topk_overlap(a, b, k)
    rng = logits.max(axis=-1) - logits.min(axis=-1)
    test = slice(1, None)  # pair 0 is the canonical pair
    return {
        "n_pairs": len(pairs),
        "cross_cosine_mean": finite(cos.mean(), 6), "cross_cosine_max": finite(cos.max(), 6),
        "cross_cosine_min": finite(cos.min(), 6),
        "same_argmax_rate": finite(same.mean()), f"top{k}_overlap_mean": finite(ovl.mean()),
        "logit_range_mean": finite(rng.mean(), 3), "logit_range_min": finite(rng.min(), 3),
        "canonical": {"cosine": finite(cos[0], 6), "same_argmax": bool(same[0]),
                      f"top{k}_overlap": finite(ovl[0]), "argmax": [int(x) for x in topk_ids(logits[:2], 1)[:, 0]],
                      "logit_range": [finite(r, 3) for r in rng[:2]]},
        "test_pairs_cross_cosine_mean": finite(cos[test].mean(), 6) if len(cos) > 1 else None,
    }


class SourceSensitivitySuite(Suite):
    name = "source-sensitivity"
    description = "first-step logits across unrelated sources (source-blind decoders) and vs the reference"
    defaults = DEFAULTS
    metrics = ("cross_source_cosine", "cross_source_same_argmax", "source_blind",
               "first_step_cosine_to_reference", "first_step_argmax_agreement")
    lower_is_better = frozenset({"cross_source_cosine", "cross_source_same_argmax", "source_blind"})

    def supports(self, backend) -> bool:
        return callable(getattr(backend, "first_step_logits", None))

    def run(self, backend, ctx: SuiteContext) -> dict[str, Any]:
        opt = suite_options(ctx, self.name, DEFAULTS)
        texts, pairs = pair_sources(ctx.sources, int(opt["pairs"]), int(opt["seed"]))
        bs = max(1, int(opt["batch_size"]))
        rows = []
        for i in range(0, len(texts), bs):
            enc = ctx.model.encode_sources(texts[i:i + bs], backend.max_source_length)
            rows.append(backend.first_step_logits(enc.input_ids, enc.attention_mask))
            ctx.report(min(i + bs, len(texts)), len(texts), self.name)
        logits = np.concatenate(rows, axis=0).astype(np.float32)
        ctx.outdir.mkdir(parents=True, exist_ok=True)
        np.save(ctx.outdir / LOGITS, logits)
        k = int(opt["top_k"])
        stats = cross_stats(logits, pairs, k)
        return {"logits": LOGITS, "n_sources": len(texts), "sources_sha256": texts_digest(texts),
                "pairs_seed": int(opt["seed"]), "top_k": k,
                "batch_size": bs, "canonical_sources": list(CANONICAL), **stats,
                "metrics": {"cross_source_cosine": stats["cross_cosine_mean"],
                            "cross_source_same_argmax": stats["same_argmax_rate"]}}

    def compare(self, results: dict[str, dict[str, Any]], ctx: CompareContext) -> dict[str, dict[str, Any]]:
        opt = suite_options(ctx, self.name, DEFAULTS)
        thr, margin = float(opt["blind_threshold"]), float(opt["blind_margin"])
        ref_name = ctx.reference_backend
        ref = results.get(ref_name)
        ref_logits = np.load(ctx.backend_dir(ref_name) / ref["logits"]) if ref else None
        ref_cross = ref.get("cross_cosine_mean") if ref else None
        out: dict[str, dict[str, Any]] = {}
        for name, res in results.items():
            cross = res.get("cross_cosine_mean")
            blind = cross is not None and cross >= thr
            if blind and ref_cross is not None:
                blind = ref_cross <= cross - margin
            extra: dict[str, Any] = {
                "source_blind": bool(blind),
                "source_blind_rule": {"blind_threshold": thr, "blind_margin": margin,
                                      "cross_cosine_mean": cross, "reference_cross_cosine_mean": ref_cross},
            }
            metrics: dict[str, Any] = {"source_blind": bool(blind)}
            if ref_logits is not None:
                logits = np.load(ctx.backend_dir(name) / res["logits"])
                same_texts = res.get("sources_sha256") == ref.get("sources_sha256")
                if not same_texts:  # e.g. a smaller per-backend limit samples other test-set pairs
                    extra["reference_comparison_skipped"] = (
                        "the probe sources differ from the reference's (a different per-backend limit): "
                        "rows are not comparable")
                elif logits.shape == ref_logits.shape:
                    k = int(res.get("top_k", 10))
                    cos = cosine_rows(logits, ref_logits)
                    agree = topk_ids(logits, 1)[:, 0] == topk_ids(ref_logits, 1)[:, 0]
                    extra.update({
                        "cosine_to_reference_mean": finite(cos.mean(), 6),
                        "cosine_to_reference_min": finite(cos.min(), 6),
                        "argmax_agreement_with_reference": finite(agree.mean()),
                        f"top{k}_overlap_with_reference": finite(topk_overlap(logits, ref_logits, k).mean()),
                        "max_abs_logit_diff_vs_reference": finite(np.abs(logits - ref_logits).max(), 6),
                    })
                    metrics["first_step_cosine_to_reference"] = extra["cosine_to_reference_mean"]
                    metrics["first_step_argmax_agreement"] = extra["argmax_agreement_with_reference"]
                else:
                    extra["reference_comparison_skipped"] = (f"logit shapes differ: {list(logits.shape)} vs "
                                                             f"reference {list(ref_logits.shape)}")
            extra["metrics"] = metrics
            out[name] = extra
        return out
