"""Console output: rich progress bars per backend during a run, result tables after it."""
from __future__ import annotations

import sys
from typing import Any

from orchestrator.engine import NullUI


def _esc(text: str) -> str:
    from rich.markup import escape

    return escape(str(text))


def make_console(stderr: bool = False):
    from rich.console import Console

    console = Console(stderr=stderr, highlight=False, soft_wrap=False)
    if not console.is_terminal:  # logs / CI: do not squeeze tables into 80 columns
        console = Console(stderr=stderr, highlight=False, soft_wrap=False, width=160)
    return console


class RichUI(NullUI):
    def __init__(self, console=None, quiet: bool = False):
        self.console = console or make_console()
        self.quiet = quiet
        self._progress = None
        self._tasks: dict[str, Any] = {}

    def _ensure(self):
        if self._progress is None and not self.quiet:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self._progress = Progress(TextColumn("[bold]{task.fields[backend]:<20}"), TextColumn("{task.description:<28}"),
                                      BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                                      console=self.console, transient=False)
            self._progress.start()
        return self._progress

    def info(self, msg: str) -> None:
        if not self.quiet:
            self.console.print(f"[dim]{_esc(msg)}[/dim]")

    def warn(self, msg: str) -> None:
        make_console(stderr=True).print(f"[yellow]warning:[/yellow] {_esc(msg)}")

    def backend_started(self, name: str, n_suites: int) -> None:
        prog = self._ensure()
        if prog is not None and name in self._tasks:  # built in the build phase: its row goes on
            prog.update(self._tasks[name], description="starting", completed=0, total=None)
        elif prog is not None:
            self._tasks[name] = prog.add_task("starting", total=None, backend=name)

    def backend_progress(self, name: str, stage: str, done: int, total: int, label: str) -> None:
        prog = self._progress
        if prog is not None and name in self._tasks:
            prog.update(self._tasks[name], description=label[:28], completed=done, total=max(total, 1))

    def backend_finished(self, name: str, status: str, reason: str | None, reused: bool) -> None:
        color = {"ok": "green", "failed": "red", "skipped": "yellow"}.get(status, "white")
        text = f"{status}{' (reused)' if reused else ''}"
        prog = self._progress
        if prog is not None and name in self._tasks:
            prog.update(self._tasks[name], description=f"[{color}]{text}[/{color}]")
            prog.stop_task(self._tasks[name])
        elif not self.quiet:
            why = f": {_esc(reason.splitlines()[0][:160])}" if reason and status != "ok" else ""
            self.console.print(f"[bold]{name:<20}[/bold] [{color}]{text}[/{color}]{why}", markup=True)

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
            self._tasks.clear()


def print_report(report: dict[str, Any], console=None, run_dir=None) -> None:
    from rich.table import Table

    from orchestrator.report import SUMMARY_HEADER, summary_rows

    console = console or make_console()
    d = report["data"]
    title = (f"{report['model']['family']} {report['model']['path']} | {d['n_sentences']} sentences | "
             f"beams {report['settings']['num_beams']} | reference {report['reference_backend']}")
    table = Table(title=_esc(title), title_justify="left")
    rows = summary_rows(report)
    reasons = [(r[0], r[1], r[-1]) for r in rows if r[-1]]
    header = list(SUMMARY_HEADER)[:-1]  # reasons are listed under the table (they are long)
    rows = [r[:-1] for r in rows]
    for h in header:
        table.add_column(h, overflow="fold", no_wrap=h != "reason", justify="right" if h in
                         ("BLEU", "chrF", "match vs ref", "size MB", "p90 ms") else "left")
    colors = {"ok": "green", "failed": "red", "skipped": "yellow"}
    for row in rows:
        row = [_esc(c) for c in row]
        row[1] = f"[{colors.get(row[1], 'white')}]{row[1]}[/]"
        table.add_row(*row)
    console.print(table)
    for name, status, reason in reasons:
        console.print(f"  [{colors.get(status, 'white')}]{_esc(name)} {status}[/]: {_esc(reason)}")
    from orchestrator.report_tables import sensitivity_table, speed_table, verdict_table

    # quality is the summary table above; the boundary matrix is in report.md; selection and
    # baseline are one-liners below
    for section in (sensitivity_table, speed_table, verdict_table):
        made = section(report)
        if made is None:
            continue
        title, header, trows = made
        t = Table(title=_esc(title), title_justify="left")
        for h in header:
            t.add_column(_esc(h), overflow="fold")
        for r in trows:
            t.add_row(*[_esc(c) for c in r])
        console.print(t)
    sel = report.get("selection")
    if isinstance(sel, dict):
        chain = sel.get("fallback_chain") or []
        console.print(f"[bold]selection:[/bold] {_esc(sel.get('chosen') or 'nothing feasible')}"
                      + (f"  (fallback: {_esc(' -> '.join(map(str, chain)))})" if chain else ""))
    base = report.get("baseline")
    if isinstance(base, dict):
        changed = {n: o for n, o in (base.get("outputs") or {}).items() if isinstance(o, dict) and o.get("changed")}
        other = {n: a.get("kind") for n, a in (base.get("artifacts") or {}).items()
                 if isinstance(a, dict) and a.get("kind") != "same"}
        moved = {label: {n: r["max_abs_diff"] for n, r in (base.get(key) or {}).items()
                         if isinstance(r, dict) and r.get("exact") is False}
                 for key, label in (("first_step", "first-step"), ("teacher_forced", "teacher-forced"))}
        console.print(f"[bold]baseline:[/bold] {'REGRESSION' if base.get('regressions') else 'no regression'}"
                      f" vs {_esc(base.get('file', ''))}"
                      + ("; outputs changed: " + ", ".join(f"{_esc(n)} {o['changed']}/{o.get('n')}"
                                                           for n, o in changed.items()) if changed else "")
                      + "".join(f"; {label} logits moved: "
                                + ", ".join(f"{_esc(n)} (max {d:.3g})" for n, d in m.items())
                                for label, m in moved.items() if m)
                      + ("; artifacts not the baseline's bytes: " + ", ".join(f"{_esc(n)} ({k})"
                                                                            for n, k in other.items()) if other else ""))
    print_step_errors(report, console)
    if run_dir is not None:
        from pathlib import Path

        files = ["report.json", "report.md"] + (["report.html"] if (Path(run_dir) / "report.html").is_file() else [])
        wall = (report.get("run") or {}).get("wall_seconds")
        console.print("report: " + ", ".join(_esc(f"{run_dir}/{f}") for f in files)
                      + (f"  ({wall:.1f} s)" if isinstance(wall, (int, float)) else ""))


def print_rescue(result: dict[str, Any], console=None, run_dir=None) -> None:
    """The ``rescue`` search: every variant measured, and what it found."""
    from rich.table import Table

    from orchestrator.rescue import RESCUE_JSON, RESCUE_MD, TABLE_HEADER, summary_line, trial_rows

    console = console or make_console()
    bar = ", ".join(f"{k}={v}" for k, v in sorted(result["bar"].items())) or "default bar"
    t = Table(title=_esc(f"rescue of {result['base']} ({bar})"), title_justify="left")
    for h in TABLE_HEADER:
        t.add_column(h, overflow="fold",
                     justify="right" if h in ("identical", "vs base", "BLEU", "size MB", "p50 ms") else "left")
    verdict = TABLE_HEADER.index("bar")
    for row in trial_rows(result):
        row = [_esc(c) for c in row]
        row[verdict] = f"[{'green' if row[verdict] == 'meets' else 'red'}]{row[verdict]}[/]"
        t.add_row(*row)
    console.print(t)
    console.print(f"[bold]{_esc(summary_line(result))}[/bold]")
    if run_dir is not None:
        files = [RESCUE_JSON, RESCUE_MD, *filter(None, [result["matrix_table"]]), "report.md"]
        console.print("files: " + ", ".join(_esc(f"{run_dir}/{f}") for f in files)
                      + f"  ({result['wall_seconds']:.1f} s)")


def print_step_errors(report: dict[str, Any], console) -> None:
    """Steps that raised after the backends ran: a suite's compare step (``compare_errors``: the
    cross-backend numbers it computes, e.g. agreement with the reference, are missing) and the post-compare
    steps (``hook_errors``). Printed as errors, first line each; the tracebacks are in report.json."""
    compare_errors, hook_errors = (e if isinstance(e := report.get(k), dict) else {}
                                   for k in ("compare_errors", "hook_errors"))
    for suite, err in compare_errors.items():
        console.print(f"[bold red]error:[/] suite {_esc(suite)}: its compare step failed, so its cross-backend "
                      f"metrics are missing: {_esc(_first_line(err))}")
    for step, err in hook_errors.items():
        console.print(f"[bold red]error:[/] the {_esc(step)} step failed: {_esc(_first_line(err))}")
    keys = [k for k, errors in (("compare_errors", compare_errors), ("hook_errors", hook_errors)) if errors]
    if keys:
        console.print(f"[red]  (tracebacks: {' and '.join(keys)} in report.json)[/]")


def _first_line(err: Any) -> str:
    lines = str(err).strip().splitlines()
    return lines[0][:300] if lines else "(no message)"


def print_error(msg: str) -> None:
    try:
        make_console(stderr=True).print(f"[red]error:[/red] {_esc(msg)}", markup=True, highlight=False)
    except Exception:  # rich missing or broken: plain text
        print(f"error: {msg}", file=sys.stderr)


def print_plan(plan: dict[str, Any], console=None) -> None:
    """The ``compare --dry-run`` table: backend -> run / reuse / skip, per suite."""
    from rich.table import Table

    console = console or make_console()
    t = Table(title=_esc(f"dry run: {plan['n_sentences']} sentences -> {plan['run_dir']}"), title_justify="left")
    for h in ("backend", "action", "suites / reason"):
        t.add_column(h)
    colors = {"run": "cyan", "reuse": "green", "skip": "yellow"}
    for name, b in plan["backends"].items():
        detail = b.get("reason") or ", ".join(f"{s}: {a}" for s, a in b.get("suites", {}).items())
        t.add_row(_esc(name), f"[{colors[b['action']]}]{b['action']}[/]", _esc(detail))
    console.print(t)
    for s, status in plan["suites"].items():
        if status != "ok":
            console.print(f"  [yellow]suite {_esc(s)} skipped[/]: {_esc(status)}")
