"""Quality: BLEU and chrF (sacrebleu, with signatures) and agreement with the reference backend.

``compare()`` adds, per backend, exact match and BLEU/chrF deltas vs the reference backend, and
sacrebleu's paired bootstrap test (``sacrebleu.significance.PairedTest``, ``test_type="bs"``)
of each backend against the reference backend, with the test's signature (seed, resamples).
A backend whose outputs are identical to the reference's gets ``p_value = 1.0`` without a
test (sacrebleu would report the minimum p-value for a zero difference).

Options (``[suites.quality]``; defaults):

    bootstrap_samples = 1000       # paired bootstrap resamples (0 disables the test)
    bootstrap_metrics = ["bleu"]   # metrics tested: "bleu", "chrf" (chrF triples the cost)
    alpha = 0.05                   # significance level for the ``significant`` flag (on BLEU)
    batch1_sentences = 0           # re-translate the first N test sources one at a time and report the
                                   # share whose tokens equal the batched ones (``batch1_agreement``; 0: off,
                                   # and nothing to compare at batch size 1): a backend that quantizes per
                                   # call can give other tokens in another batch (tflite-dynamic does)
"""
from __future__ import annotations

import json
from typing import Any

from backends.errors import InvalidInputError
from orchestrator.suites.base import CompareContext, Suite, SuiteContext, translate_all
from orchestrator.suites.util import suite_table

HYPS = "hypotheses.txt"
TOKENS = "hypotheses.tokens.json"
DEFAULTS: dict[str, Any] = {"bootstrap_samples": 1000, "bootstrap_metrics": ["bleu"], "alpha": 0.05,
                            "batch1_sentences": 0}
METRICS = {"bleu": ("BLEU", "BLEU"), "chrf": ("chrF", "chrF2")}  # option -> (our key, sacrebleu score name)


def read_hypotheses(path, n: int) -> list[str]:
    return path.read_text(encoding="utf-8").split("\n")[:n]


def paired_bootstrap(ref_name: str, ref_hyps: list[str], systems: dict[str, list[str]], refs: list[str],
                     n_samples: int, alpha: float, which=("bleu",)) -> dict[str, dict[str, Any]]:
    """sacrebleu paired bootstrap (``which`` of BLEU, chrF) of every system against ``ref_hyps``."""
    from sacrebleu.metrics import BLEU, CHRF
    from sacrebleu.significance import PairedTest

    out: dict[str, dict[str, Any]] = {}
    tested = {n: h for n, h in systems.items() if h != ref_hyps}
    for n, h in systems.items():
        if h == ref_hyps:
            out[n] = {"test": "paired-bootstrap", "baseline": ref_name, "identical_to_baseline": True,
                      **{f"{k}_p_value": 1.0 for k in which}, "significant": False}
    if not tested or n_samples <= 0:
        return out
    named = [(ref_name, ref_hyps)] + list(tested.items())
    makers = {"bleu": BLEU, "chrf": CHRF}
    test = PairedTest(named, {METRICS[k][0]: makers[k]() for k in which}, [refs], test_type="bs",
                      n_samples=n_samples)
    sigs, scores = test()
    keys = {METRICS[k][1]: k for k in which}
    for row, n in enumerate(scores["System"]):
        if row == 0:
            continue
        res: dict[str, Any] = {"test": "paired-bootstrap", "baseline": ref_name, "identical_to_baseline": False,
                               "n_samples": n_samples, "alpha": alpha,
                               "signatures": {k: str(v) for k, v in sigs.items()}}
        for metric, short in keys.items():
            if metric not in scores:
                continue
            r = scores[metric][row]
            res[f"{short}_p_value"] = round(float(r.p_value), 4)
            res[f"{short}_mean"] = round(float(r.mean), 2)
            res[f"{short}_ci95"] = round(float(r.ci), 2)
        first = f"{which[0]}_p_value"
        res["significant"] = bool(res.get("bleu_p_value", res.get(first, 1.0)) < alpha)
        out[n] = res
    return out


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
    defaults = DEFAULTS
    metrics = ("bleu", "chrf", "exact_match_vs_reference", "bleu_delta_vs_reference", "chrf_delta_vs_reference",
               "bleu_p_value_vs_reference", "batch1_agreement")
    lower_is_better = frozenset({"bleu_p_value_vs_reference"})

    def options(self, table: dict[str, Any], where: str) -> dict[str, Any]:
        opt = super().options(table, where)  # bootstrap_metrics is a list (its default is)
        if not opt["bootstrap_metrics"] or any(w not in METRICS for w in opt["bootstrap_metrics"]):
            raise InvalidInputError(f"{where}: bootstrap_metrics must be a non-empty list of "
                                    f"{sorted(METRICS)}, got {opt['bootstrap_metrics']!r}")
        return opt

    def run(self, backend, ctx: SuiteContext) -> dict[str, Any]:
        opt = self.options(suite_table(ctx, self.name), f"[suites.{self.name}]")
        tokens, truncated = translate_all(backend, ctx, label="quality")
        hyps = ctx.model.decode(tokens)
        ctx.outdir.mkdir(parents=True, exist_ok=True)
        (ctx.outdir / HYPS).write_text("\n".join(h.replace("\n", " ") for h in hyps) + "\n", encoding="utf-8")
        (ctx.outdir / TOKENS).write_text(json.dumps(tokens))
        scores = corpus_scores(hyps, ctx.references)
        n_tokens = sum(len(t) + 1 for t in tokens)
        out = {"n": len(hyps), "num_beams": ctx.num_beams, "truncated_sources": truncated,
               "hypotheses": HYPS, "tokens": TOKENS, "generated_tokens": n_tokens, **scores,
               "metrics": {"bleu": scores["bleu"], "chrf": scores["chrf"]}}
        n1 = min(int(opt["batch1_sentences"]), len(tokens))
        if n1 and ctx.batch_size > 1:
            single, _ = translate_all(backend, ctx, ctx.sources[:n1], label="quality, batch 1", batch_size=1)
            differ = [i for i, (a, b) in enumerate(zip(single, tokens)) if a != b]
            out["batch1"] = {"sentences": n1, "batch_size": ctx.batch_size, "differ": len(differ),
                             "first_differing": [i + 1 for i in differ[:10]]}
            out["metrics"]["batch1_agreement"] = round(1 - len(differ) / n1, 4)
        return out

    def compare(self, results: dict[str, dict[str, Any]], ctx: CompareContext) -> dict[str, dict[str, Any]]:
        ref = ctx.reference_backend
        if ref not in results:
            return {}
        opt = self.options(suite_table(ctx, self.name), f"[suites.{self.name}]")
        which = opt["bootstrap_metrics"]
        ref_tokens = json.loads((ctx.backend_dir(ref) / results[ref]["tokens"]).read_text())
        out = {}
        hyps = {}
        ref_subset_scores: dict[int, dict[str, Any]] = {}
        for name, res in results.items():
            toks = json.loads((ctx.backend_dir(name) / res["tokens"]).read_text())
            # a backend run with a smaller per-backend limit is compared on the common prefix
            n_common = min(len(toks), len(ref_tokens))
            same = sum(a == b for a, b in zip(toks, ref_tokens))
            rate = same / max(1, n_common)
            ref_scores = results[ref]
            if n_common < len(ref_tokens):
                if n_common not in ref_subset_scores:
                    ref_hyps_n = read_hypotheses(ctx.backend_dir(ref) / results[ref]["hypotheses"],
                                                 results[ref]["n"])[:n_common]
                    ref_subset_scores[n_common] = corpus_scores(ref_hyps_n, list(ctx.references[:n_common]))
                ref_scores = ref_subset_scores[n_common]
            out[name] = {"exact_match_vs_reference": round(rate, 4), "identical_outputs": same,
                         "compared_sentences": n_common,
                         "metrics": {"exact_match_vs_reference": round(rate, 4),
                                     "bleu_delta_vs_reference": round(res["bleu"] - ref_scores["bleu"], 2),
                                     "chrf_delta_vs_reference": round(res["chrf"] - ref_scores["chrf"], 2)}}
            if name != ref and res.get("n") == results[ref].get("n"):
                hyps[name] = read_hypotheses(ctx.backend_dir(name) / res["hypotheses"], res["n"])
        if hyps:
            ref_hyps = read_hypotheses(ctx.backend_dir(ref) / results[ref]["hypotheses"], results[ref]["n"])
            refs = list(ctx.references[:len(ref_hyps)])
            sig = paired_bootstrap(ref, ref_hyps, hyps, refs, int(opt["bootstrap_samples"]), float(opt["alpha"]),
                                   tuple(which))
            for name, s in sig.items():
                out[name]["significance"] = s
                out[name]["metrics"]["bleu_p_value_vs_reference"] = s.get("bleu_p_value")
        return out
