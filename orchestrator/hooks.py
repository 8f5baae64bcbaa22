"""Post-compare steps, each in its own module.

* ``orchestrator.attribution.attribute(report, bar) -> dict``  (sets ``backends.<name>.verdict``);
  its return value is stored as ``report["verdict"]``.
* ``orchestrator.selection.select_targets(report, constraints) -> dict`` -> ``report["selection"]``;
  exit code 3 when nothing is feasible (``chosen`` empty).
* ``orchestrator.baseline.compare_to_baseline(report, baseline, tolerances) -> dict`` (with a boolean
  ``regressions``) -> ``report["baseline"]``; exit code 4 on a regression.
* ``orchestrator.report_html.write_html(report, path)`` -> report.html, imported only when it is written.

Their matrix tables and the baseline file are checked before anything runs (:func:`check_requested`). A
step that raises is recorded in ``report["hook_errors"]`` (and, for the baseline gate, fails the run with
exit code 1) instead of losing the report.
"""
from __future__ import annotations

import importlib
import importlib.util
import traceback
from pathlib import Path
from typing import Any

from backends.errors import SeqquantError
from orchestrator.errors import SettingsError
from orchestrator.report import write_report

EXIT_OK, EXIT_HOOK_ERROR, EXIT_INFEASIBLE, EXIT_REGRESSION = 0, 1, 3, 4


def load_hook(module: str, func: str):
    """``orchestrator.<module>.<func>`` imported now (None when there is no such module): the HTML page is
    imported at the end of a run, so an import error there costs the page, never the report."""
    full = f"orchestrator.{module}"
    try:
        if importlib.util.find_spec(full) is None:
            return None
    except (ImportError, ValueError):
        return None
    return getattr(importlib.import_module(full), func, None)


def load_baseline_for(cfg) -> dict[str, Any]:
    """The ``--baseline`` file of the run, read and checked (:func:`orchestrator.baseline.load_baseline`)."""
    from orchestrator.baseline import load_baseline

    return load_baseline(cfg.baseline, where=f"--baseline {cfg.baseline}")


def check_requested(cfg) -> None:
    """Fail before running anything if a step's matrix table or the baseline file is invalid."""
    from orchestrator.attribution import effective_bar
    from orchestrator.baseline import OUTPUTS_METRIC, parse_tolerance
    from orchestrator.baseline_logits import LOGITS_METRIC, STEP_LOGITS_METRIC
    from orchestrator.selection import effective_constraints
    from orchestrator.suites.base import known_metrics

    where = f"matrix {cfg.matrix.path}" if cfg.matrix.path else "matrix"
    for fn, table, name in ((effective_bar, cfg.matrix.bar, "[bar]"),
                            (effective_constraints, cfg.matrix.constraints, "[constraints]")):
        try:
            fn(dict(table))
        except SettingsError:
            raise
        except SeqquantError as exc:
            raise SettingsError(f"{where} {name}: {exc}") from exc
    # the baseline's own: outputs that changed since it was saved, how far its first-step and teacher-forced
    # logits moved
    metrics = known_metrics() | {OUTPUTS_METRIC, LOGITS_METRIC, STEP_LOGITS_METRIC}
    for metric, spec in cfg.matrix.tolerances.items():
        if metric not in metrics:
            raise SettingsError(f"{where}: [tolerances] {metric}: not a metric any suite reports; metrics: "
                                f"{', '.join(sorted(metrics))}")
        try:
            parse_tolerance(metric, spec)
        except SeqquantError as exc:
            raise SettingsError(f"{where}: {exc}") from exc
    if cfg.baseline is not None:
        load_baseline_for(cfg)


def _call(report: dict, name: str, fn, *args) -> Any:
    try:
        return fn(*args)
    except Exception as exc:
        report.setdefault("hook_errors", {})[name] = f"{type(exc).__name__}: {exc}\n{traceback.format_exc()[-2000:]}"
        return None


def selection_infeasible(selection: Any) -> bool:
    return isinstance(selection, dict) and not selection.get("chosen")


def run_hooks(report: dict[str, Any], cfg, ui=None) -> int:
    from orchestrator.attribution import attribute
    from orchestrator.baseline import compare_to_baseline, read_golden
    from orchestrator.selection import select_targets

    code = EXIT_OK
    verdict = _call(report, "attribution", attribute, report, dict(cfg.matrix.bar))
    if verdict is not None:
        report["verdict"] = verdict
    selection = _call(report, "selection", select_targets, report, dict(cfg.matrix.constraints))
    if selection is not None:
        report["selection"] = selection
        if selection_infeasible(selection):
            code = EXIT_INFEASIBLE
            if ui:
                ui.warn("selection: no backend satisfies the constraints (exit code 3)")
    if cfg.baseline is not None:
        # the file is read again here (it was checked before the run): a file gone or broken since is a
        # recorded baseline error (exit code 1), not a lost report
        def gate():
            run_dir = (report.get("run") or {}).get("dir") or "."
            outputs, logits, steps, problems = read_golden(report, run_dir)
            result = compare_to_baseline(report, load_baseline_for(cfg), dict(cfg.matrix.tolerances), outputs,
                                         logits, steps)
            if problems:
                result["output_problems"] = problems
            return result

        result = _call(report, "baseline", gate)
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
