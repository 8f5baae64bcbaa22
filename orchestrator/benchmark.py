"""The benchmark printer: the issue's targets from a finished run's report.json.

The benchmark is ``python cli.py compare --matrix matrices/benchmark.toml --out RUN`` followed by
``python -m orchestrator.benchmark RUN`` (or ``RUN/report.json``); ``--json`` prints the numbers
as JSON. ``benchmark_summary(report)`` returns the same numbers for a ``cli.py bench`` command.

Printed: per backend BLEU, ΔBLEU vs the reference, identical-to-FP32 rate (exact match vs the
reference), p50/p90 latency, size and verdict; ratios between named pairs (latency, size, BLEU
delta: e.g. tflite-int8 vs tflite-fp32-split, vs ct2-int8); whether the verdicts come out as the
issue expects on the default model; the run's wall time against the 15 min cold / 5 min warm target (neither, for a run that reused
some artifacts and built others).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from backends.errors import InvalidInputError
from orchestrator.report_tables import fmt

#: (numerator, denominator): "a vs b"
PAIRS = (("tflite-int8", "tflite-fp32-split"), ("tflite-int8", "ct2-int8"), ("tflite-int8", "onnx-dynamic-int8"),
         ("tflite-int8", "onnx-static-int8"), ("tflite-int8-naive", "tflite-int8"),
         ("onnx-dynamic-int8", "onnx-fp32"), ("onnx-static-int8", "onnx-fp32"), ("ct2-int8", "ct2-fp32"),
         ("tflite-fp32-split", "torch-fp32"), ("torch-fp32-split", "torch-fp32"), ("ct2-fp32", "torch-fp32"),
         ("onnx-fp32", "torch-fp32"))
#: verdicts the issue expects on the default model
EXPECTED = {"tflite-int8-naive": "calibration", "tflite-int8-hfmask": "mask", "tflite-int8": "pass",
            "onnx-dynamic-int8": "pass", "onnx-static-int8": "pass", "ct2-int8": "pass", "ct2-int8-mkl": "pass",
            "torch-fp32-split": "pass", "tflite-fp32-split": "pass", "onnx-fp32": "pass", "ct2-fp32": "pass"}
COLD_TARGET_S, WARM_TARGET_S = 15 * 60, 5 * 60


def load_report(path) -> dict[str, Any]:
    p = Path(path)
    if p.is_dir():
        p = p / "report.json"
    if not p.exists():
        raise InvalidInputError(f"{p} does not exist: pass a run directory or its report.json")
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidInputError(f"{p} is not a report.json: {exc}") from exc


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
    expect = []
    for name, kind in EXPECTED.items():
        if name in rows and rows[name]["status"] == "ok":
            expect.append({"backend": name, "expected": kind, "got": rows[name]["verdict"],
                           "met": rows[name]["verdict"] == kind})
    run = report.get("run") or {}
    wall = run.get("wall_seconds")
    kind, built, with_artifacts = run_kind(report)
    warm = kind == "warm"
    target = {"warm": WARM_TARGET_S, "cold": COLD_TARGET_S}.get(kind)
    return {"reference": report.get("reference_backend"), "n_sentences": (report.get("data") or {}).get("n_sentences"),
            "backends": rows, "ratios": ratios, "verdict_expectations": expect,
            "verdict_headline": (report.get("verdict") or {}).get("headline"),
            "selection": (report.get("selection") or {}).get("chosen"),
            "wall_seconds": wall, "warm": warm, "run_kind": kind, "artifacts_built": built,
            "parallel_builds": run.get("parallel_builds"),
            "backends_with_artifacts": with_artifacts, "time_target_seconds": target,
            "time_target_met": (wall <= target) if isinstance(wall, (int, float)) and target is not None else None}


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
    head = ("backend", "status", "BLEU", "dBLEU", "identical", "p50ms", "p90ms", "MB", "xsrc-cos", "verdict")
    table = [head]
    for n, r in s["backends"].items():
        table.append((n, r["status"], fmt(r["bleu"]), fmt(r["bleu_delta"]), fmt(r["identical_to_fp32"], 3),
                      fmt(r["p50_ms"], 1), fmt(r["p90_ms"], 1),
                      fmt(r["bytes"] / 1e6 if isinstance(r["bytes"], (int, float)) else None, 1),
                      fmt(r["cross_source_cosine"], 3), fmt(r["verdict"])))
    widths = [max(len(str(row[i])) for row in table) for i in range(len(head))]
    lines += ["  ".join(str(c).ljust(w) for c, w in zip(row, widths)) for row in table]
    if s["ratios"]:
        lines += ["", "ratios (a / b):"]
        for r in s["ratios"]:
            lines.append(f"  {r['a']} vs {r['b']}: p50 latency x{fmt(r['p50_latency_ratio'], 3)}, p90 x"
                         f"{fmt(r['p90_latency_ratio'], 3)}, size x{fmt(r['size_ratio'], 3)}, BLEU {fmt(r['bleu_delta'])}")
    if s["verdict_expectations"]:
        met = sum(e["met"] for e in s["verdict_expectations"])
        lines += ["", f"verdicts as expected: {met}/{len(s['verdict_expectations'])}"]
        for e in s["verdict_expectations"]:
            lines.append(f"  [{'ok' if e['met'] else 'MISS'}] {e['backend']}: expected {e['expected']}, got {e['got']}")
    if s.get("verdict_headline"):
        lines += ["", f"verdict: {s['verdict_headline']}"]
    if s.get("selection") is not None:
        lines.append(f"selection: {s['selection']}")
    if s["wall_seconds"] is not None:
        if s["time_target_seconds"] is None:
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


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m orchestrator.benchmark", description=__doc__.splitlines()[0])
    ap.add_argument("run", help="run directory (or its report.json) of `compare --matrix matrices/benchmark.toml`")
    ap.add_argument("--json", action="store_true", help="print the numbers as JSON")
    args = ap.parse_args(argv)
    try:
        s = benchmark_summary(load_report(args.run))
    except InvalidInputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(s, indent=1) if args.json else format_summary(s))
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
