"""Run a function in its own process (``spawn``) with a wall-clock timeout and a message pipe.

A backend's native code can segfault, abort, hang or be OOM-killed; none of that may take the
orchestrator down. :func:`run_isolated` starts ``target(conn, payload)`` in a fresh interpreter,
relays every message the child sends (progress, results) to ``on_message`` and turns the way the
process ended into an :class:`Outcome` (exit code, signal name, timeout), never an exception.
"""
from __future__ import annotations

import multiprocessing
import os
import signal
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

TERMINATE_GRACE = 5.0  # seconds between SIGTERM and SIGKILL


@dataclass
class Outcome:
    ok: bool
    exitcode: int | None
    signal: str | None = None
    timed_out: bool = False
    seconds: float = 0.0
    messages: int = 0
    interrupted: bool = False

    def describe(self, timeout: float | None = None, timeout_source: str | None = None) -> str:
        """Why the process ended; ``timeout_source``: the setting the timeout came from."""
        if self.interrupted:
            return "interrupted (process stopped)"
        if self.timed_out:
            where = timeout_source or "[settings] timeout, [overrides.<backend>] timeout or --timeout"
            return f"timed out after {timeout:g} s (no result; process killed). Raise the timeout ({where}) " \
                   f"if it is just slow"
        if self.signal:
            extra = " (likely killed for running out of memory)" if self.signal == "SIGKILL" else ""
            return f"process killed by signal {self.signal}{extra}"
        if self.exitcode not in (0, None):
            return f"process exited with code {self.exitcode}"
        return "ok"


def signal_name(exitcode: int | None) -> str | None:
    if exitcode is None or exitcode >= 0:
        return None
    try:
        return signal.Signals(-exitcode).name
    except ValueError:
        return f"signal {-exitcode}"


def _die_with_parent(parent_pid: int) -> None:
    """Linux: the child gets SIGKILL when the orchestrator dies (even by SIGKILL): no orphaned backend."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGKILL), 0, 0, 0)  # PR_SET_PDEATHSIG
    except Exception:  # not Linux: the parent's terminate() on exit/interrupt still applies
        pass
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os._exit(1)


def _child_entry(target, conn, payload, parent_pid: int) -> None:
    _die_with_parent(parent_pid)
    target(conn, payload)


def run_isolated(target: Callable[[Any, Any], None], payload: Any, timeout: float | None,
                 on_message: Callable[[Any], None] | None = None, poll: float = 0.2,
                 stop: threading.Event | None = None) -> Outcome:
    """Run ``target(conn, payload)`` in a spawned process; ``conn.send(msg)`` reaches ``on_message``.
    ``stop`` (when several run at once from threads): once set, the process is stopped and the outcome
    says ``interrupted``."""
    ctx = multiprocessing.get_context("spawn")
    recv, send = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child_entry, args=(target, send, payload, os.getpid()), daemon=True)
    start = time.monotonic()
    proc.start()
    send.close()  # the child holds the only writer: EOF when it dies
    n = 0
    timed_out = interrupted = False
    pipe_open = True
    try:
        while True:
            if pipe_open:
                try:
                    while recv.poll(poll):
                        msg = recv.recv()
                        n += 1
                        if on_message is not None:
                            on_message(msg)
                        if timeout is not None and time.monotonic() - start > timeout \
                                or stop is not None and stop.is_set():
                            break
                except (EOFError, OSError):
                    pipe_open = False
                except Exception:  # a message torn by a dying child: ignore, the exit code tells
                    pipe_open = False
            else:
                proc.join(poll)
            if not proc.is_alive() and not (pipe_open and recv.poll(0)):
                break
            if stop is not None and stop.is_set():
                interrupted = True
                _stop(proc)
                break
            if timeout is not None and time.monotonic() - start > timeout:
                timed_out = True
                _stop(proc)
                break
    except BaseException:  # KeyboardInterrupt: never leave the child behind
        _stop(proc)
        raise
    finally:
        recv.close()
    proc.join()
    code = proc.exitcode
    return Outcome(ok=(code == 0 and not timed_out and not interrupted), exitcode=code,
                   signal=None if timed_out or interrupted else signal_name(code), timed_out=timed_out,
                   seconds=time.monotonic() - start, messages=n, interrupted=interrupted)


def _stop(proc) -> None:
    if not proc.is_alive():
        return
    proc.terminate()
    proc.join(TERMINATE_GRACE)
    if proc.is_alive():
        proc.kill()
        proc.join()
