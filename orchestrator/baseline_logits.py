"""Golden logits: the numbers under a baseline's tokens (Polygraphy's saved outputs, for seq2seq).

Tokens change only when a numeric change crosses a near-tie; a runtime upgrade that moves every logit a little
shows in none of them until it does. So a baseline also keeps, per backend, the first-step logits the
source-sensitivity suite computed (``first_step_logits.npy``: decoder start token, one row per probe source):
the top ``k`` ids of each row and their values, exactly as float32. A later run is compared on those ids:

    {"n": rows, "k": k, "max_abs_diff", "mean_abs_diff",      # over the saved top-k logits, in logit units
     "argmax_changed": rows whose top id is not the saved one, "first_argmax_changed": [1-based rows],
     "exact": bool}                                            # every saved value bit-identical
    | {"comparable": False, "reason"}                          # other probe sources, batch or source length

Informational unless ``[tolerances]`` names :data:`LOGITS_METRIC`; then each saved logit may move by
``abs + rel * |saved|`` (Polygraphy's atol/rtol): ``first_step_logit_diff = 0.05`` (abs), ``"1%"`` (rel) or
``{abs = 0.01, rel = 0.01}``.

Later steps the same way: the split-generation suite's teacher-forced logits (``teacher_forced_logits.npy``:
the first ``tf_sentences`` references' target prefixes, ``tf_steps`` positions each), one row per valid
position, kept as ``teacher_forced`` and gated by :data:`STEP_LOGITS_METRIC` (``teacher_forced_logit_diff``).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np

from orchestrator.run_store import RunStore
from orchestrator.suites.split_generation import TF_LOGITS, TF_PREFIX, prefix_digest

SUITE = "source-sensitivity"
STEP_SUITE = "split-generation"
#: gated only when ``[tolerances]`` names it: the largest change of a saved first-step logit
LOGITS_METRIC = "first_step_logit_diff"
#: the same for the teacher-forced step logits
STEP_LOGITS_METRIC = "teacher_forced_logit_diff"


@dataclass(frozen=True)
class LogitKind:
    """What one kind of golden logits is called in the words of a comparison."""

    metric: str      # the [tolerances] name that gates it
    row: str         # what a saved row is
    missing: str     # why this run has none to compare
    other_rows: str  # why the saved rows are not this run's rows
    batch: str       # what the batch the rows were computed in is called


FIRST_STEP = LogitKind(LOGITS_METRIC, "source", "this run has no readable source-sensitivity logits for it",
                       "other probe sources (the suite's pairs, seed or the test set differ)", "probe batch size")
TEACHER_FORCED = LogitKind(STEP_LOGITS_METRIC, "position", "this run has no readable teacher-forced logits for it",
                           "other teacher-forced prefixes (tf_sentences, tf_steps or the references differ)",
                           "teacher-forced batch")
#: run settings that change the saved logits: rows are comparable only when they match (the suites' own
#: batch, which matters to per-call quantized backends, is checked from their results)
LOGIT_SETTINGS = ("max_source_length", "source_prefix")


def read_first_step(report: dict[str, Any], run_dir) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """The first-step logits each ok backend's source-sensitivity suite wrote under ``run_dir``:
    ``{name: {"logits": float32 [rows, vocab], "sources_sha256", "batch_size"}}``, and a note for every
    backend whose file the report names but that cannot be read."""
    found: dict[str, dict[str, Any]] = {}
    problems: list[str] = []
    for name, path in RunStore(run_dir).suite_files(report, SUITE, "logits"):
        try:
            logits = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as exc:
            problems.append(f"{name}: cannot read its first-step logits {path} ({type(exc).__name__})")
            continue
        if logits.ndim != 2 or not np.issubdtype(logits.dtype, np.floating):
            problems.append(f"{name}: {path} does not hold a float [sources, vocabulary] array")
            continue
        s = report["backends"][name]["suites"][SUITE]
        found[name] = {"logits": logits.astype(np.float32), "sources_sha256": s.get("sources_sha256"),
                       "batch_size": s.get("batch_size")}
    return found, problems


def read_teacher_forced(report: dict[str, Any], run_dir) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """The teacher-forced logits each ok backend's split-generation suite wrote under ``run_dir``, one row per
    valid position (sentence by sentence): ``{name: {"logits": float32 [positions, vocabulary],
    "sources_sha256": the prefixes' hash, "batch_size": sentences}}``, and a note per unreadable file."""
    found: dict[str, dict[str, Any]] = {}
    problems: list[str] = []
    store = RunStore(run_dir)
    for name, s in store.ok_suites(report, STEP_SUITE):
        if not isinstance(s.get("teacher_forced"), dict):
            continue  # none computed (or no reference to compare them with)
        path, prefix = store.backend_dir(name) / TF_LOGITS, store.backend_dir(name) / TF_PREFIX
        try:
            logits = np.load(path, allow_pickle=False)
            saved = json.loads(prefix.read_text(encoding="utf-8"))
            ids, valid = np.asarray(saved["ids"], dtype=np.int64), np.asarray(saved["valid"], dtype=bool)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            problems.append(f"{name}: cannot read its teacher-forced logits {path} ({type(exc).__name__})")
            continue
        if logits.ndim != 3 or not np.issubdtype(logits.dtype, np.floating) or valid.shape != logits.shape[:2]:
            problems.append(f"{name}: {path} does not hold a float [sentences, steps, vocabulary] array "
                            f"matching its prefixes")
            continue
        found[name] = {"logits": logits[valid].astype(np.float32), "sources_sha256": prefix_digest(ids, valid),
                       "batch_size": int(logits.shape[0])}
    return found, problems


def golden(entry: dict[str, Any], k: int) -> dict[str, Any]:
    """What a baseline keeps of one backend's logits (first-step or teacher-forced rows): each row's top ``k``
    ids and values (float32's shortest round-trip text, so a reload is bit-exact)."""
    logits = entry["logits"]
    k = max(1, min(int(k), logits.shape[1]))
    ids = np.argsort(-logits, axis=1, kind="stable")[:, :k]
    vals = np.take_along_axis(logits, ids, axis=1)
    return {"sources_sha256": entry.get("sources_sha256"), "batch_size": entry.get("batch_size"), "k": k,
            "vocab": int(logits.shape[1]),
            "ids": [" ".join(map(str, r)) for r in ids.tolist()],
            "values": [" ".join(str(np.float32(v)) for v in r) for r in vals]}


def _parse(saved: dict[str, Any]) -> tuple[np.ndarray, np.ndarray] | None:
    try:
        ids = np.array([[int(t) for t in r.split()] for r in saved["ids"]], dtype=np.int64)
        vals = np.array([[np.float32(t) for t in r.split()] for r in saved["values"]], dtype=np.float32)
    except (KeyError, TypeError, ValueError, AttributeError):
        return None
    if ids.ndim != 2 or ids.shape != vals.shape or ids.size == 0:
        return None
    return ids, vals


def compare_logits(name: str, saved: dict[str, Any], current: dict[str, Any] | None, settings_diff: list[str],
                   tol: dict[str, Any] | None, regressions: list[dict[str, Any]],
                   kind: LogitKind = FIRST_STEP) -> dict[str, Any]:
    """One backend's first-step (or, with ``kind``, teacher-forced) logits against the golden ones, on the ids
    the baseline saved."""
    parsed = _parse(saved)
    if parsed is None:
        return {"comparable": False, "reason": "the baseline's logits cannot be read"}
    if current is None:
        return {"comparable": False, "reason": kind.missing}
    if settings_diff:
        return {"comparable": False, "reason": "settings differ: " + ", ".join(settings_diff)}
    if saved.get("sources_sha256") != current.get("sources_sha256"):
        return {"comparable": False, "reason": kind.other_rows}
    if saved.get("batch_size") != current.get("batch_size"):
        return {"comparable": False, "reason": f"{kind.batch} {saved.get('batch_size')} -> "
                                               f"{current.get('batch_size')}"}
    ids, vals = parsed
    logits = current["logits"]
    if logits.shape[0] != ids.shape[0] or int(saved.get("vocab", logits.shape[1])) != logits.shape[1]:
        return {"comparable": False, "reason": f"{ids.shape[0]} saved rows of {saved.get('vocab')} logits, "
                                               f"{logits.shape[0]} of {logits.shape[1]} in this run"}
    cur = np.take_along_axis(logits, ids, axis=1)
    diff = np.abs(cur.astype(np.float64) - vals.astype(np.float64))
    moved = np.flatnonzero(logits.argmax(axis=1) != ids[:, 0])
    worst = float(diff.max())
    entry: dict[str, Any] = {"n": int(ids.shape[0]), "k": int(ids.shape[1]), "max_abs_diff": round(worst, 6),
                             "mean_abs_diff": round(float(diff.mean()), 6), "argmax_changed": int(moved.size),
                             "first_argmax_changed": [int(i) + 1 for i in moved[:10]],
                             "exact": bool(np.array_equal(cur, vals))}
    if tol is not None:
        # Polygraphy's rule, per saved logit: |current - saved| <= abs + rel * |saved|
        allowed = tol.get("abs", 0.0) + tol.get("rel", 0.0) * np.abs(vals.astype(np.float64))
        over = diff - allowed
        entry["tolerance"] = dict(tol)
        if float(over.max()) > 1e-12:
            r, c = np.unravel_index(int(over.argmax()), over.shape)
            entry["regressed"] = True
            regressions.append({"backend": name, "metric": kind.metric, "baseline": 0.0, "current": round(worst, 6),
                                "tolerance": entry["tolerance"],
                                "reason": f"{int((over > 1e-12).sum())} of {over.size} saved logits moved beyond "
                                          f"the tolerance; most: token {int(ids[r, c])} on {kind.row} {r + 1}, "
                                          f"{vals[r, c]:.6g} -> {cur[r, c]:.6g} (allowed {float(allowed[r, c]):.4g})"})
    return entry

