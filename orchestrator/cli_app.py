"""Command-line interface (argparse). Imports nothing heavy until a command runs.

Exit codes: 0 success; 1 internal error (a bug: traceback printed); 2 bad input (the message says what
to do); 3 ``select``/``compare`` found no feasible target (``rescue``: no variant meets the bar); 4
``--baseline`` found a regression; 130 interrupted (finished results are kept; re-run the same command to
resume).
"""
from __future__ import annotations

import argparse
import contextlib
import shlex
import sys
from pathlib import Path
from typing import Any

EXIT_USAGE = 2
RUN_DIR_HELP = "a run directory written by compare (holds report.json)"


def _pos_int(name: str):
    def conv(text: str) -> int:
        try:
            return int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be an integer, got {text!r}") from None
    return conv


def _bar_assignment(text: str) -> tuple[str, Any]:
    """``KEY=VALUE`` with VALUE read as a TOML value (0.8, true); left a string if it is not one, so the
    bar's own check names the key and the type it wants."""
    import tomllib

    key, sep, value = text.partition("=")
    if not sep or not key.strip() or not value.strip():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE (e.g. min_int8_agreement=0.8), got {text!r}")
    try:
        parsed = tomllib.loads(f"v = {value.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        parsed = value.strip()
    return key.strip(), parsed


#: what ``compare`` and ``rescue`` share: the model, data, settings and where results go
RUN_ARGUMENTS = ("model", "src", "ref", "calibration_src", "calibration_ref", "matrix", "reference", "limit",
                 "num_beams", "batch_size", "max_source_length", "max_new_tokens", "strict_length", "skip_empty",
                 "source_prefix", "threads", "timeout", "build_jobs", "out", "cache_dir", "force", "quiet")


def _add_run_arguments(c: argparse.ArgumentParser, default_out: str) -> None:
    """The flags of :data:`RUN_ARGUMENTS`."""
    c.add_argument("--model", help="Hugging Face seq2seq checkpoint directory (default: embedded Marian en-de)")
    c.add_argument("--src", help="source sentences, one per line (.gz ok; default: Multi30k test_2016_flickr.en)")
    c.add_argument("--ref", help="reference translations, line-aligned with --src")
    c.add_argument("--calibration-src", help="calibration pool sources (default: Multi30k val.en)")
    c.add_argument("--calibration-ref", help="calibration pool targets (default: Multi30k val.de)")
    c.add_argument("--matrix", help="matrix TOML file (default: matrices/default.toml)")
    c.add_argument("--reference", help="reference backend for agreement metrics (default: torch-fp32)")
    c.add_argument("--limit", type=_pos_int("--limit"), help="use the first N sentences (0 = all)")
    c.add_argument("--num-beams", type=_pos_int("--num-beams"), help="beam size (1 = greedy; max 16)")
    c.add_argument("--batch-size", type=_pos_int("--batch-size"), help="sentences per batch")
    c.add_argument("--max-source-length", type=_pos_int("--max-source-length"),
                   help="static source length S in tokens; longer sources are truncated (counted)")
    c.add_argument("--max-new-tokens", type=_pos_int("--max-new-tokens"), help="max generated tokens T")
    c.add_argument("--strict-length", action="store_true", help="fail instead of truncating sources longer than S")
    c.add_argument("--skip-empty", action="store_true", help="drop empty line pairs instead of failing")
    c.add_argument("--source-prefix", help="task prefix prepended to every source (e.g. for T5)")
    c.add_argument("--threads", type=_pos_int("--threads"), help="threads per backend")
    c.add_argument("--timeout", type=float, help="seconds per backend process before it is killed")
    c.add_argument("--build-jobs", type=int, help="artifact builds run at once before the suites, each in its own "
                                                  "process (0 = auto: one per core, at most 4, one per 6 GB; 1 = "
                                                  "build each backend just before its suites)")
    c.add_argument("--out", help=f"run directory (default: {default_out}, reused on re-run)")
    c.add_argument("--cache-dir", help="artifact cache directory (default: runs/.artifacts, or OUT/artifacts)")
    c.add_argument("--force", action="store_true", help="recompute every result and rebuild every artifact")
    c.add_argument("--quiet", action="store_true", help="no progress bars")


def _add_bar_arguments(c: argparse.ArgumentParser, file_role: str) -> None:
    """``--bar FILE`` and ``--set KEY=VALUE``: the bar a command judges by
    (:func:`orchestrator.attribution.requested_bar`)."""
    c.add_argument("--bar", dest="bar_file",
                   help=f"TOML file with a [bar] table (any matrix) or top-level bar keys; {file_role}")
    c.add_argument("--set", dest="bar_set", action="append", type=_bar_assignment, metavar="KEY=VALUE",
                   help="one bar key over the bar, e.g. min_int8_agreement=0.8 or fail_source_blind=false "
                        "(repeatable)")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python cli.py",
        description="seqquant: can this encoder-decoder model ship as INT8, on which runtime, and if it breaks, "
                    "why? Runs the same suites on many runtime backends and writes report.json/report.md.",
        epilog="Exit codes: 0 ok, 1 internal error, 2 bad input, 3 nothing feasible, 4 baseline regression, "
               "130 interrupted (re-run to resume).")
    sub = p.add_subparsers(dest="cmd", metavar="COMMAND")
    c = sub.add_parser("compare", help="run backends x suites on a model and write a report",
                       description="Run every backend of the matrix on the model and data, each in its own "
                                   "process; results are stored as they finish and reused on re-run.")
    _add_run_arguments(c, "runs/<model>-<hash8>/")
    c.add_argument("--backends", help="comma-separated backend names (default: the matrix's; see list-backends)")
    c.add_argument("--suites", help="comma-separated suites (default: the matrix's)")
    c.add_argument("--baseline", help="baseline JSON to gate against (exit 4 on a regression)")
    c.add_argument("--dry-run", action="store_true",
                   help="validate everything and print what would run / be reused / be skipped; run nothing")
    lb = sub.add_parser("list-backends", help="registered backends, whether they are installed, and how to install")
    lb.add_argument("--json", action="store_true", help="machine-readable output")
    lb.add_argument("--matrix", help="also list the [variants] this matrix file defines")
    s = sub.add_parser("select", help="pick a deployable backend from an existing run under constraints")
    s.add_argument("run_dir", help=RUN_DIR_HELP)
    s.add_argument("--constraints", help="TOML file with constraints (default: the run's matrix [constraints])")
    j = sub.add_parser("judge", help="re-judge an existing run's verdicts against another [bar], without re-running",
                       description="Apply the verdict rules to a stored run again under another quality bar "
                                   "(e.g. the share of greedy outputs INT8 must keep: --set "
                                   "min_int8_agreement=0.8), re-select with the run's constraints, and rewrite "
                                   "report.json/md/html. Nothing is measured again.")
    j.add_argument("run_dir", help=RUN_DIR_HELP)
    _add_bar_arguments(j, "replaces the run's bar (default: the bar the run was judged by)")
    j.add_argument("--dry-run", action="store_true",
                   help="print the verdicts and selection under that bar and leave the run's reports as they are")
    r = sub.add_parser("rescue", help="find which parts of an INT8 backend must stay float to meet the [bar]",
                       description="Accuracy-driven selective-float search (as Intel Neural Compressor and AIMET "
                                   "fall back): measure the backend, then one variant per unit it can leave in "
                                   "float, then the best units added one at a time, until a variant meets the "
                                   "[bar]; then each graph's part of a unit in that set is dropped while the bar "
                                   "is still met. Every variant is built and run by the compare engine in one run "
                                   "directory; rescue.json records the search, rescue.toml the variant found. "
                                   "Exit 3 when no set of parts meets the bar.")
    _add_run_arguments(r, "runs/<model>-rescue-<backend>-<hash8>/")
    r.add_argument("--backend", default="tflite-int8",
                   help="the INT8 backend to rescue (default: tflite-int8; it must have a selective-float option)")
    r.add_argument("--parts", help="comma-separated units it may leave in float (default: every unit the backend "
                                   "offers; TFLite: the regions layer_norm, attention_softmax, self_attention, "
                                   "ffn, cross_attention, lm_head, each in every graph, or one graph's part of "
                                   "one, e.g. encoder.layer_norm, decoder.lm_head)")
    r.add_argument("--suites", help="comma-separated suites each variant runs (default: quality,source-sensitivity; "
                                    "add speed for latency and size)")
    _add_bar_arguments(r, "replaces the matrix's [bar]")
    sh = sub.add_parser("show", help="print the result table of an existing run")
    sh.add_argument("run_dir", help=RUN_DIR_HELP)
    ex = sub.add_parser("export", help="copy one backend's measured artifacts out of a run, ready to ship",
                        description="Copy the artifacts a run measured (checksums checked), the model's config and "
                                    "tokenizer files, and export.json (provenance, metrics, verdict) into a "
                                    "directory. TFLite exports also get reference_loop.py, the host loop as "
                                    "generation.json describes it (numpy + LiteRT only).")
    ex.add_argument("run_dir", help=RUN_DIR_HELP)
    ex.add_argument("--to", required=True, dest="dest", help="directory to create (must be new or empty)")
    ex.add_argument("--backend", help="backend to export (default: the run's selection)")
    ex.add_argument("--force", action="store_true", help="replace --to if it exists")
    b = sub.add_parser("baseline", help="regression baselines")
    b.set_defaults(baseline_help=b.print_help)
    bsub = b.add_subparsers(dest="baseline_cmd", metavar="ACTION")
    bs = bsub.add_parser("save", help="save a run's metrics as a baseline file",
                         description="Save a run's per-backend metrics, signatures, generated tokens, "
                                     "first-step logits and artifact sha256 as a baseline file; gate a later run "
                                     "against it with `compare --baseline FILE` (exit 4 on a regression beyond "
                                     "the matrix's [tolerances]).")
    bs.add_argument("run_dir", help=RUN_DIR_HELP)
    bs.add_argument("file", help="baseline JSON file to write")
    return p


def _read_report(run_dir: str) -> tuple[Path, dict[str, Any]]:
    from orchestrator.errors import RunDirError

    path = Path(run_dir) / "report.json"
    if not path.is_file():
        raise RunDirError(f"{run_dir} has no report.json; pass the directory a `compare` run wrote "
                          f"(e.g. runs/<model>-<hash>/)")
    from orchestrator.report import read_report_file

    return path, read_report_file(path)


@contextlib.contextmanager
def _terminate_as_interrupt():
    """While a command runs, SIGTERM (kill, CI cancellation) stops the running backend process and keeps
    results, like Ctrl-C; the previous handler is put back afterwards."""
    import signal

    def handler(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread (embedded use): leave the default
        previous = None
    try:
        yield
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def cmd_compare(args) -> int:
    from orchestrator.config import resolve_config
    from orchestrator.console import RichUI, print_report
    from orchestrator.engine import run_compare

    opts = {k: v for k, v in vars(args).items()}
    opts["command"] = "python cli.py " + shlex.join(args._argv)
    cfg = resolve_config(opts)
    ui = RichUI(quiet=args.quiet)
    with _terminate_as_interrupt():
        report, code, run_dir = run_compare(cfg, ui, dry_run=args.dry_run)
    if args.dry_run:
        from orchestrator.console import print_plan

        print_plan(report, ui.console)
        return code
    if report:
        print_report(report, ui.console, run_dir)
    return code


def cmd_list_backends(args) -> int:
    from backends import registry
    from backends._imports import install_hint

    if args.matrix:
        from orchestrator.matrix import load_matrix, register_variants

        register_variants(load_matrix(args.matrix))
    rows = []
    for name in registry.available_backends():
        e = registry.get_entry(name)
        missing = e.missing()
        rows.append({"name": name, "available": not missing, "description": e.description,
                     "install": " ; ".join(sorted({install_hint(m) for m in missing})) if missing else None})
    if args.json:
        import json

        print(json.dumps(rows, indent=1))
        return 0
    from rich.markup import escape
    from rich.table import Table

    from orchestrator.console import make_console

    t = Table(title="seqquant backends")
    t.add_column("backend", no_wrap=True)
    t.add_column("available", no_wrap=True)
    t.add_column("description / install")
    for r in rows:
        t.add_row(r["name"], "[green]yes[/]" if r["available"] else "[yellow]no[/]",
                  escape(r["description"] if r["available"] else f"{r['description']}\ninstall: {r['install']}"))
    make_console().print(t)
    return 0


def _rewrite_reports(report: dict[str, Any], path: Path, run_dir: str | None = None, write: bool = True) -> int:
    """After ``select``/``judge`` changed a stored report: rewrite report.json/md/html (all show the new
    verdicts and choice; not with ``write=False``), print it, exit 3 when nothing is feasible."""
    from orchestrator.console import print_report
    from orchestrator.hooks import selection_infeasible, write_all_reports

    if write:
        write_all_reports(report, path.parent)
        print_report(report, run_dir=run_dir)
    else:
        print_report(report)
        print(f"--dry-run: {path} and the run's other reports were not rewritten")
    return 3 if selection_infeasible(report["selection"]) else 0


def cmd_select(args) -> int:
    from orchestrator.errors import SettingsError
    from orchestrator.matrix import load_constraints
    from orchestrator.selection import select_targets as select

    path, report = _read_report(args.run_dir)  # checked before anything is written
    if args.constraints:
        constraints = load_constraints(args.constraints)
    else:
        constraints = ((report.get("settings") or {}).get("matrix") or {}).get("constraints") or {}
    from backends.errors import SeqquantError

    try:
        selection = select(report, constraints)
    except SeqquantError as exc:
        where = args.constraints or f"{args.run_dir}/report.json [constraints]"
        raise SettingsError(f"constraints from {where}: {exc}") from exc
    report["selection"] = selection
    return _rewrite_reports(report, path)


def cmd_judge(args) -> int:
    import time

    from orchestrator.attribution import attribute, requested_bar, run_bar
    from orchestrator.selection import run_constraints, select_targets

    path, report = _read_report(args.run_dir)  # checked before anything is written
    bar = requested_bar(run_bar(report), f"{args.run_dir}/report.json [bar]", args.bar_file, args.bar_set)
    verdict = attribute(report, bar)
    verdict["judged"] = {"command": "python cli.py " + shlex.join(args._argv),
                         "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    report["verdict"] = verdict
    # selection reads the verdicts (require_verdict_pass): re-select under the constraints it last used
    report["selection"] = select_targets(report, run_constraints(report))
    return _rewrite_reports(report, path, args.run_dir, write=not args.dry_run)


def cmd_rescue(args) -> int:
    from orchestrator.console import RichUI, print_rescue
    from orchestrator.rescue import plan_rescue, run_rescue

    opts = {k: getattr(args, k) for k in RUN_ARGUMENTS}
    opts["command"] = "python cli.py " + shlex.join(args._argv)
    split = (lambda text: [x.strip() for x in text.split(",") if x.strip()] if text else None)
    plan = plan_rescue(opts, args.backend, split(args.parts), args.bar_file, args.bar_set, split(args.suites))
    ui = RichUI(quiet=args.quiet)
    with _terminate_as_interrupt():
        result = run_rescue(plan, ui, force=args.force)
    print_rescue(result, ui.console, plan.out)
    return 0 if result["found"] else 3


def cmd_show(args) -> int:
    from orchestrator.console import print_report

    _, report = _read_report(args.run_dir)
    print_report(report, run_dir=args.run_dir)
    return 0


def cmd_export(args) -> int:
    from orchestrator.export import export_backend

    path, report = _read_report(args.run_dir)
    dest = Path(args.dest)
    info = export_backend(report, path.parent, dest, args.backend, force=args.force)
    files = info["files"]
    print(f"exported {info['backend']} ({info['precision']}, {info['runtime']}) to {dest}: {len(files)} files, "
          f"{sum(f['bytes'] for f in files.values()) / 1e6:.1f} MB; provenance and metrics in {dest / 'export.json'}")
    if "run" in info:
        print(f"reference loop: cd {dest} && {info['run']}")
    return 0


def cmd_baseline(args) -> int:
    if args.baseline_cmd != "save":
        args.baseline_help()
        return EXIT_USAGE
    from orchestrator.baseline import read_golden, save_baseline

    report_file, report = _read_report(args.run_dir)
    outputs, logits, steps, problems = read_golden(report, report_file.parent)
    for p in problems:
        print(f"warning: {p}; the baseline keeps its metrics but not those outputs", file=sys.stderr)
    save_baseline(report, Path(args.file), outputs, logits, steps)
    print(f"baseline saved to {args.file} (metrics of {len(report['backends'])} backends, outputs of {len(outputs)}, "
          f"first-step logits of {len(logits)}, teacher-forced logits of {len(steps)})")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    args._argv = argv
    if args.cmd is None:
        parser.print_help()
        return EXIT_USAGE
    from backends.errors import SeqquantError

    try:
        if args.cmd == "compare":
            return cmd_compare(args)
        if args.cmd == "list-backends":
            return cmd_list_backends(args)
        if args.cmd == "select":
            return cmd_select(args)
        if args.cmd == "judge":
            return cmd_judge(args)
        if args.cmd == "show":
            return cmd_show(args)
        if args.cmd == "rescue":
            return cmd_rescue(args)
        if args.cmd == "baseline":
            return cmd_baseline(args)
        if args.cmd == "export":
            return cmd_export(args)
    except SeqquantError as exc:
        from orchestrator.console import print_error

        print_error(str(exc))
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("interrupted; re-run the same command to resume", file=sys.stderr)
        return 130
    return EXIT_USAGE
