"""The run engine: validate inputs, run every backend in its own process, compare, report.

``run_compare(cfg, ui)`` is the whole ``compare`` command minus argument parsing:

1. validate the model (``ModelBundle.load``), the data and the calibration pool, source lengths;
2. resolve backends (unknown -> error listing the available ones; extra missing -> ``skipped`` with the
   pip command) and suites (module missing -> ``skipped``);
3. for each backend, reuse stored suite results whose fingerprint matches, and run the rest in a spawned
   process (:mod:`orchestrator.worker`) with the backend's timeout; crashes become ``failed``. When that
   process builds the artifacts and a memory-measuring suite is pending, it stops after the build and a
   second process runs the suites on the cached artifacts;
4. the compare phase in this process (``Suite.compare`` over the backends whose suite succeeded);
5. hooks (verdicts, selection, baseline) and report.json / report.md.
"""
from __future__ import annotations

import dataclasses
import os
import sys
import time
from pathlib import Path
from typing import Any

from orchestrator.config import RunConfig
from orchestrator.errors import SettingsError
from orchestrator.matrix import RUN_ONLY_SETTINGS, register_variants
from orchestrator.plan import BackendPlan, SuitePlan, backend_fingerprint, suite_available, suite_code
from orchestrator.run_store import RunLock, RunStore, atomic_write_json, digest

EXIT_OK, EXIT_INTERNAL, EXIT_USAGE, EXIT_INFEASIBLE, EXIT_REGRESSION, EXIT_INTERRUPTED = 0, 1, 2, 3, 4, 130


class NullUI:
    """What the engine tells the user; :class:`orchestrator.console.RichUI` renders it."""

    def info(self, msg: str) -> None: ...
    def warn(self, msg: str) -> None: ...
    def backend_started(self, name: str, n_suites: int) -> None: ...
    def backend_progress(self, name: str, stage: str, done: int, total: int, label: str) -> None: ...
    def backend_finished(self, name: str, status: str, reason: str | None, reused: bool) -> None: ...
    def close(self) -> None: ...


class Validated:
    """Everything checked before any backend runs."""

    def __init__(self, cfg: RunConfig):
        from backends.model import ModelBundle
        from orchestrator.data import load_calibration, load_parallel

        s = cfg.settings
        self.cfg = cfg
        self.model = ModelBundle.load(cfg.model_path, source_prefix=s.get("source_prefix"))
        self.data = load_parallel(cfg.src, cfg.ref, limit=s["limit"] or None, skip_empty=cfg.skip_empty)
        self.calibration, self.cal_data = load_calibration(cfg.cal_src, cfg.cal_ref, cfg.cal_size)
        self.truncated = 0
        self.truncated_by: dict[str, int] = {}
        self.longest = 0

    def check_lengths(self, cache: Path | None, limits: dict[str, int] | None = None) -> None:
        """Count sources longer than S (or fail with --strict-length). ``limits``: backend -> its static
        source length, when a backend's options set one other than the run's. The tokenizer (and the torch
        import transformers drags in) is only loaded when ``cache`` does not already hold the answer;
        ``cache`` None (a dry run): nothing is written."""
        from backends.errors import InputTooLongError
        from orchestrator.run_store import read_json

        s = self.cfg.settings
        limit = int(s["max_source_length"])
        key = digest({"model": self.model.content_hash, "data": self.data.fingerprint,
                      "prefix": self.model.conventions.source_prefix})
        stored = read_json(cache) if cache is not None else None
        if isinstance(stored, dict) and stored.get("key") == key:
            lengths = stored["lengths"]
        else:
            texts = [self.model.conventions.source_prefix + t for t in self.data.sources]
            lengths = [len(x) for x in self.model.tokenizer(texts, add_special_tokens=True, verbose=False)["input_ids"]]
            if cache is not None:
                atomic_write_json(cache, {"key": key, "lengths": lengths})
        self.longest = max(lengths) if lengths else 0
        # "" = the run's S; then each backend whose own S differs
        limits = {"": limit, **{b: S for b, S in (limits or {}).items() if S != limit}}
        over = {b: [i for i, n in enumerate(lengths) if n > S] for b, S in limits.items()}
        self.truncated = len(over[""])
        self.truncated_by = {b: len(rows) for b, rows in over.items() if b}
        problems = [f"{len(rows)} source(s) exceed the static source length{f' of {b}' if b else ''} {limits[b]} "
                    f"tokens (first: line {self.data.line_numbers[rows[0]]} of {self.data.src_path}, "
                    f"{lengths[rows[0]]} tokens)" for b, rows in over.items() if rows]
        if problems and s["strict_length"]:
            raise InputTooLongError("; ".join(problems) + ". Raise --max-source-length (or the backend's "
                                    "max_source_length option) or drop --strict-length to truncate them with "
                                    "a counted warning.")


def _resolve_backends(cfg: RunConfig, warnings: list[str]) -> list[BackendPlan]:
    from backends import registry
    from backends._imports import install_hint
    from backends.errors import UnknownBackendError

    register_variants(cfg.matrix)
    names = cfg.backends if cfg.backends is not None else registry.available_backends()
    plans = []
    for name in names:
        try:
            entry = registry.get_entry(name)
        except UnknownBackendError as exc:
            if cfg.backends_from_cli or cfg.matrix.missing_backends == "error":
                where = "--backends" if cfg.backends_from_cli else f"matrix {cfg.matrix.path}"
                raise type(exc)(f"{exc} (from {where})") from exc
            plans.append(BackendPlan(name, skip_reason=f"backend '{name}' is not registered in this checkout"))
            continue
        missing = entry.missing()
        if missing:
            hints = " ; ".join(sorted({install_hint(m) for m in missing}))
            reason = f"needs {', '.join(missing)} (not installed). Install with: {hints}"
            plans.append(BackendPlan(name, entry=entry, skip_reason=reason))
            if cfg.backends_from_cli:
                warnings.append(f"{name}: {reason}")
            continue
        plans.append(BackendPlan(name, entry=entry))
    if not plans:
        raise SettingsError("no backends to run: the matrix lists none and none were given with --backends")
    return plans


def check_inputs(cfg: RunConfig, v: Validated, plans: list[BackendPlan], suites: dict[str, str | None]) -> None:
    """Everything a backend process would otherwise find too late, checked here and reported at once:
    the reference's name, ``[overrides]`` naming no backend, every suite option table, every backend's
    options (the backend is built here, no runtime import), and static lengths beyond the model's
    position table. (The [bar], [constraints] and [tolerances] tables: :func:`hooks.check_requested`.)"""
    from backends import registry
    from backends.errors import SeqquantError
    from orchestrator.suites.base import SUITES, get_suite

    problems: list[str] = []
    registered = set(registry.available_backends())
    if cfg.reference not in registered:
        problems.append(f"reference backend '{cfg.reference}' is not a registered backend (--reference / "
                        f"[run] reference; see `python cli.py list-backends`)")
    if cfg.matrix.missing_backends == "error":
        for name in sorted(set(cfg.overrides) - registered):
            problems.append(f'[overrides."{name}"]: no backend of that name is registered (see `python cli.py '
                            f'list-backends`, or a [variants] table)')
    tables = [(f"[suites.{s}]", s, t) for s, t in cfg.matrix.suite_options.items()]
    tables += [(f'[overrides."{b}".suites.{s}]', s, t) for b, o in cfg.overrides.items()
               for s, t in o.get("suites", {}).items()]
    for where, s, table in tables:
        if s not in SUITES:
            problems.append(f"{where}: no suite '{s}'; suites: {', '.join(sorted(SUITES))}")
        elif suites.get(s, "") is None:  # in this run and implemented: its options must be valid
            try:
                get_suite(s).options(table, where)
            except SeqquantError as exc:
                problems.append(str(exc))
    norm = v.model.normalized
    for p in plans:
        if p.skip_reason:
            continue
        options = cfg.backend_options(p.name)
        try:
            registry.get_backend(p.name, **options)
        except SeqquantError as exc:
            problems.append(f"{p.name}: {exc}")
        if norm.positions == "relative":
            continue  # relative position bias: no position table to run past
        for key, n, what in (("max_source_length", options["max_source_length"], "source"),
                             ("max_new_tokens", options["max_new_tokens"], "target")):
            if isinstance(n, int) and n > norm.max_positions:
                problems.append(f"{p.name}: {key} = {n} exceeds the model's {norm.max_positions} {what} "
                                f"positions (max_position_embeddings); lower it")
    problems = list(dict.fromkeys(problems))
    if len(problems) == 1:
        raise SettingsError(f"cannot run: {problems[0]}")
    if problems:
        raise SettingsError("cannot run, for these reasons:\n" + "\n".join(f"  - {x}" for x in problems))


def _resolve_suites(cfg: RunConfig) -> dict[str, str | None]:
    from orchestrator.suites.base import SUITES

    unknown = [s for s in cfg.suites if s not in SUITES]
    if unknown:
        raise SettingsError(f"unknown suite(s) {unknown}; available suites: {', '.join(sorted(SUITES))}")
    return {s: suite_available(s) for s in cfg.suites}


def default_run_dir(cfg: RunConfig, v: Validated) -> Path:
    """``runs/<model>-<hash8>`` for the default matrix; another matrix gets its own directory,
    ``runs/<model>-<matrix stem>-<hash8>``, so its report does not replace the default run's (the
    artifact cache, ``runs/.artifacts``, stays shared)."""
    from orchestrator.matrix import DEFAULT_MATRIX

    key = {"model": v.model.content_hash, "data": v.data.fingerprint, "cal": v.calibration.fingerprint(),
           "settings": {k: val for k, val in cfg.settings.items() if k not in ("threads", *RUN_ONLY_SETTINGS)}}
    name = cfg.model_path.resolve().name
    matrix = cfg.matrix.path
    if matrix is not None and matrix.resolve() != DEFAULT_MATRIX.resolve():
        key["matrix"] = str(matrix.resolve())
        name += f"-{matrix.stem}"
    return Path("runs") / f"{name}-{digest(key, 8)}"


def _plan_suites(cfg: RunConfig, v: Validated, plans: list[BackendPlan], suites: dict[str, str | None],
                 store: RunStore, dry_run: bool = False) -> None:
    from orchestrator.suites.base import get_suite

    base = {"model": v.model.content_hash, "data": v.data.fingerprint, "calibration": v.calibration.fingerprint(),
            "source_prefix": v.model.conventions.source_prefix}
    codes = {s: suite_code(s) for s, skip in suites.items() if skip is None}
    roles = {s: get_suite(s).reference_role for s in codes}
    for p in plans:
        if p.skip_reason:
            continue
        p.settings = cfg.backend_settings(p.name)
        p.options = cfg.backend_options(p.name)
        p.fingerprint = backend_fingerprint(p.name, p.entry, base, p.options, p.settings)
        if cfg.forces(p.name) and not dry_run:
            store.clear_backend(p.name)
        for s, skip in suites.items():
            if skip is not None:
                continue
            opts = cfg.suite_options(p.name, s)
            key = {"backend": p.fingerprint, "suite": s, "options": opts, "code": codes[s]}
            if roles[s] and p.name == cfg.reference:
                key["role"] = "reference"
            fp = digest(key)
            p.suites.append(SuitePlan(s, fp, opts, None if cfg.forces(p.name) else store.read_suite(p.name, s, fp)))


def _job(cfg: RunConfig, v: Validated, p: BackendPlan, store: RunStore, artifact_dir: Path) -> dict[str, Any]:
    limit = int(p.settings.get("limit") or 0)
    n = len(v.data.sources) if not limit else min(limit, len(v.data.sources))
    e = p.entry
    return {"backend": p.name, "options": p.options, "model_path": str(Path(v.model.path).resolve()),
            "source_prefix": cfg.settings.get("source_prefix"),
            "sources": v.data.sources[:n], "references": v.data.references[:n],
            "calibration": {"sources": v.calibration.sources, "targets": v.calibration.targets,
                            "name": v.calibration.name},
            "suites": [{"name": s.name, "fingerprint": s.fingerprint, "options": s.options} for s in p.pending],
            "settings": {**p.settings, "n_sentences": n}, "reference": cfg.reference, "run_dir": str(store.run_dir),
            "artifact_dir": str(artifact_dir), "force_artifacts": cfg.forces(p.name), "log_path": str(store.log_path(p.name)),
            "sys_path": list(sys.path),
            "registry_entry": {"name": e.name, "target": e.target, "requires": list(e.requires),
                               "options": dict(e.options), "description": e.description}}


class _Messages:
    """Collects what a backend process reports (signature, artifacts, timings, skip/failure) into
    ``rec`` and relays progress to the UI; one per process run."""

    def __init__(self, name: str, rec: dict[str, Any], ui: NullUI):
        self.name, self.rec, self.ui = name, rec, ui
        self.stage, self.child_status, self.child_reason, self.restart = "start", None, None, False

    def __call__(self, msg) -> None:
        kind = msg[0]
        if kind == "progress":
            _, stage, done, total, label = msg
            self.stage = stage
            self.ui.backend_progress(self.name, stage, done, total, label)
        elif kind == "backend":
            info = msg[1]
            for k in ("signature", "artifacts"):
                if k in info:
                    self.rec[k] = info[k]
            self.rec["timings"].update(info.get("timings", {}))
            if info.get("status") in ("skipped", "failed"):
                self.child_status, self.child_reason = info["status"], info.get("reason")
                if info.get("traceback"):
                    self.rec["traceback"] = info["traceback"][-4000:]
        elif kind == "suite":
            self.ui.backend_progress(self.name, msg[1], 1, 1, f"{msg[1]}: {msg[2]}")
        elif kind == "restart":
            self.restart = True

    def finish(self, outcome, timeout: float, store: RunStore, timeout_source: str | None = None) -> None:
        """Status, reason and exit of the process into ``rec``; ``timeout_source`` names the setting the
        timeout came from."""
        rec = self.rec
        rec["exit"] = {"exitcode": outcome.exitcode, "signal": outcome.signal, "timed_out": outcome.timed_out}
        if self.child_status:
            rec["status"], rec["reason"] = self.child_status, self.child_reason
            rec["process"] = "ok" if outcome.ok else "died"
        elif not outcome.ok:
            where = "" if self.stage == "start" else f" during '{self.stage}'"
            rec["status"], rec["reason"], rec["process"] = "failed", outcome.describe(timeout, timeout_source) + where, "died"
        else:
            rec["status"], rec["reason"], rec["process"] = "ok", None, "ok"
        if rec["status"] == "failed" and "log_tail" not in rec:
            rec["log_tail"] = store.log_tail(self.name)


def build_jobs(setting: int) -> int:
    """How many artifact builds run at once: ``setting``, or for 0 (auto) one per core, at most 4 and
    one per 6 GB of memory (a TFLite INT8 conversion with its calibration peaks at ~4 GB)."""
    if setting > 0:
        return setting
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    try:
        mem_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (AttributeError, ValueError, OSError):  # no sysconf (Windows): assume enough for two
        mem_gb = 12.0
    return max(1, min(cores, 4, int(mem_gb // 6)))


def _needs_build(cfg: RunConfig, v: Validated, p: BackendPlan, artifact_dir: Path) -> bool:
    """Whether the backend's worker would build artifacts (asked in this process: no runtime import)."""
    if cfg.forces(p.name):
        return True
    from backends import registry

    try:
        backend = registry.get_backend(p.name, **p.options)
        # no checksums here: the worker verifies them before it loads anything (and rebuilds on a mismatch)
        return backend.find_artifacts(v.model, artifact_dir, v.calibration, verify=False) is None
    except Exception:  # noqa: BLE001 - the worker reports whatever is wrong with this backend
        return True


def _build_phase(cfg: RunConfig, v: Validated, plans: list[BackendPlan], store: RunStore, artifact_dir: Path,
                 ui: NullUI) -> tuple[dict[str, dict[str, Any]], int]:
    """Build the artifacts of every backend that needs them, ``build_jobs`` at a time, each in its own
    process; the suites then run one backend at a time (timings are never measured next to a build).
    Returns (name -> the build's record: timings, artifacts, and status/reason when it failed; how many
    builds ran at once, 1 when there was no build phase)."""
    import concurrent.futures as cf
    import threading

    from orchestrator.isolation import run_isolated
    from orchestrator.worker import backend_worker

    jobs = build_jobs(int(cfg.settings.get("build_jobs") or 0))
    todo = [p for p in plans if not p.skip_reason and p.pending and _needs_build(cfg, v, p, artifact_dir)]
    if jobs < 2 or len(todo) < 2:
        return {}, 1
    ui.info(f"building the artifacts of {len(todo)} backends, {min(jobs, len(todo))} at a time")
    stop = threading.Event()
    for p in todo:  # progress rows in the main thread; the build threads only update them
        ui.backend_started(p.name, len(p.pending))

    def build(p: BackendPlan) -> dict[str, Any]:
        rec: dict[str, Any] = {"timings": {}}
        msgs = _Messages(p.name, rec, ui)
        timeout = float(p.settings["timeout"])
        outcome = run_isolated(backend_worker, {**_job(cfg, v, p, store, artifact_dir), "build_only": True},
                               timeout, msgs, stop=stop)
        msgs.finish(outcome, timeout, store, cfg.setting_source(p.name, "timeout"))
        rec["timings"]["build_wall_seconds"] = round(outcome.seconds, 3)
        rec["timings"]["build_prepare_seconds"] = rec["timings"].pop("prepare_seconds", None)
        return rec

    pool = cf.ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="seqquant-build")
    futures = {pool.submit(build, p): p.name for p in todo}
    built: dict[str, dict[str, Any]] = {}
    try:
        for fut in cf.as_completed(futures):
            built[futures[fut]] = fut.result()
    except BaseException:  # Ctrl-C: stop the builds now, start no other
        stop.set()
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown(wait=True)
    return built, min(jobs, len(todo))


def _run_backend(cfg: RunConfig, v: Validated, p: BackendPlan, store: RunStore, artifact_dir: Path,
                 ui: NullUI, built: dict[str, Any] | None = None) -> dict[str, Any]:
    """Run (or reuse) one backend; return its backend record (also written to backend.json).
    ``built``: its record from the build phase, when its artifacts were built there."""
    from orchestrator.isolation import run_isolated
    from orchestrator.worker import backend_worker

    prev = store.read_backend(p.name) or {}
    if not p.pending and prev.get("fingerprint") == p.fingerprint and prev.get("process") == "ok":
        ui.backend_finished(p.name, prev.get("status", "ok"), prev.get("reason"), reused=True)
        return {**prev, "reused": True}
    rec: dict[str, Any] = {"fingerprint": p.fingerprint, "signature": prev.get("signature"),
                           "artifacts": prev.get("artifacts"), "timings": {}, "reused": False}
    if built is not None and built.get("status") != "ok":  # the build failed or was skipped: no second try
        rec.update({k: val for k, val in built.items() if k != "timings"})
        rec["timings"].update(built["timings"], wall_seconds=built["timings"]["build_wall_seconds"])
        store.write_backend(p.name, rec)
        ui.backend_finished(p.name, rec["status"], rec["reason"], reused=False)
        return rec
    msgs = _Messages(p.name, rec, ui)
    ui.backend_started(p.name, len(p.pending))
    timeout = float(p.settings["timeout"])
    job = _job(cfg, v, p, store, artifact_dir)
    if built is not None:
        rec["artifacts"] = built.get("artifacts", rec["artifacts"])
        job["force_artifacts"] = False  # built (and forced, with --force) by the build phase
    outcome = run_isolated(backend_worker, {**job, "fresh_process_after_build": True}, timeout, msgs)
    if msgs.restart and outcome.ok and not msgs.child_status:
        # artifacts were built: the suites run in a fresh process on them (worker.FRESH_PROCESS_SUITES)
        rec["timings"]["build_prepare_seconds"] = rec["timings"].get("prepare_seconds")
        rec["timings"]["build_wall_seconds"] = round(outcome.seconds, 3)
        first = outcome.seconds
        outcome = run_isolated(backend_worker, {**job, "force_artifacts": False}, timeout, msgs)
        outcome = dataclasses.replace(outcome, seconds=first + outcome.seconds)
    elif built is not None:
        rec["timings"].update(build_prepare_seconds=built["timings"]["build_prepare_seconds"],
                              build_wall_seconds=built["timings"]["build_wall_seconds"])
        outcome = dataclasses.replace(outcome, seconds=built["timings"]["build_wall_seconds"] + outcome.seconds)
    if "build_wall_seconds" in rec["timings"] and rec.get("artifacts"):
        # built in this run (by the build phase, or before a fresh suite process that then found them)
        rec["artifacts"] = {**rec["artifacts"], "reused": False}
    rec["timings"]["wall_seconds"] = round(outcome.seconds, 3)
    msgs.finish(outcome, timeout, store, cfg.setting_source(p.name, "timeout"))
    store.write_backend(p.name, rec)
    ui.backend_finished(p.name, rec["status"], rec["reason"], reused=False)
    return rec


def _suite_records(p: BackendPlan, store: RunStore, proc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    out = {}
    for s in p.suites:
        r = store.read_suite(p.name, s.name, s.fingerprint)
        if r is None:
            reason = proc.get("reason") or "not run"
            r = {"status": "skipped" if proc.get("status") == "skipped" else "failed",
                 "reason": reason if proc.get("status") != "ok" else "no result written"}
        else:
            r = {**r, "reused": s.reuse is not None}
        out[s.name] = r
    return out


def dry_run_plan(cfg: RunConfig, v: Validated, plans: list[BackendPlan], suites: dict[str, str | None],
                 run_dir: Path) -> dict[str, Any]:
    """What a run would do, without running or writing anything."""
    from backends import registry
    from orchestrator.suites.base import get_suite

    _plan_suites(cfg, v, plans, suites, RunStore(run_dir), dry_run=True)
    out: dict[str, Any] = {"dry_run": True, "run_dir": str(run_dir), "n_sentences": len(v.data.sources),
                           "suites": {s: r or "ok" for s, r in suites.items()}, "backends": {}}
    for p in plans:
        if p.skip_reason:
            out["backends"][p.name] = {"action": "skip", "reason": p.skip_reason}
            continue
        backend = registry.get_backend(p.name, **p.options)  # constructed in validation: no runtime import
        todo = {s.name: ("does not apply" if not get_suite(s.name).supports(backend)
                         else "reuse" if s.reuse is not None else "run") for s in p.suites}
        action = "run" if "run" in todo.values() else "reuse"
        out["backends"][p.name] = {"action": action, "suites": todo, "settings": p.settings,
                                   "fingerprints": {s.name: s.fingerprint for s in p.suites}}
    return out


def run_compare(cfg: RunConfig, ui: NullUI | None = None, dry_run: bool = False) -> tuple[dict[str, Any], int, Path]:
    """Run the ``compare`` command; return (report, exit code, run dir). ``dry_run``: only the plan."""
    from orchestrator import hooks

    ui = ui or NullUI()
    started = time.time()
    warnings: list[str] = []
    hooks.check_requested(cfg)
    suites = _resolve_suites(cfg)
    plans = _resolve_backends(cfg, warnings)
    v = Validated(cfg)
    check_inputs(cfg, v, plans, suites)
    run_dir = (cfg.out or default_run_dir(cfg, v)).resolve()  # children get absolute paths (some chdir)
    if dry_run:
        v.check_lengths(None, _source_limits(cfg, plans))
        return dry_run_plan(cfg, v, plans, suites, run_dir), EXIT_OK, run_dir
    with RunLock(run_dir):
        return _run_locked(cfg, v, ui, run_dir, plans, suites, warnings, started)


def _source_limits(cfg: RunConfig, plans: list[BackendPlan]) -> dict[str, int]:
    return {p.name: int(cfg.backend_options(p.name)["max_source_length"]) for p in plans if not p.skip_reason}


def _run_locked(cfg, v, ui, run_dir: Path, plans, suites, warnings: list[str], started: float):
    from orchestrator import hooks, report as report_mod

    v.check_lengths(run_dir / "source_lengths.json", _source_limits(cfg, plans))
    if v.truncated:
        warnings.append(f"{v.truncated} of {len(v.data.sources)} source(s) are longer than "
                        f"max_source_length={cfg.settings['max_source_length']} tokens (longest {v.longest}) "
                        f"and are truncated; raise --max-source-length, or pass --strict-length to fail instead")
    for b, n in v.truncated_by.items():
        if n:
            warnings.append(f"{b}: {n} of {len(v.data.sources)} source(s) are longer than its max_source_length="
                            f"{cfg.backend_options(b)['max_source_length']} tokens and are truncated")
    if v.data.skipped_empty:
        warnings.append(f"skipped {len(v.data.skipped_empty)} empty line pair(s) (--skip-empty)")
    names = [p.name for p in plans]
    if cfg.reference not in names:
        warnings.append(f"reference backend '{cfg.reference}' is not in this run: no agreement metrics, no "
                        f"verdicts, and selection finds nothing to ship (exit code 3); add it to --backends")
    for s, reason in suites.items():
        if reason:
            warnings.append(reason)
    for w in warnings:
        ui.warn(w)
    store = RunStore(run_dir)
    artifact_dir = cfg.cache_dir or (Path(os.environ["SEQQUANT_CACHE_DIR"]) if os.environ.get("SEQQUANT_CACHE_DIR")
                                     else (run_dir.parent / ".artifacts" if cfg.out is None else run_dir / "artifacts"))
    artifact_dir = artifact_dir.expanduser().resolve()
    _plan_suites(cfg, v, plans, suites, store)
    atomic_write_json(run_dir / "run.json", {"command": cfg.command, "settings": cfg.settings,
                                             "backends": names, "suites": list(suites),
                                             "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started))})
    ui.info(f"run directory: {run_dir}")
    procs: dict[str, dict[str, Any]] = {}
    records: dict[str, dict[str, dict[str, Any]]] = {}
    try:
        built, parallel_builds = _build_phase(cfg, v, plans, store, artifact_dir, ui)
        for p in plans:
            if p.skip_reason:
                procs[p.name] = {"status": "skipped", "reason": p.skip_reason}
                ui.backend_finished(p.name, "skipped", p.skip_reason, reused=False)
                records[p.name] = {}
                continue
            procs[p.name] = _run_backend(cfg, v, p, store, artifact_dir, ui, built.get(p.name))
            records[p.name] = _suite_records(p, store, procs[p.name])
    except KeyboardInterrupt:
        ui.close()
        ui.warn(f"interrupted; finished results are kept in {run_dir}. Re-run the same command to resume.")
        return {}, EXIT_INTERRUPTED, run_dir
    ui.close()
    report = report_mod.build_report(cfg, v, plans, procs, records, suites, run_dir, artifact_dir, warnings)
    report_mod.run_compare_phase(report, cfg, v, records, suites, run_dir)
    code = hooks.run_hooks(report, cfg, ui)
    if report.get("compare_errors") and code == EXIT_OK:
        code = EXIT_INTERNAL  # a suite's comparison failed: its numbers are missing from the report
    report["run"]["wall_seconds"] = round(time.time() - started, 2)
    report["run"]["parallel_builds"] = parallel_builds
    hooks.write_all_reports(report, run_dir, ui)
    return report, code, run_dir
