"""The code that runs inside a backend's own process (see :mod:`orchestrator.isolation`).

``backend_worker(conn, job)``: preflight -> prepare (artifact cache) -> activate -> every pending
suite, writing each suite's result atomically as soon as it finishes. With ``fresh_process_after_build``
it stops after a prepare that built (not reused) the artifacts when a suite in ``FRESH_PROCESS_SUITES`` is
pending, and sends ``("restart", why)``: the engine runs the suites in a new process. With ``build_only``
it stops after prepare (the engine's parallel build phase). Python-level failures are
recorded (a suite that raises is ``failed`` with the exception, the others still run); native crashes
kill the process and the parent records them from the exit status and the log tail.
"""
from __future__ import annotations

import faulthandler
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Any

THREAD_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "TF_NUM_INTRAOP_THREADS",
              "TF_NUM_INTEROP_THREADS")


def _redirect_output(log_path: Path):
    """Send fd 1/2 (Python *and* native output, abort messages) to the backend's log file."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    fh = open(log_path, "a", buffering=1, encoding="utf-8", errors="replace")
    sys.stdout.flush()
    sys.stderr.flush()
    os.dup2(fh.fileno(), 1)
    os.dup2(fh.fileno(), 2)
    sys.stdout = fh
    sys.stderr = fh
    faulthandler.enable(file=fh, all_threads=True)
    return fh


def _short_exc(exc: BaseException) -> str:
    msg = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {msg[0] if msg else ''}".strip().rstrip(":")


def install_finite_guard(backend) -> None:
    """Fail loudly on NaN/+inf logits instead of letting argmax pick garbage (-inf masks are legal)."""
    import numpy as np

    from backends.errors import NonFiniteLogitsError

    def check(logits, where):
        arr = np.asarray(logits)
        if arr.dtype.kind == "f":
            bad = np.isnan(arr) | np.isposinf(arr)
            if bad.any():
                raise NonFiniteLogitsError(
                    f"{backend.name}: {where} returned non-finite logits ({int(np.isnan(arr).sum())} NaN, "
                    f"{int(np.isposinf(arr).sum())} +inf of {arr.size} values, shape {list(arr.shape)})")

    step = backend.decode_step_impl
    first = backend.first_step_logits_impl

    def decode_step_impl(state, ids, cache):
        logits, cache = step(state, ids, cache)
        check(logits, "decode_step")
        return logits, cache

    def first_step_logits_impl(ids, mask):
        logits = first(ids, mask)
        check(logits, "first_step_logits")
        return logits

    backend.decode_step_impl = decode_step_impl
    backend.first_step_logits_impl = first_step_logits_impl


def _preflight(backend) -> list[str]:
    fn = getattr(backend, "preflight", None)
    if fn is None:
        return []
    reasons = fn()
    if not reasons:
        return []
    if isinstance(reasons, str):
        return [reasons]
    return [str(r) for r in reasons]


#: suites whose measurements the memory left by a conversion would distort (peak RSS)
FRESH_PROCESS_SUITES = ("speed",)


def backend_worker(conn, job: dict[str, Any]) -> None:
    """Entry point of a backend process. ``job`` is plain data (see ``engine._job``)."""
    for var in THREAD_ENV:
        os.environ[var] = str(job["options"].get("threads", 2))
    # OpenMP threads that spin while waiting collapse when the machine is oversubscribed
    # (measured: CT2 fp32 at 2 threads 1.5 -> 30 sentences/s, torch 10x); passive waiting
    # costs little on a quiet machine. A user's own setting wins.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    for p in reversed(job.get("sys_path", [])):
        if p not in sys.path:
            sys.path.insert(0, p)
    _redirect_output(Path(job["log_path"]))
    print(f"=== seqquant worker for {job['backend']} pid {os.getpid()} at {time.strftime('%Y-%m-%d %H:%M:%S')}",
          flush=True)
    last = [0.0]

    def send(msg):
        try:
            conn.send(msg)
        except (BrokenPipeError, OSError):
            pass

    def info(**kw):
        send(("backend", kw))

    from backends import registry
    from backends.errors import BackendUnavailableError, SeqquantError

    entry = job.get("registry_entry")
    if entry and entry["name"] not in registry.available_backends():
        registry.register_backend(entry["name"], entry["target"], requires=tuple(entry["requires"]),
                                  description=entry["description"], **entry["options"])
    timings: dict[str, float] = {}
    try:
        backend = registry.get_backend(job["backend"], **job["options"])
    except SeqquantError as exc:
        info(status="skipped" if isinstance(exc, BackendUnavailableError) else "failed", reason=str(exc))
        return
    try:
        reasons = _preflight(backend)
    except Exception as exc:  # a preflight that raises is a failure of the backend, not of the run
        info(status="failed", reason=f"preflight raised {_short_exc(exc)}", traceback=traceback.format_exc())
        return
    if reasons:
        info(status="skipped", reason="; ".join(reasons))
        return

    from backends.base import CalibrationSet
    from backends.model import ModelBundle
    from orchestrator.suites.base import SuiteContext, get_suite
    from orchestrator.run_store import RunStore

    store = RunStore(job["run_dir"])
    model = ModelBundle.load(job["model_path"], source_prefix=job.get("source_prefix"))
    cal = job.get("calibration")
    calibration = CalibrationSet(cal["sources"], cal["targets"], cal["name"]) if cal else None
    send(("progress", "prepare", 0, 1, "prepare"))
    t0 = time.perf_counter()
    try:
        artifacts = backend.prepare(model, job["artifact_dir"], calibration, force=job.get("force_artifacts", False))
    except Exception as exc:
        traceback.print_exc()
        info(status="failed", reason=f"prepare failed: {_short_exc(exc)}", traceback=traceback.format_exc())
        return
    timings["prepare_seconds"] = round(time.perf_counter() - t0, 3)
    info(signature=backend.signature().to_dict(), artifacts=artifacts.to_dict(), timings=dict(timings))
    if job.get("build_only"):  # the engine's parallel build phase: the suites run later, in their own process
        return
    if (job.get("fresh_process_after_build") and not artifacts.reused
            and any(s["name"] in FRESH_PROCESS_SUITES for s in job["suites"])):
        # a conversion leaves its memory (TensorFlow, calibration data) in this process: the
        # memory a suite measures must be the runtime's own, so the suites run in a new process
        # that loads the artifacts just built
        send(("restart", "fresh process for the suites after building the artifacts"))
        return
    install_finite_guard(backend)
    t0 = time.perf_counter()
    try:
        backend.activate()
    except Exception as exc:
        traceback.print_exc()
        info(status="failed", reason=f"activate failed: {_short_exc(exc)}", traceback=traceback.format_exc())
        return
    timings["activate_seconds"] = round(time.perf_counter() - t0, 3)
    info(timings=dict(timings))
    outdir = store.backend_dir(job["backend"])
    try:
        for spec in job["suites"]:
            name = spec["name"]

            def progress(done, total, label="", _name=name):
                now = time.monotonic()
                if done >= total or now - last[0] > 0.25:
                    last[0] = now
                    send(("progress", _name, int(done), int(total), label or _name))

            send(("progress", name, 0, 1, name))
            print(f"--- suite {name}", flush=True)
            record: dict[str, Any] = {"suite": name, "backend": job["backend"], "fingerprint": spec["fingerprint"],
                                      "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                                      "pid": os.getpid()}
            t0 = time.perf_counter()
            try:
                suite = get_suite(name)
                if not suite.supports(backend):
                    record.update(status="skipped", reason=f"suite '{name}' does not apply to {job['backend']}")
                else:
                    ctx = SuiteContext(model=model, sources=job["sources"], references=job["references"],
                                       outdir=outdir, calibration=calibration, settings=job["settings"],
                                       suite_options=spec.get("options", {}), progress=progress,
                                       reference_backend=job.get("reference"))
                    result = suite.run(backend, ctx)
                    record.update(status="ok", result=result)
            except Exception as exc:
                traceback.print_exc()
                record.update(status="failed", reason=f"suite '{name}' raised {_short_exc(exc)}",
                              traceback=traceback.format_exc()[-4000:])
            record["seconds"] = round(time.perf_counter() - t0, 3)
            store.write_suite(job["backend"], name, record)
            timings[f"suite_{name}_seconds"] = record["seconds"]
            send(("suite", name, record["status"], record.get("reason")))
    finally:
        backend.deactivate()
    info(status="done", timings=dict(timings))
