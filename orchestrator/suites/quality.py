"""Quality: BLEU and chrF (sacrebleu, with signatures) and agreement with the reference backend."""
from __future__ import annotations

import json
from typing import Any

from orchestrator.suites.base import CompareContext, Suite, SuiteContext, translate_all

HYPS = "hypotheses.txt"
TOKENS = "hypotheses.tokens.json"


def corpus_scores(hyps: list[str], refs: list[str]) -> dict[str, Any]:
    import sacrebleu

    bleu = sacrebleu.metrics.BLEU()
    chrf = sacrebleu.metrics.CHRF()
    b = bleu.corpus_score(hyps, [refs])
    c = chrf.corpus_score(hyps, [refs])
    return {"bleu": round(b.score, 2), "chrf": round(c.score, 2),
            "bleu_signature": str(bleu.get_signature()), "chrf_signature": str(chrf.get_signature())}


class QualitySuite(Suite):
    name = "quality"
    description = "BLEU/chrF vs references; exact match vs the reference backend's outputs"

    def run(self, backend, ctx: SuiteContext) -> dict[str, Any]:
        tokens, truncated = translate_all(backend, ctx, label="quality")
        hyps = ctx.model.decode(tokens)
        ctx.outdir.mkdir(parents=True, exist_ok=True)
        (ctx.outdir / HYPS).write_text("\n".join(h.replace("\n", " ") for h in hyps) + "\n", encoding="utf-8")
        (ctx.outdir / TOKENS).write_text(json.dumps(tokens))
        scores = corpus_scores(hyps, ctx.references)
        n_tokens = sum(len(t) + 1 for t in tokens)
        return {"n": len(hyps), "num_beams": ctx.num_beams, "truncated_sources": truncated,
                "hypotheses": HYPS, "tokens": TOKENS, "generated_tokens": n_tokens, **scores,
                "metrics": {"bleu": scores["bleu"], "chrf": scores["chrf"]}}

    def compare(self, results: dict[str, dict[str, Any]], ctx: CompareContext) -> dict[str, dict[str, Any]]:
        ref = ctx.reference_backend
        if ref not in results:
            return {}
        ref_tokens = json.loads((ctx.backend_dir(ref) / results[ref]["tokens"]).read_text())
        out = {}
        for name, res in results.items():
            toks = json.loads((ctx.backend_dir(name) / res["tokens"]).read_text())
            same = sum(a == b for a, b in zip(toks, ref_tokens))
            rate = same / max(1, len(ref_tokens))
            out[name] = {"exact_match_vs_reference": round(rate, 4), "identical_outputs": same,
                         "metrics": {"exact_match_vs_reference": round(rate, 4),
                                     "bleu_delta_vs_reference": round(res["bleu"] - results[ref]["bleu"], 2)}}
        return out
