"""report.json (a stable, versioned interface) and report.md.

Schema, ``schema_version`` 1 (fields are only ever added within a version)::

    {
      "schema_version": 1,
      "tool": {"name": "seqquant", "version": "0.1.0"},
      "command": "python cli.py compare ...",
      "created": "2026-11-22T17:00:00Z",
      "model": {"path", "family", "content_hash", "model_type", "source_prefix", "conventions"},
      "data": {"src", "ref", "n_sentences", "lines_in_files", "skipped_empty_lines", "fingerprint",
               "max_source_length", "truncated_sources", "longest_source_tokens",
               "calibration": {"src", "ref", "n_sentences", "fingerprint"}},
      "settings": {"limit", "num_beams", "batch_size", "max_source_length", "max_new_tokens", "threads",
                   "timeout", "build_jobs", "strict_length", "source_prefix", "backends": [...], "suites": [...],
                   "matrix": {path, description, overrides, suite_options, bar, constraints, tolerances}},
      "reference_backend": "torch-fp32",
      "machine": {"cpu", "arch", "cores", "isa": [...], "memory_gb", "os", "python", "dispatch_env"},
      "suites": {"<suite>": {"status": "ok" | "skipped", "reason"}},
      "backends": {
        "<name>": {
          "status": "ok" | "failed" | "skipped",
          "reason": null | "why it failed / was skipped (signal, exit code, timeout, exception, pip hint)",
          "description": "registry description",
          "signature": Signature.to_dict() | null,
          "metrics": {"bleu", "chrf", "exact_match_vs_reference", ...},   # flat numbers merged from suites
          "artifacts": {"files": {role: path}, "sha256": {role: hex digest of the file}, "bytes", "reused",
                        "cache_key", "directory", "build_seconds", "built_on": {cpu, arch, isa, dispatch_env},
                        ...extra (op audit, boundary params...)} | null,
          "suites": {"<suite>": {"status": "ok"|"failed"|"skipped", "reason", "seconds", "reused",
                                 "fingerprint", ...the suite's result fields, ...its compare fields}},
          "timings": {"prepare_seconds", "activate_seconds", "suite_<name>_seconds", "wall_seconds"},
          "settings": {per-backend settings after [overrides]},
          "reused": true if no process was started (everything came from the run dir),
          "exit": {"exitcode", "signal", "timed_out"},        # when a process ran
          "log_tail": ["last lines of worker.log"],           # when failed
          "verdict": {...}                                     # set by orchestrator.attribution
        }
      },
      "verdict": {...}, "selection": {...}, "baseline": {...}, # when those steps ran
      "hook_errors": {"<step>": "traceback"},                  # when a step raised
      "compare_errors": {"<suite>": "traceback"},              # when a Suite.compare raised
      "warnings": ["..."],
      "run": {"dir", "artifact_dir", "wall_seconds", "backends_run", "backends_reused",
              "parallel_builds": how many artifact builds ran at once (1: none or one at a time)}
    }
"""
from __future__ import annotations

import json
import math
import time
import traceback
from pathlib import Path
from typing import Any

from orchestrator.report_tables import fmt, machine_text
from orchestrator.run_store import atomic_write_json, atomic_write_text

SCHEMA_VERSION = 1


def _artifacts(a: dict[str, Any] | None) -> dict[str, Any] | None:
    if not a:
        return None
    out = {k: a.get(k) for k in ("files", "bytes", "reused", "cache_key", "directory", "build_seconds", "sha256",
                                 "built_on")}
    for k, val in (a.get("extra") or {}).items():
        out.setdefault(k, val)
    return out


def _backend_status(proc: dict[str, Any], suites: dict[str, dict[str, Any]]) -> tuple[str, str | None]:
    if proc.get("status") in ("skipped", "failed"):
        return proc["status"], proc.get("reason")
    failed = [f"{s}: {r.get('reason')}" for s, r in suites.items() if r.get("status") == "failed"]
    if failed:
        return "failed", "; ".join(failed)
    return "ok", None


def build_report(cfg, v, plans, procs, records, suites, run_dir: Path, artifact_dir: Path,
                 warnings: list[str]) -> dict[str, Any]:
    from backends.base import SEQQUANT_VERSION
    from backends.machine import describe as describe_machine

    backends: dict[str, Any] = {}
    for p in plans:
        proc = procs.get(p.name, {})
        recs = records.get(p.name, {})
        status, reason = _backend_status(proc, recs)
        suites_out = {}
        metrics: dict[str, Any] = {}
        for s, r in recs.items():
            entry = {"status": r.get("status"), "reason": r.get("reason")}
            entry.update({k: r[k] for k in ("seconds", "reused", "fingerprint") if k in r})
            res = r.get("result") or {}
            if isinstance(res, dict):
                entry.update({k: val for k, val in res.items() if k not in entry})
                metrics.update(res.get("metrics") or {})
            suites_out[s] = entry
        b = {"status": status, "reason": reason, "description": p.entry.description if p.entry else "",
             "signature": proc.get("signature"), "metrics": metrics, "artifacts": _artifacts(proc.get("artifacts")),
             "suites": suites_out, "timings": proc.get("timings", {}), "settings": p.settings or None,
             "reused": bool(proc.get("reused", False))}
        for k in ("exit", "log_tail", "traceback"):
            if proc.get(k) is not None and (k != "exit" or status == "failed"):
                b[k] = proc[k]
        backends[p.name] = b
    data = v.data.describe()
    data.update(max_source_length=cfg.settings["max_source_length"], truncated_sources=v.truncated,
                longest_source_tokens=v.longest,
                calibration={"src": str(cfg.cal_src), "ref": str(cfg.cal_ref),
                             "n_sentences": len(v.calibration.sources),
                             "fingerprint": v.calibration.fingerprint()})
    return {
        "schema_version": SCHEMA_VERSION,
        "tool": {"name": "seqquant", "version": SEQQUANT_VERSION},
        "command": cfg.command,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "model": v.model.describe(),
        "data": data,
        "machine": describe_machine(),
        "settings": {**cfg.settings, "backends": [p.name for p in plans], "suites": list(suites),
                     "matrix": cfg.matrix.to_dict()},
        "reference_backend": cfg.reference,
        "suites": {s: {"status": "skipped" if r else "ok", "reason": r} for s, r in suites.items()},
        "backends": backends,
        "warnings": list(warnings),
        "run": {"dir": str(run_dir), "artifact_dir": str(artifact_dir),
                "backends_run": sorted(n for n, b in procs.items() if b.get("status") != "skipped"
                                       and not b.get("reused")),
                "backends_reused": sorted(n for n, b in procs.items() if b.get("reused"))},
    }


def run_compare_phase(report: dict[str, Any], cfg, v, records, suites, run_dir: Path) -> None:
    """``Suite.compare`` over the backends whose suite succeeded; merge fields and metrics.

    The output is cached in ``<run_dir>/compare/<suite>.json`` keyed by the suite code, its options, the
    reference and the fingerprints of the compared results, so an unchanged re-run does not recompute it.
    """
    from orchestrator.plan import suite_code
    from orchestrator.run_store import digest, read_json
    from orchestrator.suites.base import CompareContext, get_suite

    for s, skip in suites.items():
        if skip:
            continue
        ok = {b: r for b, recs in records.items() for name, r in recs.items()
              if name == s and r.get("status") == "ok" and isinstance(r.get("result"), dict)}
        if not ok:
            continue
        opts = cfg.matrix.suite_options.get(s, {})
        key = digest({"suite": s, "code": suite_code(s), "options": opts, "reference": cfg.reference,
                      "n": len(v.data.sources), "results": {b: r.get("fingerprint") for b, r in ok.items()}})
        cache = run_dir / "compare" / f"{s}.json"
        stored = read_json(cache)
        if isinstance(stored, dict) and stored.get("key") == key and not cfg.forces():
            extras = stored["extras"]
        else:
            ctx = CompareContext(model=v.model, sources=v.data.sources, references=v.data.references,
                                 run_dir=run_dir, reference_backend=cfg.reference, settings=dict(cfg.settings),
                                 suite_options=opts)
            try:
                extras = get_suite(s).compare({b: r["result"] for b, r in ok.items()}, ctx) or {}
            except Exception as exc:
                report.setdefault("compare_errors", {})[s] = f"{type(exc).__name__}: {exc}\n" \
                                                             f"{traceback.format_exc()[-2000:]}"
                report["warnings"].append(f"suite '{s}' compare step failed: {type(exc).__name__}: {exc}")
                continue
            atomic_write_json(cache, {"key": key, "extras": json_safe(extras)})
        for b, fields in extras.items():
            if b not in report["backends"] or not isinstance(fields, dict):
                continue
            entry = report["backends"][b]["suites"].setdefault(s, {})
            entry.update(fields)
            report["backends"][b]["metrics"].update(fields.get("metrics") or {})


#: what ``show`` / ``select`` / ``baseline save`` / the benchmark read from a report.json; all written by
#: ``orchestrator.report.build_report`` since schema_version 1. Objects: key -> the sub-keys read.
REPORT_OBJECTS: dict[str, tuple[str, ...]] = {
    "tool": ("version",), "model": ("path", "family", "content_hash"),
    "data": ("src", "ref", "n_sentences", "truncated_sources", "max_source_length", "calibration"),
    "settings": ("num_beams", "batch_size", "max_new_tokens", "threads"), "suites": (), "backends": (), "run": ()}
REPORT_VALUES = ("command", "created", "reference_backend")
BACKEND_STATUSES = ("ok", "failed", "skipped")


def report_problems(report: Any) -> list[str]:
    """Why ``report`` is not a report.json this seqquant can read (empty: it is)."""
    if not isinstance(report, dict):
        return [f"expected a JSON object, got {type(report).__name__}"]
    if "schema_version" not in report:
        return ["no schema_version"]
    version = report["schema_version"]
    if isinstance(version, bool) or not isinstance(version, int):
        return [f"schema_version {version!r} is not an integer"]
    if version != SCHEMA_VERSION:
        newer = " (written by a newer seqquant?)" if version > SCHEMA_VERSION else ""
        return [f"schema_version {version}{newer}; this seqquant reads schema_version {SCHEMA_VERSION}"]
    problems = []
    missing = [k for k in (*REPORT_VALUES, *REPORT_OBJECTS) if k not in report]
    if missing:
        problems.append(f"missing key(s) {', '.join(missing)}")
    for key, subkeys in REPORT_OBJECTS.items():
        if key not in report:
            continue
        if not isinstance(report[key], dict):
            problems.append(f"{key} is not an object")
            continue
        lacking = [k for k in subkeys if k not in report[key]]
        if lacking:
            problems.append(f"{key} lacks {', '.join(lacking)}")
    model, data = report.get("model"), report.get("data")
    if isinstance(model, dict) and not isinstance(model.get("content_hash", ""), str):
        problems.append("model.content_hash is not a string")
    if isinstance(data, dict) and "calibration" in data and not (
            isinstance(data["calibration"], dict) and {"src", "n_sentences"} <= set(data["calibration"])):
        problems.append("data.calibration lacks src or n_sentences")
    backends = report.get("backends")
    for name, b in backends.items() if isinstance(backends, dict) else ():
        if not isinstance(b, dict) or b.get("status") not in BACKEND_STATUSES:
            problems.append(f"backends.{name} has no status ({' / '.join(BACKEND_STATUSES)})")
        elif b.get("signature") is not None and not (isinstance(b["signature"], dict) and "short" in b["signature"]):
            problems.append(f"backends.{name}.signature is not a backend signature")
    return problems


def read_report_file(path: Path) -> dict[str, Any]:
    """A report.json, read and checked (:func:`report_problems`) before anything uses it: a file that is
    not a seqquant report raises :class:`~orchestrator.errors.RunDirError` (exit code 2)."""
    from orchestrator.errors import RunDirError

    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:  # incl. UnicodeDecodeError
        raise RunDirError(f"{path} is not valid JSON ({exc}); re-run `python cli.py compare` to rewrite it") from exc
    except OSError as exc:
        raise RunDirError(f"cannot read {path}: {exc}") from exc
    problems = report_problems(report)
    if problems:
        raise RunDirError(f"{path} is not a seqquant report ({'; '.join(problems)}); pass the directory a "
                          f"`python cli.py compare` run wrote, or re-run that command to rewrite it")
    return report


def _mb(n: Any) -> str:
    return f"{n / 1e6:.1f}" if isinstance(n, (int, float)) else "-"


def summary_rows(report: dict[str, Any]) -> list[list[str]]:
    """One row per backend, columns :data:`SUMMARY_HEADER` (shared by console and markdown)."""
    rows = []
    for name, b in report["backends"].items():
        m = b.get("metrics") or {}
        em = m.get("exact_match_vs_reference")
        rows.append([name, b["status"], fmt(m.get("bleu")), fmt(m.get("chrf")),
                     f"{em * 100:.1f}%" if isinstance(em, (int, float)) else "-",
                     _mb(m.get("bytes") if isinstance(m.get("bytes"), (int, float))
                         else (b.get("artifacts") or {}).get("bytes")),
                     fmt(m.get("latency_p90_ms"), 1), str((b.get("verdict") or {}).get("kind") or "-"), (b.get("reason") or "").splitlines()[0][:160]
                     if b.get("reason") else ""])
    return rows


SUMMARY_HEADER = ["backend", "status", "BLEU", "chrF", "match vs ref", "size MB", "p90 ms", "verdict",
                  "reason"]


def render_markdown(report: dict[str, Any]) -> str:
    d = report["data"]
    m = report["model"]
    s = report["settings"]
    verdict = report.get("verdict") if isinstance(report.get("verdict"), dict) else {}
    judged = verdict.get("judged") if isinstance(verdict.get("judged"), dict) else None
    lines = [f"# seqquant report", "", f"Command: `{report['command']}`  ",
             *([f"Verdicts re-judged: `{judged.get('command')}` ({judged.get('created')})  "] if judged else []),
             f"Created: {report['created']} (seqquant {report['tool']['version']}, "
             f"report schema {report['schema_version']})", "",
             f"- Model: `{m['path']}` ({m['family']}, sha256 {m['content_hash'][:12]})",
             f"- Data: `{d['src']}` / `{d['ref']}`: {d['n_sentences']} sentences; "
             f"{d['truncated_sources']} source(s) truncated to {d['max_source_length']} tokens",
             f"- Calibration: `{d['calibration']['src']}` ({d['calibration']['n_sentences']} sentences)",
             *([f"- Machine: {machine_text(report['machine'])}"] if isinstance(report.get("machine"), dict) else []),
             f"- Settings: beams {s['num_beams']}, batch {s['batch_size']}, max new tokens {s['max_new_tokens']}, "
             f"threads {s['threads']}; reference backend `{report['reference_backend']}`", "",
             "## Backends", "", "| " + " | ".join(SUMMARY_HEADER) + " |", "|" + "---|" * len(SUMMARY_HEADER)]
    for row in summary_rows(report):
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in row) + " |")
    lines.append("")
    sig = [(n, b["signature"]["short"]) for n, b in report["backends"].items() if b.get("signature")]
    if sig:
        lines += ["## Signatures", ""] + [f"- `{n}`: `{sh}`" for n, sh in sig] + [""]
    from orchestrator.report_tables import markdown, section_tables

    for table in section_tables(report):
        lines += markdown(table)
    if report.get("warnings"):
        lines += ["## Warnings", ""] + [f"- {w}" for w in report["warnings"]] + [""]
    failed = [(n, b) for n, b in report["backends"].items() if b["status"] == "failed" and b.get("log_tail")]
    for n, b in failed:
        lines += [f"### {n}: last log lines", "", "```", *b["log_tail"][-12:], "```", ""]
    return "\n".join(lines)


def json_safe(obj: Any) -> Any:
    """NaN/inf -> None so report.json is strict JSON (any parser reads it)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj


def write_report(report: dict[str, Any], run_dir: Path) -> None:
    atomic_write_json(run_dir / "report.json", json_safe(report))
    atomic_write_text(run_dir / "report.md", render_markdown(report))
