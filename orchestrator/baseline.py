"""Regression baselines: keep a run's numbers, gate a later run (e.g. a runtime upgrade) on them.

``save_baseline(report, path, outputs)`` writes JSON: per-backend status, metrics, signature and verdict
kind, plus the model and data fingerprints and the run settings, and the *golden outputs*: the token ids
each backend's quality suite generated (``read_outputs(report, run_dir)``), one string per sentence.

``compare_to_baseline(report, baseline, tolerances) -> dict``::

    {"ok": bool, "regressions": [{"backend", "metric", "baseline", "current", "delta", "tolerance",
                                  "reason"}],      # empty when ok
     "deltas": {backend: {metric: {"baseline", "current", "delta", "rel_delta", "tolerance",
                                   "regressed"}}},
     "improvements": [...], "missing_backends": [...], "new_backends": [...],
     "signature_changes": {backend: {field: [baseline, current]}},   # e.g. a runtime upgrade
     "outputs": {backend: {"n", "changed", "changed_fraction", "first_changed"} | {"comparable": False,
                                                                                   "reason"}},
     "first_step": {backend: {"n", "k", "max_abs_diff", "mean_abs_diff", "argmax_changed", "exact", ...}
                    | {"comparable": False, "reason"}},   # see orchestrator.baseline_logits
     "teacher_forced": {backend: the same, on the teacher-forced step logits},
     "artifacts": {backend: {"kind": "same" | "rebuilt" | "other-inputs", "changed": [roles],
                             "note"}},   # this run's artifact bytes against the baseline's
     "machine": {"baseline", "current", "differences": ["cpu A -> B", "isa -avx512f", ...]},
     "reused": [backends whose results this run reused from its run directory instead of measuring],
     "fingerprints": {"model": {...}, "data": {...}, "match": bool}}

``outputs`` compares the saved token ids with this run's sentence by sentence (given ``outputs=``):
metrics can stay level while different sentences flip, which is what a runtime upgrade of an INT8
backend tends to do. It is informational unless ``[tolerances]`` names ``outputs_changed``: the share
of sentences whose tokens may differ from the baseline's (``outputs_changed = 0.01`` or ``"1%"``).

Tolerances (``[tolerances]`` in the matrix): ``metric = X`` where X is

* a number: the allowed change in the metric's *bad* direction, absolute (``bleu = 0.5``: BLEU may
  drop by 0.5; the sign of X is ignored);
* a string ``"N%"``: the same, relative to the baseline value (``latency_p90_ms = "25%"``);
* a table ``{abs = .., rel = .., direction = "higher" | "lower"}`` (direction = which way is better).

Defaults (a matrix table adds to / overrides them)::

    bleu = 0.5, chrf = 0.5, exact_match_vs_reference = 0.02, latency_p50_ms = "25%",
    latency_p90_ms = "25%", throughput_sps = "20%", bytes = "5%", peak_rss_mb = "25%"

``first_step`` compares the first-step logits the source-sensitivity suite computed with the ones the baseline
kept (each probe source's top-k ids and values): numbers move before tokens flip. Informational unless
``[tolerances]`` names ``first_step_logit_diff`` (abs / rel per logit, as Polygraphy's atol / rtol).
``teacher_forced`` does the same for the later steps, on the split-generation suite's teacher-forced logits (top
:data:`STEP_TOP_K` per position), gated by ``teacher_forced_logit_diff``.

``artifacts`` compares each backend's artifact files by their sha256 (the baseline keeps the cache key and
the digests): the *same* bytes mean changed outputs come from the runtime, its kernels or the machine that ran
them, or from seqquant's host loop when the signature's ``host_loop`` changed; *rebuilt* means the same inputs
(model, settings, calibration, versions: the cache key) were built into other bytes, i.e. the build depends on
the machine (the default model's tflite-int8 did so across machines of one kind); *other-inputs* means the
cache key changed. Informational: it explains, it does not gate. Each
artifact manifest records the machine that built it (``built_on``), so a rebuild names what differs. The report's
``machine`` is compared too: a time or memory metric that regresses on another machine says so.

Also a regression: a backend that was ``ok`` in the baseline and is now failed/missing; a verdict
that was ``pass`` and is not any more; a backend that became source-blind; a model or data
fingerprint that differs (the numbers are not comparable).
"""
from __future__ import annotations

import hashlib
import json
import math
import time
from pathlib import Path
from typing import Any

from backends.errors import InvalidInputError
from backends.machine import differences as machine_differences
from orchestrator.baseline_logits import LOGIT_SETTINGS, LOGITS_METRIC, STEP_LOGITS_METRIC, TEACHER_FORCED
from orchestrator.baseline_logits import SUITE as LOGITS_SUITE
from orchestrator.baseline_logits import compare_logits, golden, read_first_step, read_teacher_forced
from orchestrator.run_store import RunStore

SCHEMA = "seqquant-baseline/1"
DEFAULT_TOLERANCES: dict[str, Any] = {"bleu": 0.5, "chrf": 0.5, "exact_match_vs_reference": 0.02,
                                      "latency_p50_ms": "25%", "latency_p90_ms": "25%", "throughput_sps": "20%",
                                      "bytes": "5%", "peak_rss_mb": "25%"}
#: metrics never gated (informational)
UNGATED = {"threads", "bleu_p_value_vs_reference"}
#: gated only when ``[tolerances]`` names it: share of sentences whose tokens differ from the golden outputs
OUTPUTS_METRIC = "outputs_changed"
#: top logits kept per teacher-forced position (16 sentences x 16 steps by default: ~250 rows a backend)
STEP_TOP_K = 5
#: what of the machine can change an artifact's bytes (its description in ``built_on``)
BUILD_KEYS = ("cpu", "arch", "isa", "dispatch_env")
#: metrics measured in time or memory: they belong to the machine that measured them
MACHINE_BOUND = ("latency_", "throughput", "cpu_ms", "ms_per_token", "peak_rss", "build_")
#: run settings that change what a backend generates: saved outputs are comparable only when they match
#: (batch_size too: a per-call-quantized backend's tokens depend on the batch it runs in)
OUTPUT_SETTINGS = ("num_beams", "max_new_tokens", "max_source_length", "source_prefix", "limit", "batch_size")


def _fingerprints(report: dict[str, Any]) -> dict[str, Any]:
    model = report.get("model") or {}
    data = report.get("data") or {}
    dfp = data.get("fingerprint") or hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()
                                                    ).hexdigest()[:16]
    return {"model": model.get("content_hash"), "data": dfp, "n_sentences": data.get("n_sentences")}


def read_outputs(report: dict[str, Any], run_dir) -> tuple[dict[str, list[list[int]]], list[str]]:
    """The token ids each ok backend's quality suite wrote under ``run_dir`` (its golden outputs), and a
    note for every backend whose file the report names but that cannot be read."""
    outputs: dict[str, list[list[int]]] = {}
    problems: list[str] = []
    for name, path in RunStore(run_dir).suite_files(report, "quality", "tokens"):
        try:
            tokens = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            problems.append(f"{name}: cannot read its outputs {path} ({type(exc).__name__})")
            continue
        if not (isinstance(tokens, list) and all(isinstance(r, list) and all(isinstance(t, int) and
                                                                          not isinstance(t, bool) for t in r)
                                                 for r in tokens)):
            problems.append(f"{name}: {path} does not hold a list of token-id lists")
            continue
        outputs[name] = tokens
    return outputs, problems


def read_golden(report: dict[str, Any], run_dir) -> tuple[dict[str, list[list[int]]], dict[str, dict[str, Any]],
                                                         dict[str, dict[str, Any]], list[str]]:
    """Everything a baseline keeps of a run's files, as :func:`save_baseline` and :func:`compare_to_baseline`
    take it: the outputs (:func:`read_outputs`), the first-step and the teacher-forced logits
    (:mod:`orchestrator.baseline_logits`), and a note for every file that cannot be read."""
    outputs, problems = read_outputs(report, run_dir)
    logits, more = read_first_step(report, run_dir)
    steps, more_steps = read_teacher_forced(report, run_dir)
    return outputs, logits, steps, problems + more + more_steps


def _artifact_digest(b: dict[str, Any]) -> dict[str, Any] | None:
    art = b.get("artifacts") or {}
    sha = art.get("sha256") if isinstance(art, dict) else None
    if not isinstance(sha, dict) or not sha:
        return None  # no files (or a report written before digests were recorded)
    return {"cache_key": art.get("cache_key"), "sha256": dict(sha), "built_on": art.get("built_on") or None}


def _rebuilt_note(saved: dict[str, Any], current: dict[str, Any]) -> str:
    a, c = saved.get("built_on"), current.get("built_on")
    diff = machine_differences(a, c, BUILD_KEYS)
    if diff:
        return "built on another machine: " + "; ".join(diff)
    if isinstance(a, dict) and isinstance(c, dict):
        return ("built on machines of the same description (CPU, ISA flags, dispatch overrides): the build depends "
                "on something that does not show (microarchitecture, cache sizes) or is not deterministic")
    return "the build depends on the machine"


def _compare_artifacts(saved: dict[str, Any], current: dict[str, Any]) -> dict[str, Any]:
    a, c = saved.get("sha256") or {}, current["sha256"]
    changed = sorted(r for r in set(a) | set(c) if a.get(r) != c.get(r))
    ka, kc = str(saved.get("cache_key")), str(current.get("cache_key"))
    if not changed:
        kind, note = "same", "the same bytes as the baseline's"
    elif ka == kc:
        kind, note = "rebuilt", (f"rebuilt from the same inputs (cache key {ka[:12]}) into other bytes "
                                 f"({', '.join(changed)}): {_rebuilt_note(saved, current)}")
    else:
        kind, note = "other-inputs", f"built from other inputs (cache key {ka[:12]} -> {kc[:12]}; {', '.join(changed)} differ)"
    return {"kind": kind, "changed": changed, "note": note}


def _rows(tokens: list[list[int]]) -> list[str]:
    return [" ".join(map(str, r)) for r in tokens]


def make_baseline(report: dict[str, Any], outputs: dict[str, list[list[int]]] | None = None,
                  logits: dict[str, dict[str, Any]] | None = None,
                  step_logits: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    backends = {}
    if not isinstance(report.get("backends"), dict) or not report["backends"]:
        raise InvalidInputError("the report has no backends: a baseline of it would gate nothing; save the "
                                "report of a `python cli.py compare` run")
    for name, b in report["backends"].items():
        backends[name] = {"status": b.get("status"), "signature": b.get("signature"),
                          "metrics": dict(b.get("metrics") or {}),
                          "verdict": (b.get("verdict") or {}).get("kind")}
        if outputs and name in outputs:
            backends[name]["outputs"] = {"n": len(outputs[name]), "tokens": _rows(outputs[name])}
        digest = _artifact_digest(b)
        if digest:
            backends[name]["artifacts"] = digest
        if logits and name in logits:
            k = ((b.get("suites") or {}).get(LOGITS_SUITE) or {}).get("top_k") or 10
            backends[name]["first_step"] = golden(logits[name], k)
        if step_logits and name in step_logits:
            backends[name]["teacher_forced"] = golden(step_logits[name], STEP_TOP_K)
    settings = {k: v for k, v in (report.get("settings") or {}).items() if k != "matrix"}
    return {"schema": SCHEMA, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "fingerprints": _fingerprints(report), "model": (report.get("model") or {}).get("path"),
            "reference_backend": report.get("reference_backend"), "settings": settings,
            "machine": report.get("machine"), "backends": backends}


def save_baseline(report: dict[str, Any], path, outputs: dict[str, list[list[int]]] | None = None,
                  logits: dict[str, dict[str, Any]] | None = None,
                  step_logits: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    """Write the baseline of ``report`` (with the golden ``outputs``, see :func:`read_outputs`, first-step
    ``logits``, see :func:`orchestrator.baseline_logits.read_first_step`, and teacher-forced ``step_logits``,
    see :func:`orchestrator.baseline_logits.read_teacher_forced`) to ``path``.
    An existing file is replaced only when it is a seqquant baseline (updating a baseline is the normal flow;
    clobbering e.g. a report.json given by mistake is not)."""
    path = Path(path)
    if path.is_dir():
        raise InvalidInputError(f"baseline file {path} is a directory; give a file name (e.g. {path / 'baseline.json'})")
    if path.exists():
        try:
            old = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            old = None
        if not isinstance(old, dict) or old.get("schema") != SCHEMA:
            raise InvalidInputError(f"{path} exists and is not a seqquant baseline: not overwriting it; remove it "
                                    f"or choose another file name")
    base = make_baseline(report, outputs, logits, step_logits)
    tmp = path.with_name(path.name + ".tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(json.dumps(base, indent=1, sort_keys=True, default=str), encoding="utf-8")
        tmp.replace(path)
    except OSError as exc:
        raise InvalidInputError(f"cannot write baseline {path}: {exc}") from exc
    return base


def load_baseline(path, where: str | None = None) -> dict[str, Any]:
    """Read and check a baseline file (``compare --baseline FILE``); ``where`` names it in errors."""
    path = Path(path)
    where = where or f"baseline {path}"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise InvalidInputError(f"{where} does not exist; create one with "
                                f"`python cli.py baseline save RUN_DIR {path}`") from exc
    except (OSError, ValueError) as exc:  # ValueError: not JSON, not UTF-8
        raise InvalidInputError(f"{where} is not a JSON baseline file ({exc}); create one with "
                                f"`python cli.py baseline save RUN_DIR {path}`") from exc
    check_baseline(data, where)
    return data


def check_baseline(data: Any, where: str = "baseline") -> None:
    if not isinstance(data, dict) or data.get("schema") != SCHEMA or not isinstance(data.get("backends"), dict):
        raise InvalidInputError(f"{where} is not a seqquant baseline (expected schema '{SCHEMA}'; create one "
                                f"with `python cli.py baseline save RUN_DIR FILE`)")
    if not data["backends"]:
        raise InvalidInputError(f"{where} has no backends, so it would pass any run; save a new one with "
                                f"`python cli.py baseline save RUN_DIR FILE`")


def parse_tolerance(metric: str, spec: Any, where: str = "[tolerances]") -> dict[str, Any]:
    """``spec`` (a number, ``"N%"`` or ``{abs, rel, direction}``) as ``{"direction", "abs"?, "rel"?}``."""
    from orchestrator.suites.base import lower_is_better  # which way is better: as the suite declares

    direction = ("lower" if metric in (OUTPUTS_METRIC, LOGITS_METRIC, STEP_LOGITS_METRIC) or lower_is_better(metric)
                 else "higher")
    if isinstance(spec, dict):
        unknown = set(spec) - {"abs", "rel", "direction"}
        if unknown:
            raise InvalidInputError(f"{where} {metric}: unknown key(s) {sorted(unknown)} (abs, rel, direction)")
        direction = spec.get("direction", direction)
        if direction not in ("higher", "lower"):
            raise InvalidInputError(f"{where} {metric}: direction must be 'higher' or 'lower'")
        out = {"direction": direction}
        for k in ("abs", "rel"):
            if k in spec:
                v = spec[k]
                if isinstance(v, bool) or not isinstance(v, (int, float)):
                    raise InvalidInputError(f"{where} {metric}.{k} must be a number")
                out[k] = abs(float(v))
        return out
    if isinstance(spec, str) and spec.strip().endswith("%"):
        try:
            return {"direction": direction, "rel": abs(float(spec.strip()[:-1])) / 100.0}
        except ValueError as exc:
            raise InvalidInputError(f"{where} {metric}: cannot read {spec!r} as a percentage") from exc
    if isinstance(spec, bool) or not isinstance(spec, (int, float)):
        raise InvalidInputError(f"{where} {metric}: expected a number, 'N%' or a table, got {spec!r}")
    return {"direction": direction, "abs": abs(float(spec))}


def allowed_delta(tol: dict[str, Any], base: float) -> float:
    """How far from ``base`` a value may be under the parsed tolerance ``tol``."""
    allowed = []
    if "abs" in tol:
        allowed.append(tol["abs"])
    if "rel" in tol:
        allowed.append(tol["rel"] * abs(base))
    return max(allowed) if allowed else 0.0


def _num(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _compare_outputs(name: str, saved: dict[str, Any], current: list[list[int]] | None, settings_diff: list[str],
                     tol: dict[str, Any] | None, regressions: list[dict[str, Any]]) -> dict[str, Any]:
    """One backend's tokens vs its golden outputs, sentence by sentence."""
    base_rows = saved.get("tokens")
    if not isinstance(base_rows, list):
        return {"comparable": False, "reason": "the baseline's outputs are not a list of sentences"}
    if current is None:
        return {"comparable": False, "reason": "this run has no readable quality-suite outputs for it"}
    if settings_diff:
        return {"comparable": False, "reason": "generation settings differ: " + ", ".join(settings_diff)}
    if len(base_rows) != len(current):
        return {"comparable": False, "reason": f"{len(base_rows)} saved sentences, {len(current)} in this run"}
    changed = [i for i, (a, c) in enumerate(zip(base_rows, _rows(current))) if a != c]
    n = len(current)
    frac = len(changed) / n if n else 0.0
    entry: dict[str, Any] = {"n": n, "changed": len(changed), "changed_fraction": round(frac, 6),
                             "first_changed": [i + 1 for i in changed[:10]]}
    if tol is not None:
        # a share of sentences: "N%" and a number both bound it (the baseline's own value is 0)
        allowed = max(tol.get("abs", 0.0), tol.get("rel", 0.0))
        entry["tolerance"] = {**tol, "allowed": round(allowed, 6)}
        if frac > allowed + 1e-12:
            entry["regressed"] = True
            regressions.append({"backend": name, "metric": OUTPUTS_METRIC, "baseline": 0.0, "current": round(frac, 6),
                                "tolerance": entry["tolerance"],
                                "reason": f"outputs differ from the baseline's on {len(changed)} of {n} sentences "
                                          f"(allowed {allowed:.2%}; first: sentence {changed[0] + 1})"})
    return entry


def compare_to_baseline(report: dict[str, Any], baseline: dict[str, Any],
                        tolerances: dict[str, Any] | None = None,
                        outputs: dict[str, list[list[int]]] | None = None,
                        logits: dict[str, dict[str, Any]] | None = None,
                        step_logits: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    """Gate ``report`` on ``baseline``; ``outputs`` (this run's, see :func:`read_outputs`) adds the
    sentence-by-sentence comparison with the golden outputs the baseline saved, ``logits`` (see
    :func:`orchestrator.baseline_logits.read_first_step`) the comparison with its first-step logits and
    ``step_logits`` (:func:`orchestrator.baseline_logits.read_teacher_forced`) with its teacher-forced ones."""
    check_baseline(baseline)
    spec = {**DEFAULT_TOLERANCES, **(tolerances or {})}
    tols = {m: parse_tolerance(m, s) for m, s in spec.items()}
    regressions: list[dict[str, Any]] = []
    improvements: list[dict[str, Any]] = []
    deltas: dict[str, dict[str, Any]] = {}
    sig_changes: dict[str, dict[str, Any]] = {}
    cur_b = report.get("backends") or {}
    base_b = baseline["backends"]

    fb, fc = baseline.get("fingerprints") or {}, _fingerprints(report)
    match = True
    for key in ("model", "data"):
        if fb.get(key) and fc.get(key) and fb[key] != fc[key]:
            match = False
            regressions.append({"backend": None, "metric": f"{key}_fingerprint", "baseline": fb[key],
                                "current": fc[key], "reason": f"the {key} differs from the baseline's: the numbers "
                                                              f"are not comparable"})
    base_settings, cur_settings = baseline.get("settings") or {}, report.get("settings") or {}
    settings_diff, logit_diff = ([f"{k} {base_settings.get(k)!r} -> {cur_settings.get(k)!r}" for k in keys
                                  if k in base_settings and base_settings.get(k) != cur_settings.get(k)]
                                 for keys in (OUTPUT_SETTINGS, LOGIT_SETTINGS))
    moved_to = machine_differences(baseline.get("machine"), report.get("machine"))
    output_rows: dict[str, Any] = {}
    logit_rows: dict[str, Any] = {}
    step_rows: dict[str, Any] = {}
    artifact_rows: dict[str, Any] = {}
    missing = []
    for name, bb in base_b.items():
        cb = cur_b.get(name)
        if bb.get("status") != "ok":
            continue
        if cb is None or cb.get("status") != "ok":
            missing.append(name)
            regressions.append({"backend": name, "metric": "status", "baseline": "ok",
                                "current": None if cb is None else cb.get("status"),
                                "reason": "backend ok in the baseline but " + ("not in this run" if cb is None else
                                                                               f"{cb.get('status')}: {cb.get('reason')}")})
            continue
        changes = {}
        for f in ("runtime_version", "precision", "threads", "quantization"):
            a, c = (bb.get("signature") or {}).get(f), (cb.get("signature") or {}).get(f)
            if a != c:
                changes[f] = [a, c]
        # which kernels ran the same artifacts (tflite); seqquant's search loop (a baseline from before it was
        # recorded has none: a runtime's own search did not change with it)
        for f in ("kernels", "host_loop"):
            a, c = (((b.get("signature") or {}).get("settings") or {}).get(f) for b in (bb, cb))
            if a != c and not (f == "host_loop" and a is None and c == "native"):
                changes[f] = [a, c]
        if changes:
            sig_changes[name] = changes
        digest = _artifact_digest(cb)
        if isinstance(bb.get("artifacts"), dict) and digest:
            artifact_rows[name] = _compare_artifacts(bb["artifacts"], digest)
        bm, cm = bb.get("metrics") or {}, cb.get("metrics") or {}
        rows: dict[str, Any] = {}
        for metric in sorted(set(bm) & set(cm)):
            a, c = bm[metric], cm[metric]
            if metric == "source_blind":
                if not a and c:
                    regressions.append({"backend": name, "metric": metric, "baseline": a, "current": c,
                                        "reason": "became source-blind"})
                continue
            if not (_num(a) and _num(c)):
                continue
            d = c - a
            row = {"baseline": a, "current": c, "delta": round(d, 6),
                   "rel_delta": round(d / abs(a), 4) if a else None, "regressed": False}
            tol = tols.get(metric)
            if tol is not None and metric not in UNGATED:
                worse = -d if tol["direction"] == "higher" else d
                allowed = allowed_delta(tol, a)
                row["tolerance"] = {**tol, "allowed": round(allowed, 6)}
                if worse > allowed + 1e-12:
                    row["regressed"] = True
                    elsewhere = (f"; measured on another machine: {'; '.join(moved_to)}"
                                 if moved_to and metric.startswith(MACHINE_BOUND) else "")
                    regressions.append({"backend": name, "metric": metric, "baseline": a, "current": c,
                                        "delta": round(d, 6), "tolerance": row["tolerance"],
                                        "reason": f"{metric} {a} -> {c} (allowed {'drop' if tol['direction'] == 'higher' else 'rise'} "
                                                  f"{round(allowed, 4)}{elsewhere})"})
                elif worse < -allowed:
                    improvements.append({"backend": name, "metric": metric, "baseline": a, "current": c})
            rows[metric] = row
        deltas[name] = rows
        if outputs is not None and isinstance(bb.get("outputs"), dict):
            output_rows[name] = _compare_outputs(name, bb["outputs"], outputs.get(name), settings_diff,
                                                 tols.get(OUTPUTS_METRIC), regressions)
        if logits is not None and isinstance(bb.get("first_step"), dict):
            logit_rows[name] = compare_logits(name, bb["first_step"], logits.get(name), logit_diff,
                                              tols.get(LOGITS_METRIC), regressions)
        if step_logits is not None and isinstance(bb.get("teacher_forced"), dict):
            step_rows[name] = compare_logits(name, bb["teacher_forced"], step_logits.get(name), logit_diff,
                                             tols.get(STEP_LOGITS_METRIC), regressions, TEACHER_FORCED)
        if bb.get("verdict") == "pass" and (cb.get("verdict") or {}).get("kind") not in (None, "pass"):
            regressions.append({"backend": name, "metric": "verdict", "baseline": "pass",
                                "current": cb["verdict"]["kind"], "reason": "verdict no longer pass"})
    new = sorted(n for n, b in cur_b.items() if n not in base_b)
    # a backend whose results all came from the run directory was not measured again: the comparison then
    # checks the stored run (re-running the same command reuses everything), not the runtime as it is now
    reused = sorted(set((report.get("run") or {}).get("backends_reused") or []) & set(base_b))
    return {"ok": not regressions, "regressions": regressions, "deltas": deltas, "improvements": improvements,
            "missing_backends": missing, "new_backends": new, "signature_changes": sig_changes,
            "outputs": output_rows, "first_step": logit_rows, "teacher_forced": step_rows,
            "artifacts": artifact_rows, "reused": reused,
            "fingerprints": {"baseline": fb, "current": fc, "match": match},
            "machine": {"baseline": baseline.get("machine"), "current": report.get("machine"),
                        "differences": moved_to},
            "tolerances": {m: t for m, t in tols.items()}}
