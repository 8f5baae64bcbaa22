"""The benchmark printer: the issue's targets from a finished run's report.json.

The benchmark is ``python cli.py compare --matrix matrices/benchmark.toml --out RUN`` followed by
``python -m orchestrator.benchmark RUN`` (or ``RUN/report.json``); ``--json`` prints the numbers
as JSON (``benchmark_summary(report)`` returns them as a dict). A file that is not a seqquant
report is an error (exit code 2).

Printed: per backend BLEU, ΔBLEU vs the reference, identical-to-FP32 rate (exact match vs the
reference), near-tie (share of its divergences where the reference's own margin was under the split-
generation suite's ``near_tie_nats``), sure-flips (its flip rate at steps the reference was sure
of), noise (the fitted noise scale of its flips, nats; the reference's noise budget for 80/90/95%
identical is printed below the table), p50/p90 latency, size and verdict; ratios between named pairs
(latency, size, BLEU delta: e.g. tflite-int8 vs tflite-fp32-split, vs ct2-int8); issue 3's targets
one by one (:func:`target_list`: met, MISS, or not judged and why; a run on fewer sentences,
another test set or another model says so), and the same targets for each recipe of
:data:`ALTERNATIVES` that ran (tflite-dynamic: not strict INT8) in tflite-int8's place; whether the
verdicts come out as the issue expects on the default model, and the verdicts and selection at issue
3's agreement target (the run's bar with ``min_int8_agreement = 0.8``, judged on a copy: ``python
cli.py judge`` would rewrite the run); the run's wall time against the 15 min cold / 5 min warm
target.

A target is judged only when the run has what it is defined for, else it says "not judged" and why:
the verdict expectations need the quality suite and the reference backend (:func:`verdict_gaps`; on
another model than the default they are judged with a note: they are the default model's); the time
targets need the whole benchmark (:func:`time_target_gaps`: the default model and test set, every
sentence, its beam size, every backend and suite of ``matrices/benchmark.toml`` finished ok), and
neither applies to a run that reused some artifacts and built others.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from backends.errors import InvalidInputError, SeqquantError
from orchestrator.report_tables import fmt, noise_budget_text

#: (numerator, denominator): "a vs b"
PAIRS = (("tflite-int8", "tflite-fp32-split"), ("tflite-int8", "ct2-int8"), ("tflite-int8", "onnx-dynamic-int8"),
         ("tflite-int8", "onnx-static-int8"), ("tflite-int8-naive", "tflite-int8"),
         ("tflite-dynamic", "tflite-int8"),
         ("onnx-dynamic-int8", "onnx-fp32"), ("onnx-static-int8", "onnx-fp32"), ("ct2-int8", "ct2-fp32"),
         ("tflite-fp32-split", "torch-fp32"), ("torch-fp32-split", "torch-fp32"), ("ct2-fp32", "torch-fp32"),
         ("onnx-fp32", "torch-fp32"))
#: verdicts the issue expects on the default model
EXPECTED = {"tflite-int8-naive": "calibration", "tflite-int8-hfmask": "mask", "tflite-int8": "pass",
            "tflite-dynamic": "pass", "onnx-dynamic-int8": "pass", "onnx-static-int8": "pass", "ct2-int8": "pass",
            "ct2-int8-mkl": "pass", "torch-fp32-split": "pass", "tflite-fp32-split": "pass", "onnx-fp32": "pass",
            "ct2-fp32": "pass"}
COLD_TARGET_S, WARM_TARGET_S = 15 * 60, 5 * 60
#: issue 3's target: >= 80% of tflite-int8's greedy outputs identical to FP32's
ISSUE_AGREEMENT = 0.8
#: issue 3's strict-INT8 backend, its FP32 pair, the CPU runtime it is timed against, the first-try recipe
INT8, FP32_PAIR, FASTEST, NAIVE = "tflite-int8", "tflite-fp32-split", "ct2-int8", "tflite-int8-naive"


class _NotJudged(Exception):
    """A target lacks a figure it is judged on; the message says which."""


def _figure(report: dict[str, Any], name: str, metric: str) -> float:
    """Backend ``name``'s ``metric`` (``bytes``: its size on disk), or :class:`_NotJudged` saying why not."""
    b = (report.get("backends") or {}).get(name)
    if not isinstance(b, dict):
        raise _NotJudged(f"{name} is not in the run")
    if b.get("status") != "ok":
        raise _NotJudged(f"{name} is {b.get('status')} in this run")
    v = _size(b) if metric == "bytes" else (b.get("metrics") or {}).get(metric)
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise _NotJudged(f"{name} has no {metric} (its suite did not run or did not measure it)")
    return float(v)


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def _fp32_split_identical(r: dict[str, Any]) -> tuple[str, bool]:
    if r.get("reference_backend") != "torch-fp32":
        raise _NotJudged(f"the run's reference is {r.get('reference_backend')}, not torch-fp32")
    em = _figure(r, FP32_PAIR, "exact_match_vs_reference")
    return _pct(em), em >= 0.995


def _bleu_within(name: str):
    def judge(r: dict[str, Any]) -> tuple[str, bool]:
        from orchestrator.attribution import bleu_drop

        bleu, ref = _figure(r, name, "bleu"), _figure(r, r.get("reference_backend"), "bleu")
        drop = bleu_drop(r, name)
        return f"{bleu:.2f} vs {ref:.2f} ({-drop:+.2f})", drop <= 0.5
    return judge


def _at_least(name: str, metric: str, least: float):
    def judge(r: dict[str, Any]) -> tuple[str, bool]:
        value = _figure(r, name, metric)
        return _pct(value), value >= least
    return judge


def _cosine_within(name: str):
    def judge(r: dict[str, Any]) -> tuple[str, bool]:
        cos = _figure(r, name, "cross_source_cosine")
        ref = _figure(r, r.get("reference_backend"), "cross_source_cosine")
        return f"{cos:.3f} vs {ref:.3f}", round(abs(cos - ref), 6) <= 0.05
    return judge


def _ratio_target(name: str, metric: str, other: str, unit: str, scale: float, most: float):
    def judge(r: dict[str, Any]) -> tuple[str, bool]:
        a, b = _figure(r, name, metric), _figure(r, other, metric)
        ratio = a / b if b else float("inf")
        return f"{a / scale:.1f} vs {b / scale:.1f} {unit} (x{ratio:.3f})", ratio <= most
    return judge


def _naive_blind(r: dict[str, Any]) -> tuple[str, bool]:
    cos, bleu = _figure(r, NAIVE, "cross_source_cosine"), _figure(r, NAIVE, "bleu")
    return f"cosine {cos:.3f}, BLEU {bleu:.2f}", cos >= 0.98 or bleu < 5


def target_list(int8: str = INT8) -> list[tuple[str, Any]]:
    """Issue 3's targets as (what, judge(report) -> (measured, met)), with ``int8`` in tflite-int8's place;
    FP32 is the run's reference backend."""
    return [
        (f"{FP32_PAIR} identical to torch-fp32 >= 99.5%", _fp32_split_identical),
        (f"{int8} BLEU >= FP32 BLEU - 0.5", _bleu_within(int8)),
        (f"{int8} identical to FP32 >= {ISSUE_AGREEMENT:.0%}", _at_least(int8, "exact_match_vs_reference",
                                                                        ISSUE_AGREEMENT)),
        (f"{int8} cross-source cosine within 0.05 of FP32's", _cosine_within(int8)),
        (f"{int8} first-step argmax = FP32's on >= 95% of sources", _at_least(int8, "first_step_argmax_agreement",
                                                                               0.95)),
        (f"{int8} size <= 30% of {FP32_PAIR}'s", _ratio_target(int8, "bytes", FP32_PAIR, "MB", 1e6, 0.30)),
        (f"{int8} p50 latency <= {FP32_PAIR}'s", _ratio_target(int8, "latency_p50_ms", FP32_PAIR, "ms", 1, 1.0)),
        (f"{int8} p50 latency <= 1.5x {FASTEST}'s", _ratio_target(int8, "latency_p50_ms", FASTEST, "ms", 1, 1.5)),
        (f"{NAIVE} source-blind (cross-source cosine >= 0.98 or BLEU < 5)", _naive_blind),
    ]


#: recipes that are not strict INT8, judged by the same targets in tflite-int8's place when they ran: what
#: they are (the closing question of issue 3 is whether the target should admit them)
ALTERNATIVES = {"tflite-dynamic": "int8 weights, matmul inputs quantized per call: not strict INT8"}


def issue_targets(report: dict[str, Any], int8: str = INT8) -> list[dict[str, Any]]:
    """Each of issue 3's targets on ``report`` (with ``int8`` in tflite-int8's place):
    ``{"target", "measured", "met", "why_not_judged"}``; ``met`` is None when the run lacks a figure the
    target needs (``why_not_judged`` says which)."""
    out = []
    for label, judge in target_list(int8):
        try:
            measured, met = judge(report)
        except _NotJudged as exc:
            out.append({"target": label, "measured": None, "met": None, "why_not_judged": str(exc)})
        else:
            out.append({"target": label, "measured": measured, "met": bool(met), "why_not_judged": None})
    return out


def alternative_targets(report: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """:func:`issue_targets` for each of :data:`ALTERNATIVES` that finished ok in the run."""
    backends = report.get("backends") or {}
    return {name: issue_targets(report, name) for name in ALTERNATIVES
            if (backends.get(name) or {}).get("status") == "ok"}


def issue_target_scope(report: dict[str, Any]) -> list[str]:
    """How this run differs from what issue 3's targets are defined on (the default model, every sentence of
    the default test set); empty: it does not."""
    from orchestrator.data import DEFAULT_SRC

    data = report.get("data") or {}
    notes = []
    n, total = data.get("n_sentences"), data.get("lines_in_files")
    if isinstance(n, int) and isinstance(total, int) and n + (data.get("skipped_empty_lines") or 0) < total:
        notes.append(f"on {n} of the test set's {total} sentences (the targets are for every one)")
    src = str(data.get("src") or "")
    if src and Path(src).name != DEFAULT_SRC.name:
        notes.append(f"on test set {src} (the targets are for {DEFAULT_SRC.name})")
    if _other_model(report):
        notes.append(f"on model {_other_model(report)} (the targets are the default model's)")
    return notes


def report_problems(report: Any) -> list[str]:
    """Why ``report`` cannot be summarized (empty: it can). The printer reads less than ``show`` does
    (:func:`orchestrator.report.report_problems`): the backends with their status and metrics, the
    reference, the run's wall time; a report without a ``schema_version`` (written by the suites'
    helpers, not by ``compare``) is read too, one with another version is not."""
    from orchestrator.report import BACKEND_STATUSES
    from orchestrator.report import SCHEMA_VERSION

    if not isinstance(report, dict):
        return [f"expected a JSON object, got {type(report).__name__}"]
    version = report.get("schema_version", SCHEMA_VERSION)
    if isinstance(version, bool) or version != SCHEMA_VERSION:
        return [f"schema_version {version!r}; this seqquant reads schema_version {SCHEMA_VERSION}"]
    problems = [f"{k} is not an object" for k in ("model", "data", "settings", "suites", "run")
                if k in report and not isinstance(report[k], dict)]
    if "reference_backend" not in report:
        problems.append("no reference_backend")
    backends = report.get("backends")
    if not isinstance(backends, dict) or not backends:
        problems.append("no backends")
    else:
        for name, b in backends.items():
            if not isinstance(b, dict) or b.get("status") not in BACKEND_STATUSES:
                problems.append(f"backends.{name} has no status ({' / '.join(BACKEND_STATUSES)})")
            elif not isinstance(b.get("metrics") or {}, dict):
                problems.append(f"backends.{name}.metrics is not an object")
    wall = (report.get("run") or {}).get("wall_seconds") if isinstance(report.get("run"), dict) else None
    if wall is not None and (isinstance(wall, bool) or not isinstance(wall, (int, float))):
        problems.append(f"run.wall_seconds {wall!r} is not a number")
    return problems


def load_report(path) -> dict[str, Any]:
    """A run directory's (or a path's) report.json, checked (:func:`report_problems`)."""
    p = Path(path)
    if p.is_dir():
        p = p / "report.json"
    if not p.is_file():
        raise InvalidInputError(f"{p} does not exist: pass a run directory or its report.json")
    try:
        report = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:  # ValueError: not JSON, not UTF-8
        raise InvalidInputError(f"{p} is not a report.json ({exc}); pass the run directory of "
                                f"`python cli.py compare --matrix matrices/benchmark.toml`") from exc
    problems = report_problems(report)
    if problems:
        raise InvalidInputError(f"{p} is not a seqquant report ({'; '.join(problems)}); pass the run directory "
                                f"of `python cli.py compare --matrix matrices/benchmark.toml`")
    return report


def _bench_matrix():
    from orchestrator.matrix import MATRICES_DIR, load_matrix

    return load_matrix(MATRICES_DIR / "benchmark.toml")


def _other_model(report: dict[str, Any]) -> str | None:
    """The run's model when it is not the default model the targets are for, else None."""
    from orchestrator.data import DEFAULT_MODEL

    path = str((report.get("model") or {}).get("path") or "")
    return None if Path(path).name == DEFAULT_MODEL.name else (path or "?")


def verdict_gaps(report: dict[str, Any]) -> list[str]:
    """Why the expected verdicts (:data:`EXPECTED`) cannot be judged on this run (empty: they can): the
    verdicts rest on the quality suite's BLEU against the reference backend."""
    gaps = []
    suites = report.get("suites")
    if isinstance(suites, dict):  # compare's report: the run's suites
        quality = (suites.get("quality") or {}).get("status") == "ok"
    else:
        quality = any("quality" in (b.get("suites") or {}) for b in (report.get("backends") or {}).values())
    if not quality:
        gaps.append("the quality suite did not run (the verdicts rest on BLEU vs the reference)")
    ref = report.get("reference_backend")
    if ((report.get("backends") or {}).get(ref) or {}).get("status") != "ok":
        gaps.append(f"the reference backend {ref} is not ok in this run")
    return gaps


def time_target_gaps(report: dict[str, Any]) -> list[str]:
    """Why the wall-time targets (the whole benchmark, cold or warm) do not apply to this run (empty: they
    do). The targets are for ``matrices/benchmark.toml`` as it stands: the default model and test set,
    every sentence, its beam size, every one of its backends finished ok and every one of its suites."""
    from orchestrator.data import DEFAULT_MODEL, DEFAULT_SRC

    m = _bench_matrix()
    other = _other_model(report)
    gaps = [f"model {other} is not the default model ({DEFAULT_MODEL.name})"] if other else []
    data = report.get("data") or {}
    src = str(data.get("src") or "")
    if Path(src).name != DEFAULT_SRC.name:
        gaps.append(f"test set {src or '?'} is not the default ({DEFAULT_SRC.name})")
    n, total = data.get("n_sentences"), data.get("lines_in_files")
    if not isinstance(n, int) or not isinstance(total, int):
        gaps.append("the report does not say how many of the test set's sentences ran")
    elif n + (data.get("skipped_empty_lines") or 0) < total:
        gaps.append(f"{n} of {total} sentences (the benchmark runs every one)")
    beams, want = (report.get("settings") or {}).get("num_beams"), m.settings.get("num_beams", 1)
    if beams != want:
        gaps.append(f"beam size {beams} (the benchmark's is {want})")
    suites = report.get("suites") or {}
    no_suite = [s for s in m.suites if (suites.get(s) or {}).get("status") != "ok"]
    if no_suite:
        gaps.append(f"suite(s) not run: {', '.join(no_suite)}")
    backends = report.get("backends") or {}
    absent = [b for b in m.backends or () if b not in backends]
    if absent:
        gaps.append(f"{len(absent)} of the benchmark's {len(m.backends)} backends not in the run: {', '.join(absent)}")
    not_ok = [f"{b} {backends[b].get('status')}" for b in m.backends or ()
              if b in backends and backends[b].get("status") != "ok"]
    if not_ok:
        gaps.append(f"backend(s) not ok: {', '.join(not_ok)}")
    return gaps


def _ratio(a: Any, b: Any) -> float | None:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and b:
        return round(a / b, 3)
    return None


def _size(b: dict[str, Any]) -> Any:
    from orchestrator.attribution import size_bytes

    return size_bytes({"backends": {"x": b}}, "x")


def benchmark_summary(report: dict[str, Any]) -> dict[str, Any]:
    backends = report.get("backends") or {}
    rows = {}
    for name, b in backends.items():
        m = b.get("metrics") or {}
        rows[name] = {"status": b.get("status"), "bleu": m.get("bleu"), "bleu_delta": m.get("bleu_delta_vs_reference"),
                      "identical_to_fp32": m.get("exact_match_vs_reference"),
                      "p_value": m.get("bleu_p_value_vs_reference"),
                      "p50_ms": m.get("latency_p50_ms"), "p90_ms": m.get("latency_p90_ms"),
                      "throughput_sps": m.get("throughput_sps"), "bytes": _size(b),
                      "cross_source_cosine": m.get("cross_source_cosine"), "source_blind": m.get("source_blind"),
                      "near_tie_divergences": m.get("near_tie_divergence_share"),
                      "decisive_flip_rate": m.get("decisive_flip_rate"), "noise_scale": m.get("flip_noise_scale"),
                      "verdict": (b.get("verdict") or {}).get("kind")}
    ratios = []
    for a, b in PAIRS:
        ra, rb = rows.get(a), rows.get(b)
        if not ra or not rb or ra["status"] != "ok" or rb["status"] != "ok":
            continue
        bd = (round(ra["bleu"] - rb["bleu"], 2) if isinstance(ra["bleu"], (int, float))
              and isinstance(rb["bleu"], (int, float)) else None)
        ratios.append({"a": a, "b": b, "p50_latency_ratio": _ratio(ra["p50_ms"], rb["p50_ms"]),
                       "p90_latency_ratio": _ratio(ra["p90_ms"], rb["p90_ms"]),
                       "size_ratio": _ratio(ra["bytes"], rb["bytes"]), "bleu_delta": bd})
    verdicts_not_judged = verdict_gaps(report)
    expect = []
    for name, kind in EXPECTED.items():
        if name in rows and rows[name]["status"] == "ok":
            expect.append({"backend": name, "expected": kind, "got": rows[name]["verdict"],
                           "met": None if verdicts_not_judged else rows[name]["verdict"] == kind})
    run = report.get("run") or {}
    wall = run.get("wall_seconds")
    kind, built, with_artifacts = run_kind(report)
    warm = kind == "warm"
    target = {"warm": WARM_TARGET_S, "cold": COLD_TARGET_S}.get(kind)
    time_not_judged = time_target_gaps(report)
    return {"reference": report.get("reference_backend"), "n_sentences": (report.get("data") or {}).get("n_sentences"),
            "backends": rows, "ratios": ratios, "verdict_expectations": expect,
            "verdict_expectations_not_judged": verdicts_not_judged,
            "model_note": (f"the expectations are the default model's; this run's model is {_other_model(report)}"
                           if _other_model(report) else None),
            "issue_targets": issue_targets(report), "issue_targets_scope": issue_target_scope(report),
            "issue_targets_alternatives": alternative_targets(report),
            "verdict_headline": (report.get("verdict") or {}).get("headline"),
            "selection": (report.get("selection") or {}).get("chosen"),
            "noise_budget": noise_budget_text(report) or None,
            "at_issue_bar": None if verdicts_not_judged else judged_at_issue_bar(report),
            "wall_seconds": wall, "warm": warm, "run_kind": kind, "artifacts_built": built,
            "parallel_builds": run.get("parallel_builds"),
            "backends_with_artifacts": with_artifacts, "time_target_seconds": target,
            "time_target_not_judged": time_not_judged,
            "time_target_met": (wall <= target) if isinstance(wall, (int, float)) and target is not None
            and not time_not_judged else None}


def judged_at_issue_bar(report: dict[str, Any]) -> dict[str, Any] | None:
    """The run's verdicts and selection re-judged (on a copy) with the issue's agreement target as the
    bar's ``min_int8_agreement``, as ``python cli.py judge RUN --set min_int8_agreement=0.8`` would;
    None when the run's own bar already asks for as much."""
    import copy

    from orchestrator.attribution import attribute, run_bar
    from orchestrator.selection import run_constraints, select_targets

    bar = run_bar(report)
    if float(bar.get("min_int8_agreement") or 0) >= ISSUE_AGREEMENT:
        return None
    rep = copy.deepcopy(report)
    verdict = attribute(rep, {**bar, "min_int8_agreement": ISSUE_AGREEMENT})
    return {"min_int8_agreement": ISSUE_AGREEMENT, "headline": verdict.get("headline"),
            "verdicts": {n: k for n, k in (verdict.get("backends") or {}).items() if n in verdict["int8_failing"]
                         or n in verdict["int8_passing"]},
            "selection": select_targets(rep, run_constraints(report)).get("chosen")}


def run_kind(report: dict[str, Any]) -> tuple[str, list[str], int]:
    """``("warm" | "cold" | "mixed", backends that built their artifacts in this run, backends with
    artifacts)``. Warm: every result was reused (the same command run again). Cold: every backend
    that has artifacts built them in this run (an empty artifact cache). Mixed: some artifacts came
    from the cache while suites ran — neither time target describes such a run. Reports written before
    the engine marked artifacts built in a separate process as not reused show them as reused; their
    ``timings.build_wall_seconds`` still records the build, so it counts too."""
    run = report.get("run") or {}
    if not run.get("backends_run") and run.get("backends_reused"):
        return "warm", [], 0
    built, with_artifacts = [], 0
    for name, b in (report.get("backends") or {}).items():
        art = b.get("artifacts") or {}
        if not art.get("cache_key"):
            continue  # skipped or failed before its artifacts existed
        with_artifacts += 1
        if art.get("reused") is False or "build_wall_seconds" in (b.get("timings") or {}):
            built.append(name)
    return ("cold" if with_artifacts and len(built) == with_artifacts else "mixed"), built, with_artifacts


def format_summary(s: dict[str, Any]) -> str:
    lines = [f"benchmark: {s['n_sentences']} sentences, reference {s['reference']}", ""]
    head = ("backend", "status", "BLEU", "dBLEU", "identical", "near-tie", "sure-flips", "noise", "p50ms", "p90ms",
            "MB", "xsrc-cos", "verdict")
    table = [head]
    for n, r in s["backends"].items():
        table.append((n, r["status"], fmt(r["bleu"]), fmt(r["bleu_delta"]), fmt(r["identical_to_fp32"], 3),
                      fmt(r.get("near_tie_divergences"), 3), fmt(r.get("decisive_flip_rate"), 4),
                      fmt(r.get("noise_scale"), 3), fmt(r["p50_ms"], 1), fmt(r["p90_ms"], 1),
                      fmt(r["bytes"] / 1e6 if isinstance(r["bytes"], (int, float)) else None, 1),
                      fmt(r["cross_source_cosine"], 3), fmt(r["verdict"])))
    widths = [max(len(str(row[i])) for row in table) for i in range(len(head))]
    lines += ["  ".join(str(c).ljust(w) for c, w in zip(row, widths)) for row in table]
    if s.get("noise_budget"):
        lines += ["", f"noise budget (flip model on the reference's margins): {s['noise_budget']}"]
    if s["ratios"]:
        lines += ["", "ratios (a / b):"]
        for r in s["ratios"]:
            lines.append(f"  {r['a']} vs {r['b']}: p50 latency x{fmt(r['p50_latency_ratio'], 3)}, p90 x"
                         f"{fmt(r['p90_latency_ratio'], 3)}, size x{fmt(r['size_ratio'], 3)}, BLEU {fmt(r['bleu_delta'])}")
    if s["verdict_expectations"] and s.get("verdict_expectations_not_judged"):
        lines += ["", f"verdicts as expected: not judged: {'; '.join(s['verdict_expectations_not_judged'])}"]
    elif s["verdict_expectations"]:
        met = sum(e["met"] for e in s["verdict_expectations"])
        lines += ["", f"verdicts as expected: {met}/{len(s['verdict_expectations'])}"]
        if s.get("model_note"):
            lines[-1] += f" ({s['model_note']})"
        for e in s["verdict_expectations"]:
            lines.append(f"  [{'ok' if e['met'] else 'MISS'}] {e['backend']}: expected {e['expected']}, got {e['got']}")
    lines += _format_issue_targets(s.get("issue_targets") or [], "issue 3's targets", s.get("issue_targets_scope"))
    for name, targets in (s.get("issue_targets_alternatives") or {}).items():
        lines += _format_issue_targets(targets, f"the same targets with {name} in {INT8}'s place "
                                                f"({ALTERNATIVES.get(name, 'not strict INT8')})",
                                       s.get("issue_targets_scope"))
    if s.get("verdict_headline"):
        lines += ["", f"verdict: {s['verdict_headline']}"]
    if s.get("selection") is not None:
        lines.append(f"selection: {s['selection']}")
    at = s.get("at_issue_bar")
    if at:
        lines += ["", f"at issue 3's agreement target (the run's bar with min_int8_agreement={at['min_int8_agreement']:g}; "
                      f"python cli.py judge RUN --set min_int8_agreement={at['min_int8_agreement']:g} rewrites the "
                      f"run's reports so):", f"  verdict: {at['headline']}",
                  f"  selection: {at['selection'] or 'nothing feasible'}"]
    if s["wall_seconds"] is not None:
        if s.get("time_target_not_judged"):
            lines += ["", f"wall time {s['wall_seconds']:.0f} s: time targets (cold {COLD_TARGET_S} s, warm "
                          f"{WARM_TARGET_S} s, for the whole benchmark) not judged: "
                          f"{'; '.join(s['time_target_not_judged'])}"]
        elif s["time_target_seconds"] is None:
            lines += ["", f"wall time {s['wall_seconds']:.0f} s: {len(s['artifacts_built'])} of "
                          f"{s['backends_with_artifacts']} backends built their artifacts in this run "
                          f"({', '.join(s['artifacts_built']) or 'none'}), the others reused cached ones: neither "
                          f"the cold ({COLD_TARGET_S} s, empty cache) nor the warm ({WARM_TARGET_S} s, re-run) "
                          f"target applies"]
        else:
            lines += ["", f"wall time {s['wall_seconds']:.0f} s ({s['run_kind']} target "
                          f"{s['time_target_seconds']} s): {'met' if s['time_target_met'] else 'MISSED'}"]
        if (s.get("parallel_builds") or 1) > 1:
            lines[-1] += f"; artifacts built {s['parallel_builds']} at a time"
    return "\n".join(lines)


def _format_issue_targets(targets: list[dict[str, Any]], title: str, scope: list[str] | None = None) -> list[str]:
    judged = [t for t in targets if t["met"] is not None]
    if not judged:
        why = sorted({t["why_not_judged"] for t in targets})
        return ["", f"{title}: none judged ({'; '.join(why)})"] if targets else []
    head = f"{title}: {sum(t['met'] for t in judged)} of {len(targets)} met"
    if len(judged) < len(targets):
        head += f", {len(targets) - len(judged)} not judged"
    if scope:
        head += f" ({'; '.join(scope)})"
    lines = ["", head]
    for t in targets:
        mark = "not judged" if t["met"] is None else "met" if t["met"] else "MISS"
        lines.append(f"  [{mark}] {t['target']}: {t['measured'] if t['met'] is not None else t['why_not_judged']}")
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m orchestrator.benchmark", description=__doc__.splitlines()[0])
    ap.add_argument("run", help="run directory (or its report.json) of `compare --matrix matrices/benchmark.toml`")
    ap.add_argument("--json", action="store_true", help="print the numbers as JSON")
    args = ap.parse_args(argv)
    try:
        s = benchmark_summary(load_report(args.run))
    except SeqquantError as exc:  # not a report
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(s, indent=1) if args.json else format_summary(s))
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
