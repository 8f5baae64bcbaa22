"""Target selection: the deployable backend under constraints, with a fallback chain.

``select_targets(report, constraints) -> dict`` returns (the engine stores it as
``report["selection"]``)::

    {"chosen": name | None,              # None: nothing feasible (the CLI exits with code 3)
     "fallback_chain": [name, ...],      # the other feasible backends, best first
     "ranking": [name, ...],             # chosen + fallback_chain
     "rejected": {name: reason},         # every backend that is not feasible, and why (every
                                         # violated constraint, joined with "; ")
     "decided_by": str | None,           # the rank_by metric that separated the chosen one from the
                                         # others (None: one feasible backend; "name": all tied)
     "rank_by": [...], "rank_tolerance": {...}, "constraints": {...effective constraints}}

Constraints (``[constraints]`` in the matrix or a ``--constraints`` TOML file; defaults):

    runtimes = []              # allowed signature runtimes ("tflite", "onnxruntime", "ctranslate2",
                               # "torch"); empty = any
    backends = []              # allowed backend names; empty = any
    exclude = []               # backend names never chosen
    precision = "any"          # "any" | "int8-weights" (any INT8 scheme) | "full-int8" (the artifact's
                               # op audit says full_int8 = true: integer-only graph with int8 activations,
                               # e.g. for an int8 NPU) | "integer-only" (integer_only = true: no float op,
                               # int16 activations allowed, as in 16x8 or mixed int8/int16 graphs)
    max_bytes = 0              # artifact bytes on disk (0 = no limit)
    max_p90_latency_ms = 0     # speed suite p90 latency at batch 1 (0 = no limit)
    max_bleu_drop = 1.0        # BLEU points below the reference backend (negative = no limit)
    allow_source_blind = false # a source-blind backend is never chosen unless true
    require_verdict_pass = true   # only backends whose verdict meets the run's [bar] (kind "pass"); false:
                               # the constraints above alone decide (e.g. to rank failing variants too)
    rank_by = ["latency_p50_ms", "bytes", "exact_match_vs_reference"]
                               # best first, each metric in the direction its suite declares (lower
                               # latency/size, higher quality); metrics missing -> last
    rank_tolerance = {latency_p50_ms = "10%", bytes = "5%"}
                               # values this close to the best count as a tie, so the next metric
                               # decides (a number, "N%" or {abs, rel}, as in [tolerances])

Ranking picks the best remaining backend again and again: keep the candidates whose first metric is
within its tolerance of the best value, then the same with the next metric among them, and so on;
of what is left, the best by the exact values (then name). Without tolerances, 2-thread latency noise
(1.3-2x between identical runs on a shared VM) flips the choice between backends that differ by a few
percent; with them, a near-tie in speed and size is decided by agreement with the reference.
Latency ranks by the median (p50), not p90: the speed suite's p90 rests on the 3-4 slowest of its 30
sentences: across nine runs of the Marian matrices here, the tflite-int8 / tflite-fp32-split p90 ratio went
above 1 once (1.18: the order flipped) while the p50 ratio stayed at or below 0.85. The tail is a constraint
(``max_p90_latency_ms``), not the ranking key; set ``rank_by`` to rank on p90 anyway.

A constraint whose metric was not measured rejects the backend (the reason says so), so a
missing speed suite never silently passes a latency limit.
"""
from __future__ import annotations

import math
from typing import Any

from backends.errors import InvalidInputError
from orchestrator.attribution import bleu_drop, is_int8, is_source_blind, metrics, runtime_of, size_bytes
from orchestrator.baseline import allowed_delta, parse_tolerance

DEFAULTS: dict[str, Any] = {"runtimes": [], "backends": [], "exclude": [], "precision": "any", "max_bytes": 0,
                            "max_p90_latency_ms": 0, "max_bleu_drop": 1.0, "allow_source_blind": False,
                            "require_verdict_pass": True,
                            "rank_by": ["latency_p50_ms", "bytes", "exact_match_vs_reference"],
                            "rank_tolerance": {"latency_p50_ms": "10%", "bytes": "5%"}}
PRECISIONS = ("any", "int8-weights", "full-int8", "integer-only")
#: precision constraint -> the op-audit flag it needs
AUDIT_FLAGS = {"full-int8": "full_int8", "integer-only": "integer_only"}


def _sign(metric: str) -> float:
    """+1 where smaller is better (ranked ascending), -1 where larger is better: as the suite declares."""
    from orchestrator.suites.base import lower_is_better

    return 1.0 if lower_is_better(metric) else -1.0


def effective_constraints(constraints: dict[str, Any] | None) -> dict[str, Any]:
    c = dict(constraints or {})
    unknown = sorted(set(c) - set(DEFAULTS))
    if unknown:
        raise InvalidInputError(f"[constraints]: unknown key(s) {unknown}; accepted: {sorted(DEFAULTS)}")
    out = {**DEFAULTS, **c}
    for k in ("runtimes", "backends", "exclude", "rank_by"):
        if isinstance(out[k], str):
            out[k] = [out[k]]
        if not isinstance(out[k], (list, tuple)) or not all(isinstance(x, str) for x in out[k]):
            raise InvalidInputError(f"[constraints] {k} must be a list of strings, got {out[k]!r}")
        out[k] = list(out[k])
    if out["precision"] not in PRECISIONS:
        raise InvalidInputError(f"[constraints] precision must be one of {', '.join(PRECISIONS)}, "
                                f"got {out['precision']!r}")
    for k in ("max_bytes", "max_p90_latency_ms", "max_bleu_drop"):
        if isinstance(out[k], bool) or not isinstance(out[k], (int, float)):
            raise InvalidInputError(f"[constraints] {k} must be a number, got {out[k]!r}")
    for k in ("allow_source_blind", "require_verdict_pass"):
        if not isinstance(out[k], bool):
            raise InvalidInputError(f"[constraints] {k} must be true or false, got {out[k]!r}")
    if not isinstance(out["rank_tolerance"], dict):
        raise InvalidInputError(f"[constraints] rank_tolerance must be a table of metric = tolerance, "
                                f"got {out['rank_tolerance']!r}")
    out["rank_tolerance"] = dict(out["rank_tolerance"])
    for metric, spec in out["rank_tolerance"].items():
        parse_tolerance(metric, spec, "[constraints] rank_tolerance")  # validates; raises on a bad spec
    from orchestrator.suites.base import known_metrics

    known = known_metrics()
    bad = sorted(m for m in {*out["rank_by"], *out["rank_tolerance"]} if m not in known)
    if bad:
        raise InvalidInputError(f"[constraints] rank_by / rank_tolerance: {bad} are not metrics any suite reports; "
                                f"metrics: {', '.join(sorted(known))}")
    return out


def audit_flag(report: dict[str, Any], name: str, flag: str = "full_int8") -> tuple[bool | None, str]:
    """An op-audit flag of the artifact (``full_int8`` | ``integer_only``): (value or None if not
    audited, where it was read)."""
    art = (report["backends"][name].get("artifacts") or {})
    if isinstance(art.get(flag), bool):
        return art[flag], f"artifacts.{flag}"
    for key in ("op_audit", "ops_audit", "audit", "extra"):
        sub = art.get(key)
        if isinstance(sub, dict) and isinstance(sub.get(flag), bool):
            return sub[flag], f"artifacts.{key}.{flag}"
    return None, f"no op audit (artifacts.{flag}) in the report"


def _size(report: dict[str, Any], name: str) -> Any:
    return size_bytes(report, name)


def reject_reasons(report: dict[str, Any], name: str, c: dict[str, Any]) -> list[str]:
    """Every constraint ``name`` violates (empty: feasible)."""
    b = report["backends"][name]
    if b.get("status") != "ok":
        return [f"status {b.get('status')}: {b.get('reason') or 'no reason recorded'}"]
    out: list[str] = []
    rt = runtime_of(report, name)
    if c["runtimes"] and rt not in c["runtimes"]:
        out.append(f"runtime '{rt}' not allowed (allowed: {', '.join(c['runtimes'])})")
    if c["backends"] and name not in c["backends"]:
        out.append(f"not in the allowed backends ({', '.join(c['backends'])})")
    if name in c["exclude"]:
        out.append("excluded by the constraints")
    if c["precision"] != "any":
        if not is_int8(report, name):
            sig = b.get("signature") or {}
            out.append(f"precision '{sig.get('precision')}' is not INT8 (required: {c['precision']})")
        elif c["precision"] in AUDIT_FLAGS:
            ok, where = audit_flag(report, name, AUDIT_FLAGS[c["precision"]])
            what = "float ops" if c["precision"] == "integer-only" else "float ops or non-int8 activations"
            if ok is None:
                out.append(f"{c['precision']} required but {where}")
            elif not ok:
                out.append(f"{c['precision']} required but the op audit reports {what} ({where} = false)")
    m = metrics(report, name)
    if c["max_bytes"] and c["max_bytes"] > 0:
        size = _size(report, name)
        if not isinstance(size, (int, float)):
            out.append(f"size on disk not measured (max_bytes = {c['max_bytes']})")
        elif size > c["max_bytes"]:
            out.append(f"{size} bytes > max_bytes {c['max_bytes']}")
    if c["max_p90_latency_ms"] and c["max_p90_latency_ms"] > 0:
        p90 = m.get("latency_p90_ms")
        if not isinstance(p90, (int, float)):
            out.append(f"p90 latency not measured (speed suite) but max_p90_latency_ms = {c['max_p90_latency_ms']}")
        elif p90 > c["max_p90_latency_ms"]:
            out.append(f"p90 latency {p90} ms > {c['max_p90_latency_ms']} ms")
    if c["max_bleu_drop"] >= 0:
        drop = bleu_drop(report, name)
        if drop is None:
            out.append("BLEU vs the reference backend not measured (quality suite)")
        elif drop > c["max_bleu_drop"]:
            out.append(f"BLEU drop {drop} > max_bleu_drop {c['max_bleu_drop']}")
    if not c["allow_source_blind"] and is_source_blind(report, name):
        out.append(f"source-blind decoder (cross-source first-step cosine {m.get('cross_source_cosine')})")
    if c["require_verdict_pass"]:
        kind = (b.get("verdict") or {}).get("kind")
        if kind is None:
            out.append("no verdict (the quality suite or the reference backend did not run; "
                       "require_verdict_pass = false to select without one)")
        elif kind != "pass":
            out.append(f"fails the [bar]: verdict '{kind}' (require_verdict_pass)")
    return out


def reject_reason(report: dict[str, Any], name: str, c: dict[str, Any]) -> str | None:
    """All violated constraints joined with '; ' (None: feasible)."""
    reasons = reject_reasons(report, name, c)
    return "; ".join(reasons) if reasons else None


def _value(report: dict[str, Any], name: str, metric: str) -> float | None:
    v = _size(report, name) if metric == "bytes" else metrics(report, name).get(metric)
    if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v):
        return None
    return float(v)


def rank_key(report: dict[str, Any], name: str, rank_by: list[str]) -> tuple:
    """The exact (tolerance-free) order: ascending, larger-is-better metrics negated, missing last."""
    key = []
    for metric in rank_by:
        v = _value(report, name, metric)
        key.append((1, 0.0) if v is None else (0, _sign(metric) * v))
    return tuple(key) + (name,)


def _pick(report: dict[str, Any], names: list[str], rank_by: list[str],
          tolerance: dict[str, dict[str, Any]]) -> tuple[str, str | None]:
    """The best of ``names``, and the metric that decided it (see the module docstring)."""
    pool, decided = list(names), None
    for metric in rank_by:
        if len(pool) == 1:
            break
        vals = {n: _value(report, n, metric) for n in pool}
        measured = [n for n in pool if vals[n] is not None]
        if not measured:
            continue
        sign = _sign(metric)
        best = min(sign * vals[n] for n in measured) * sign
        slack = allowed_delta(tolerance[metric], best) if metric in tolerance else 0.0
        kept = [n for n in measured if sign * (vals[n] - best) <= slack + 1e-12]
        if len(kept) < len(pool):
            pool, decided = kept, metric
    ordered = sorted(pool, key=lambda n: rank_key(report, n, rank_by))
    if len(ordered) > 1:  # tied within the tolerances: the exact values (then the name) decide
        a, b = (rank_key(report, n, rank_by) for n in ordered[:2])
        decided = next((rank_by[i] for i in range(len(rank_by)) if a[i] != b[i]), "name")
    return ordered[0], decided


def rank(report: dict[str, Any], names: list[str], rank_by: list[str],
         rank_tolerance: dict[str, Any] | None = None) -> tuple[list[str], str | None]:
    """``names`` best first, and what decided the first place (None for fewer than two names)."""
    tolerance = {m: parse_tolerance(m, spec, "[constraints] rank_tolerance")
                 for m, spec in (rank_tolerance or {}).items()}
    remaining, order, first = list(names), [], None
    while remaining:
        name, decided = _pick(report, remaining, rank_by, tolerance)
        if not order and len(remaining) > 1:
            first = decided
        order.append(name)
        remaining.remove(name)
    return order, first


def run_constraints(report: dict[str, Any]) -> dict[str, Any]:
    """The constraints a stored run's selection last used (``select --constraints`` may have changed
    them), else its matrix's ``[constraints]``."""
    sel = report.get("selection") if isinstance(report.get("selection"), dict) else {}
    return dict(sel.get("constraints") or ((report.get("settings") or {}).get("matrix") or {}).get("constraints") or {})


def select_targets(report: dict[str, Any], constraints: dict[str, Any] | None = None) -> dict[str, Any]:
    c = effective_constraints(constraints)
    rejected: dict[str, str] = {}
    feasible = []
    for name in report.get("backends", {}):
        reason = reject_reason(report, name, c)
        if reason is None:
            feasible.append(name)
        else:
            rejected[name] = reason
    ranking, decided_by = rank(report, feasible, c["rank_by"], c["rank_tolerance"])
    return {"chosen": ranking[0] if ranking else None, "fallback_chain": ranking[1:], "ranking": ranking,
            "rejected": rejected, "decided_by": decided_by, "rank_by": c["rank_by"],
            "rank_tolerance": c["rank_tolerance"], "constraints": c}
