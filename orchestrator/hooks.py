"""Optional post-compare steps, each in a module the suites engineer owns.

* ``orchestrator.attribution.attribute(report, bar) -> dict``  (sets ``backends.<name>.verdict``);
  its return value is stored as ``report["verdict"]``.
* ``orchestrator.selection.select_targets(report, constraints) -> dict`` -> ``report["selection"]``;
  exit code 3 when nothing is feasible (``chosen`` empty).
* ``orchestrator.baseline.compare_to_baseline(report, baseline, tolerances) -> dict`` (with a boolean
  ``regressions``) -> ``report["baseline"]``; exit code 4 on a regression.

A module that is not present is skipped; one that raises is recorded in ``report["hook_errors"]``
(and, for the baseline gate, fails the run with exit code 1) instead of losing the report.
"""
from __future__ import annotations

import importlib
import importlib.util
import json
import traceback
from pathlib import Path
from typing import Any

from backends.errors import SeqquantError
from orchestrator.errors import SettingsError
from orchestrator.report import write_report

EXIT_OK, EXIT_HOOK_ERROR, EXIT_INFEASIBLE, EXIT_REGRESSION = 0, 1, 3, 4


def load_hook(module: str, func: str):
    """The hook function, or None when its module is not in this checkout."""
    full = f"orchestrator.{module}"
    try:
        if importlib.util.find_spec(full) is None:
            return None
    except (ImportError, ValueError):
        return None
    return getattr(importlib.import_module(full), func, None)


def load_baseline_file(path: Path) -> dict[str, Any]:
    if not path.exists():
        raise SettingsError(f"--baseline {path} does not exist; create one with "
                            f"`python cli.py baseline save RUN_DIR {path}`")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise SettingsError(f"--baseline {path} is not a JSON baseline file: {exc}") from exc
    if not isinstance(data, dict):
        raise SettingsError(f"--baseline {path}: expected a JSON object")
    check = load_hook("baseline", "check_baseline")
    if check is not None:
        try:
            check(data, f"--baseline {path}")
        except SeqquantError as exc:
            raise SettingsError(str(exc)) from exc
    return data


def check_requested(cfg) -> None:
    """Fail before running anything if a requested hook cannot work or its matrix table is invalid."""
    where = f"matrix {cfg.matrix.path}" if cfg.matrix.path else "matrix"
    checks = (("attribution", "effective_bar", cfg.matrix.bar, "[bar]"),
              ("selection", "effective_constraints", cfg.matrix.constraints, "[constraints]"))
    for module, func, table, name in checks:
        fn = load_hook(module, func)
        if fn is not None:
            try:
                fn(dict(table))
            except SettingsError:
                raise
            except Exception as exc:
                if isinstance(exc, SeqquantError):
                    raise SettingsError(f"{where} {name}: {exc}") from exc
                raise
    parse = load_hook("baseline", "parse_tolerance")
    if parse is not None:
        for metric, spec in cfg.matrix.tolerances.items():
            try:
                parse(metric, spec)
            except SeqquantError as exc:
                raise SettingsError(f"{where}: {exc}") from exc
    if cfg.baseline is not None:
        if load_hook("baseline", "compare_to_baseline") is None:
            raise SettingsError("--baseline needs orchestrator/baseline.py (compare_to_baseline), which is not "
                                "in this checkout")
        load_baseline_file(cfg.baseline)


def _call(report: dict, name: str, fn, *args) -> Any:
    try:
        return fn(*args)
    except Exception as exc:
        report.setdefault("hook_errors", {})[name] = f"{type(exc).__name__}: {exc}\n{traceback.format_exc()[-2000:]}"
        return None


def selection_infeasible(selection: Any) -> bool:
    return isinstance(selection, dict) and not selection.get("chosen")


def run_hooks(report: dict[str, Any], cfg, ui=None) -> int:
    code = EXIT_OK
    attribute = load_hook("attribution", "attribute")
    if attribute is not None:
        verdict = _call(report, "attribution", attribute, report, dict(cfg.matrix.bar))
        if verdict is not None:
            report["verdict"] = verdict
    select = load_hook("selection", "select_targets")
    if select is not None:
        selection = _call(report, "selection", select, report, dict(cfg.matrix.constraints))
        if selection is not None:
            report["selection"] = selection
            if selection_infeasible(selection):
                code = EXIT_INFEASIBLE
                if ui:
                    ui.warn("selection: no backend satisfies the constraints (exit code 3)")
    if cfg.baseline is not None:
        compare = load_hook("baseline", "compare_to_baseline")
        result = _call(report, "baseline", compare, report, load_baseline_file(cfg.baseline),
                       dict(cfg.matrix.tolerances))
        if result is None:
            code = code or EXIT_HOOK_ERROR
        else:
            report["baseline"] = {"file": str(cfg.baseline), **result} if isinstance(result, dict) else result
            if isinstance(result, dict) and result.get("regressions"):
                code = EXIT_REGRESSION
                if ui:
                    ui.warn(f"baseline {cfg.baseline}: regression detected (exit code 4)")
    return code


def write_all_reports(report: dict[str, Any], run_dir: Path, ui=None) -> None:
    """report.json and report.md first (a failing extra report never loses them), then report.html; the
    two first are rewritten when the HTML step failed, so its error is recorded. Used by ``compare`` and
    by ``select`` (a re-selection must not leave report.md/html showing the old choice)."""
    write_report(report, run_dir)
    write_extra_reports(report, run_dir, ui)
    if report.get("hook_errors", {}).get("report_html"):
        write_report(report, run_dir)


def write_extra_reports(report: dict[str, Any], run_dir: Path, ui=None) -> None:
    """report.html via ``orchestrator.report_html.write_html`` when that module is present."""
    try:
        write_html = load_hook("report_html", "write_html")
    except Exception as exc:  # a broken module (e.g. an import error) costs the HTML page, never the run
        report.setdefault("hook_errors", {})["report_html"] = (f"{type(exc).__name__}: {exc}\n"
                                                               f"{traceback.format_exc()[-2000:]}")
        write_html = None
    if write_html is not None:
        _call(report, "report_html", write_html, report, run_dir / "report.html")
    if ui and report.get("hook_errors"):
        for name, err in report["hook_errors"].items():
            ui.warn(f"{name} step failed: {err.splitlines()[0]}")
