"""Split generation: step logits under teacher forcing, the boundary matrix, divergence steps.

(a) **Teacher-forced step logits.** ``run()`` feeds every backend the *same* decoder
prefixes — the first ``tf_sentences`` references' target tokens (``model.encode_targets``),
decoder start + the first ``tf_steps - 1`` tokens — through ``encode``/``decode_step`` (with
the backend's cache), and saves the logits ``[M, K, V]`` to ``teacher_forced_logits.npy``.
Prefixes do not depend on any backend, so ``compare()`` diffs each backend against the
reference backend: per-step max |Δlogit| over valid rows, overall max, and argmax
agreement at the teacher-forced positions. On a split FP32 backend this checks the split
graph against the original model step by step.

(b) **Boundary matrix.** For backends whose ``boundary_modes()`` is non-empty, ``run()``
translates the first ``boundary_n`` test sentences (greedy unless ``boundary_num_beams``)
in every mode (``set_boundary_mode(mode)``; restored with ``set_boundary_mode(None)``)
and records BLEU vs the references and exact-match agreement with the backend's own
``fp32enc-fp32dec`` row; ``compare()`` adds ``boundary_vs_reference`` (each row's exact-match
agreement with the reference backend's quality tokens on the same sentences) and, for greedy rows
once the reference's margins (d) are scored, ``boundary_noise`` (each row's noise scale against the
reference: how much noise the INT8 encoder, the INT8 decoder and both add).

(c) **Divergence step.** ``compare()`` reads each backend's greedy/beam output written by
the quality suite (``hypotheses.tokens.json``) and the reference's, and records the first
token index where they differ (``identical`` when they never do) as a histogram. Token
agreement (share of positions equal up to the shorter length) is recorded too.

(d) **Divergence margins** (greedy runs). In the *reference* backend's worker, ``run()``
teacher-forces the reference's own quality-suite output and saves its processed top-k
log-probabilities per step (``reference_margins.npz``; :mod:`orchestrator.suites.margins`).
``compare()`` then says, for every backend, how sure the reference was where the backend's
output left it (its margin in nats, whether the backend took its runner-up) and the
backend's flip rate by the reference's margin: a noisy but healthy backend flips near-ties
only, a broken one flips steps the reference was sure of. The curve is fitted with one number, the
backend's noise scale in nats, checked by the share of identical outputs it predicts; the
reference's entry gets the noise budget, the scale at which each of ``identity_targets`` would
be reached. Needs the quality suite to run first in the same run
(``suites = ["quality", "split-generation", ...]``).

Options (``[suites.split-generation]``; defaults):

    tf_sentences = 16      # sentences for teacher-forced logits
    tf_steps = 16          # decoder steps per sentence
    boundary_n = 100       # sentences per boundary-matrix row
    boundary_num_beams = 1 # beams for the boundary rows
    margins = true         # (d) on the reference backend
    margins_top_k = 5      # log-probabilities kept per step
    near_tie_nats = 1.0    # a reference margin below this is a near-tie; at or above, the step was decisive
    identity_targets = [0.8, 0.9, 0.95]  # shares of identical outputs the noise budget is given for
"""
from __future__ import annotations

import hashlib
import json
from typing import Any

import numpy as np

from backends.base import BOUNDARY_MODES
from orchestrator.suites.base import CompareContext, Suite, SuiteContext, translate_all
from orchestrator.suites.quality import TOKENS, corpus_scores
from orchestrator.suites.util import finite, read_json, suite_table

TF_LOGITS = "teacher_forced_logits.npy"
TF_PREFIX = "teacher_forced_prefix.json"
BOUNDARY_TOKENS = "boundary_{mode}.tokens.json"
MARGINS = "reference_margins.npz"
DEFAULTS: dict[str, Any] = {"tf_sentences": 16, "tf_steps": 16, "boundary_n": 100, "boundary_num_beams": 1,
                            "margins": True, "margins_top_k": 5, "near_tie_nats": 1.0,
                            "identity_targets": [0.8, 0.9, 0.95]}
FP32_ROW = "fp32enc-fp32dec"
#: histogram buckets of the first divergence step (upper bounds inclusive)
BUCKETS = ((0, 0), (1, 1), (2, 2), (3, 3), (4, 4), (5, 7), (8, 15), (16, 31), (32, 10**9))


def teacher_forcing_prefix(model, references: list[str], m: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Decoder inputs ``[M, K]`` (start + reference target tokens, padded) and a validity mask."""
    conv = model.conventions
    targets = model.encode_targets(list(references[:m]))
    ids = np.full((len(targets), k), conv.pad_token_id, dtype=np.int64)
    valid = np.zeros((len(targets), k), dtype=bool)
    for i, t in enumerate(targets):
        row = [conv.decoder_start_token_id] + list(t)
        # position s predicts token s+1; valid while the prefix is inside the target (incl. EOS)
        n = min(k, len(row) - 1)
        ids[i, :min(k, len(row))] = row[:k]
        valid[i, :n] = True
    return ids, valid


def prefix_digest(prefix: np.ndarray, valid: np.ndarray) -> str:
    """What identifies the teacher-forced rows: the prefixes' ids (int64) and validity mask."""
    return hashlib.sha256(np.asarray(prefix, np.int64).tobytes() + np.asarray(valid, bool).tobytes()).hexdigest()[:16]


def teacher_forced_logits(backend, model, sources: list[str], prefix: np.ndarray) -> np.ndarray:
    enc = model.encode_sources(list(sources), backend.max_source_length)
    state = backend.encode(enc.input_ids, enc.attention_mask)
    cache = None
    steps = []
    for s in range(prefix.shape[1]):
        logits, cache = backend.decode_step(state, prefix[:, :s + 1], cache)
        steps.append(np.asarray(logits, dtype=np.float32))
    return np.stack(steps, axis=1)  # [M, K, V]


def first_divergence(a: list[int], b: list[int]) -> int | None:
    """First index where two token sequences differ (EOS counts: a shorter one diverges), None if equal."""
    if a == b:
        return None
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return i
    return min(len(a), len(b))


def divergence_histogram(steps: list[int | None]) -> dict[str, Any]:
    hist: dict[str, int] = {}
    for lo, hi in BUCKETS:
        label = str(lo) if lo == hi else (f"{lo}-{hi}" if hi < 10**9 else f"{lo}+")
        hist[label] = sum(1 for s in steps if s is not None and lo <= s <= hi)
    hist["identical"] = sum(1 for s in steps if s is None)
    div = [s for s in steps if s is not None]
    return {"histogram": hist, "n": len(steps), "diverged": len(div),
            "median_step": finite(float(np.median(div)), 1) if div else None,
            "mean_step": finite(float(np.mean(div)), 2) if div else None,
            "first_token_differs": sum(1 for s in div if s == 0)}


def token_agreement(a: list[list[int]], b: list[list[int]]) -> float:
    same = total = 0
    for x, y in zip(a, b):
        n = max(len(x), len(y)) + 1  # + EOS
        xe, ye = list(x) + [-1], list(y) + [-1]
        same += sum(1 for i in range(min(len(xe), len(ye))) if xe[i] == ye[i])
        total += n
    return same / max(1, total)


class SplitGenerationSuite(Suite):
    name = "split-generation"
    description = "teacher-forced step logits vs the reference, boundary matrix, first divergence step"
    defaults = DEFAULTS
    metrics = ("tf_max_abs_logit_diff", "tf_argmax_agreement", "token_agreement_vs_reference",
               "divergence_ref_margin_median", "near_tie_divergence_share", "decisive_flip_rate",
               "flip_noise_scale")
    lower_is_better = frozenset({"tf_max_abs_logit_diff", "divergence_ref_margin_median", "decisive_flip_rate",
                                 "flip_noise_scale"})
    code_modules = ("orchestrator.suites.margins", "orchestrator.suites.quality")
    reference_role = True

    def options(self, table: dict[str, Any], where: str) -> dict[str, Any]:
        from backends.errors import InvalidInputError

        opts = super().options(table, where)
        bad = [t for t in opts["identity_targets"]
               if isinstance(t, bool) or not isinstance(t, (int, float)) or not 0 < t < 1]
        if bad:
            raise InvalidInputError(f"{where}: identity_targets must be shares between 0 and 1 (exclusive), "
                                    f"got {bad}")
        return opts

    def run(self, backend, ctx: SuiteContext) -> dict[str, Any]:
        opt = self.options(suite_table(ctx, self.name), f"[suites.{self.name}]")
        ctx.outdir.mkdir(parents=True, exist_ok=True)
        out: dict[str, Any] = {}
        m, k = int(opt["tf_sentences"]), int(opt["tf_steps"])
        if m > 0 and k > 0 and ctx.references:
            prefix, valid = teacher_forcing_prefix(ctx.model, ctx.references, m, k)
            logits = teacher_forced_logits(backend, ctx.model, ctx.sources[:prefix.shape[0]], prefix)
            np.save(ctx.outdir / TF_LOGITS, logits)
            digest = prefix_digest(prefix, valid)
            (ctx.outdir / TF_PREFIX).write_text(json.dumps({"ids": prefix.tolist(), "valid": valid.tolist()}))
            out["teacher_forced"] = {"logits": TF_LOGITS, "prefix": TF_PREFIX, "prefix_hash": digest,
                                     "sentences": int(prefix.shape[0]), "steps": k}
            ctx.report(1, 2, self.name)
        modes = tuple(backend.boundary_modes())
        if modes and int(opt["boundary_n"]) > 0 and ctx.sources:
            out["boundary"] = self._boundary_matrix(backend, ctx, modes, int(opt["boundary_n"]),
                                                    int(opt["boundary_num_beams"]))
        if opt["margins"] and ctx.reference_backend == backend.name:
            out["reference_margins"] = self._reference_margins(backend, ctx, max(1, int(opt["margins_top_k"])))
        ctx.report(2, 2, self.name)
        return out

    def _reference_margins(self, backend, ctx: SuiteContext, top_k: int) -> dict[str, Any]:
        from orchestrator.suites.margins import score_own_output, self_agreement, tokens_digest

        if ctx.num_beams != 1:
            return {"skipped": f"greedy runs only (num_beams = {ctx.num_beams})"}
        tok_file = ctx.outdir / TOKENS
        if not tok_file.exists():
            return {"skipped": "no quality-suite output of the reference in this run (list the quality suite "
                               "before split-generation)"}
        tokens = read_json(tok_file)
        if len(tokens) != len(ctx.sources):
            return {"skipped": f"the reference's quality output has {len(tokens)} sentences, the data "
                               f"{len(ctx.sources)}"}
        scored = score_own_output(backend, ctx.model, ctx.sources, tokens, ctx.batch_size, top_k,
                                  progress=lambda d, t: ctx.report(d, t, "reference margins"))
        np.savez(ctx.outdir / MARGINS, **scored)
        return {"file": MARGINS, "tokens_digest": tokens_digest(tokens),
                "sentences": len(tokens), "steps": int(len(scored["chosen"])), "top_k": top_k,
                "self_agreement": finite(self_agreement(scored), 6)}

    def _boundary_matrix(self, backend, ctx: SuiteContext, modes, n: int, beams: int) -> dict[str, Any]:
        srcs, refs = ctx.sources[:n], ctx.references[:n]
        rows: dict[str, Any] = {}
        tokens: dict[str, list[list[int]]] = {}
        order = [m for m in BOUNDARY_MODES if m in modes] + [m for m in modes if m not in BOUNDARY_MODES]
        try:
            for mode in order:
                backend.set_boundary_mode(mode)
                toks, _ = translate_all(backend, ctx, srcs, num_beams=beams, label=f"boundary {mode}")
                tokens[mode] = toks
                fname = BOUNDARY_TOKENS.format(mode=mode)
                (ctx.outdir / fname).write_text(json.dumps(toks))
                scores = corpus_scores(ctx.model.decode(toks), list(refs))
                rows[mode] = {"bleu": scores["bleu"], "chrf": scores["chrf"], "tokens": fname}
        finally:
            backend.set_boundary_mode(None)
        if FP32_ROW in tokens:
            base = tokens[FP32_ROW]
            for mode, row in rows.items():
                row["agreement_with_fp32_row"] = finite(sum(a == b for a, b in zip(tokens[mode], base)) / len(base))
                row["bleu_delta_vs_fp32_row"] = round(row["bleu"] - rows[FP32_ROW]["bleu"], 2)
        return {"n": len(srcs), "num_beams": beams, "modes": order, "rows": rows,
                "bleu_signature": scores["bleu_signature"] if rows else None}

    def compare(self, results: dict[str, dict[str, Any]], ctx: CompareContext) -> dict[str, dict[str, Any]]:
        ref = ctx.reference_backend
        out: dict[str, dict[str, Any]] = {name: {"metrics": {}} for name in results}
        # (a) teacher-forced logits vs the reference
        ref_tf = results.get(ref, {}).get("teacher_forced")
        if ref_tf:
            ref_logits = np.load(ctx.backend_dir(ref) / ref_tf["logits"])
            valid = np.asarray(json.loads((ctx.backend_dir(ref) / ref_tf["prefix"]).read_text())["valid"], bool)
            for name, res in results.items():
                tf = res.get("teacher_forced")
                if not tf:
                    continue
                if tf.get("prefix_hash") != ref_tf.get("prefix_hash"):
                    out[name]["teacher_forced"] = {"skipped": "prefixes differ from the reference's"}
                    continue
                logits = np.load(ctx.backend_dir(name) / tf["logits"])
                if logits.shape != ref_logits.shape:
                    out[name]["teacher_forced"] = {"skipped": f"logit shape {list(logits.shape)} != reference "
                                                              f"{list(ref_logits.shape)}"}
                    continue
                out[name]["teacher_forced"] = cmp = teacher_forced_diff(logits, ref_logits, valid)
                out[name]["metrics"]["tf_max_abs_logit_diff"] = cmp["max_abs_logit_diff"]
                out[name]["metrics"]["tf_argmax_agreement"] = cmp["argmax_agreement"]
        # (c) divergence step from the quality suite's token files (read once, for (c), (d) and (b))
        outputs = {name: read_json(f) for name in results if (f := ctx.backend_dir(name) / TOKENS).exists()}
        ref_toks = outputs.get(ref)
        if ref_toks is not None:
            for name, toks in outputs.items():
                if len(toks) != len(ref_toks):
                    continue
                steps = [first_divergence(a, b) for a, b in zip(toks, ref_toks)]
                out[name]["divergence"] = divergence_histogram(steps)
                agree = token_agreement(toks, ref_toks)
                out[name]["divergence"]["token_agreement"] = finite(agree)
                out[name]["metrics"]["token_agreement_vs_reference"] = finite(agree)
        # (d) the reference's margins where each backend's output leaves it
        opt = self.options(suite_table(ctx, self.name), f"[suites.{self.name}]")
        margins, scored = self._margins(results, ctx, outputs, opt)
        for name, d in margins.items():
            out[name]["margins"] = d
            if "diverged" in d:
                out[name]["metrics"].update({"divergence_ref_margin_median": d["ref_margin_median"],
                                             "near_tie_divergence_share": d["near_tie_share"],
                                             "decisive_flip_rate": d["decisive_flip_rate"],
                                             "flip_noise_scale": d["noise_scale"]})
        # (b) boundary rows without their own FP32 row: agreement with the reference's tokens, and (greedy
        # rows, margins scored) each row's noise scale against the reference: which graph's INT8 adds how much
        if ref_toks is not None:
            near = float(opt["near_tie_nats"])
            for name, res in results.items():
                b = res.get("boundary")
                if not b:
                    continue
                for mode, row in b["rows"].items():
                    toks = json.loads((ctx.backend_dir(name) / row["tokens"]).read_text())
                    base = ref_toks[:len(toks)]
                    if len(base) != len(toks):
                        continue
                    out[name].setdefault("boundary_vs_reference", {})[mode] = finite(
                        sum(x == y for x, y in zip(toks, base)) / max(1, len(toks)))
                    if scored is not None and b.get("num_beams") == 1:
                        out[name].setdefault("boundary_noise", {})[mode] = row_noise(
                            scored, base, toks, ctx.model.conventions.eos_token_id, near)
        return out

    def _margins(self, results: dict[str, dict[str, Any]], ctx: CompareContext, outputs: dict[str, list[list[int]]],
                 opt: dict[str, Any]) -> tuple[dict[str, dict[str, Any]], dict[str, np.ndarray] | None]:
        """(d) for every backend with quality-suite ``outputs`` ({name: tokens}) but the reference; the
        reference's own entry holds the noise budget. Also returns the reference's scores (None when
        they were not measured or no longer match its output)."""
        from orchestrator.suites.margins import margin_stats, noise_scale_for, tokens_digest, top2_margins

        ref = ctx.reference_backend
        info = (results.get(ref) or {}).get("reference_margins")
        if not info:
            return {}, None
        if "skipped" in info:
            return {name: {"skipped": f"reference: {info['skipped']}"} for name in results}, None
        ref_toks = outputs.get(ref)
        if ref_toks is None or tokens_digest(ref_toks) != info.get("tokens_digest"):
            return {name: {"skipped": "the reference's output changed after its margins were scored"}
                    for name in results}, None
        with np.load(ctx.backend_dir(ref) / info["file"]) as z:
            scored = {k: z[k] for k in z.files}
        near = float(opt["near_tie_nats"])
        eos = ctx.model.conventions.eos_token_id
        top2 = top2_margins(scored)
        budget = {f"{float(t):g}": finite(noise_scale_for(top2, scored["offsets"], float(t)), 6)
                  for t in sorted(opt["identity_targets"])}
        out: dict[str, dict[str, Any]] = {ref: {"reference": True, "steps": int(len(top2)),
                                                "noise_scale_for_identity": budget}}
        for name, toks in outputs.items():
            if name == ref:
                continue
            if len(toks) != len(ref_toks):
                out[name] = {"skipped": f"{len(toks)} outputs, the reference {len(ref_toks)}"}
                continue
            stats = margin_stats(scored, ref_toks, toks, eos, near)
            out[name] = {k: (finite(v) if isinstance(v, float) else v) for k, v in stats.items()}
            out[name]["flip_rate_by_margin"] = {
                b: {**c, "rate": finite(c["rate"], 6)} for b, c in stats["flip_rate_by_margin"].items()}
            out[name]["decisive_flip_rate"] = finite(stats["decisive_flip_rate"], 6)
            out[name]["noise_scale"] = finite(stats["noise_scale"], 6)
        return out, scored


def row_noise(scored: dict[str, np.ndarray], ref_toks: list[list[int]], toks: list[list[int]], eos_token_id: int,
              near_tie_nats: float) -> dict[str, Any]:
    """A boundary row's noise scale against the reference, on its sentences (the first ``len(toks)``)."""
    from orchestrator.suites.margins import margin_stats

    stats = margin_stats(scored, ref_toks, toks, eos_token_id, near_tie_nats)
    return {"sentences": len(toks), "noise_scale": finite(stats["noise_scale"], 6),
            "identical_predicted": finite(stats["identical_predicted"])}


def teacher_forced_diff(logits: np.ndarray, ref: np.ndarray, valid: np.ndarray) -> dict[str, Any]:
    """Per-step max |Δlogit| over valid rows, overall max, argmax agreement."""
    diff = np.abs(logits.astype(np.float64) - ref.astype(np.float64)).max(axis=-1)  # [M, K]
    per_step = [finite(diff[valid[:, s], s].max(), 6) if valid[:, s].any() else None
                for s in range(diff.shape[1])]
    agree = (logits.argmax(-1) == ref.argmax(-1))[valid]
    return {"max_abs_logit_diff": finite(diff[valid].max(), 6) if valid.any() else None,
            "mean_max_abs_logit_diff": finite(diff[valid].mean(), 6) if valid.any() else None,
            "per_step_max_abs_logit_diff": per_step,
            "argmax_agreement": finite(agree.mean()) if agree.size else None,
            "positions": int(valid.sum())}
