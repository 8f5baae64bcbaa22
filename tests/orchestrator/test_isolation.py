"""Process isolation: crashes, hangs and exit codes of a child become outcomes, never exceptions."""
import ctypes
import os
import time

import pytest

from orchestrator.isolation import run_isolated


def _ok(conn, payload):
    for i in range(3):
        conn.send(("progress", i))
    conn.send(("result", payload * 2))


def _abort(conn, payload):
    conn.send(("progress", 0))
    os.abort()


def _segfault(conn, payload):
    ctypes.string_at(0)


def _exit3(conn, payload):
    os._exit(3)


def _hang(conn, payload):
    conn.send(("started",))
    while True:
        time.sleep(60)


def test_messages_are_relayed_and_success():
    got = []
    out = run_isolated(_ok, 21, timeout=60, on_message=got.append)
    assert out.ok and out.exitcode == 0 and out.signal is None
    assert got == [("progress", 0), ("progress", 1), ("progress", 2), ("result", 42)]


@pytest.mark.parametrize("target,sig", [(_abort, "SIGABRT"), (_segfault, "SIGSEGV")])
def test_native_crash_becomes_signal_name(target, sig):
    out = run_isolated(target, None, timeout=60)
    assert not out.ok and out.signal == sig
    assert sig in out.describe(60)


def test_exit_code_is_reported():
    out = run_isolated(_exit3, None, timeout=60)
    assert not out.ok and out.exitcode == 3 and "code 3" in out.describe(60)


def test_hang_is_killed_at_timeout():
    got = []
    t0 = time.monotonic()
    out = run_isolated(_hang, None, timeout=3, on_message=got.append)
    assert out.timed_out and not out.ok and got == [("started",)]
    assert time.monotonic() - t0 < 30
    assert "timed out after 3 s" in out.describe(3)


def _sigkill(conn, payload):
    import signal

    os.kill(os.getpid(), signal.SIGKILL)


def test_sigkill_is_reported_as_possible_out_of_memory():
    out = run_isolated(_sigkill, None, timeout=60)
    assert out.signal == "SIGKILL" and "out of memory" in out.describe(60)


PARENT = """
import sys
sys.path.insert(0, {repo!r})
from tests.orchestrator.test_isolation import _write_pid_and_hang
from orchestrator.isolation import run_isolated
if __name__ == "__main__":
    run_isolated(_write_pid_and_hang, {pidfile!r}, timeout=600)
"""


def _write_pid_and_hang(conn, pidfile):
    with open(pidfile, "w") as fh:
        fh.write(str(os.getpid()))
    while True:
        time.sleep(60)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split()[2] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.skipif(not os.path.exists("/proc/self/stat"), reason="Linux only (PR_SET_PDEATHSIG)")
def test_child_dies_when_the_orchestrator_is_killed(tmp_path):
    import signal
    import subprocess
    import sys
    from pathlib import Path

    repo = str(Path(__file__).resolve().parents[2])
    script = tmp_path / "parent.py"
    pidfile = tmp_path / "child.pid"
    script.write_text(PARENT.format(repo=repo, pidfile=str(pidfile)))
    parent = subprocess.Popen([sys.executable, str(script)])
    try:
        deadline = time.monotonic() + 120
        while not pidfile.exists() or not pidfile.read_text():
            assert time.monotonic() < deadline and parent.poll() is None
            time.sleep(0.2)
        child = int(pidfile.read_text())
        assert _alive(child)
        parent.send_signal(signal.SIGKILL)  # no cleanup code can run in the parent
        parent.wait(30)
        deadline = time.monotonic() + 30
        while _alive(child) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not _alive(child)
    finally:
        if parent.poll() is None:
            parent.kill()
        if pidfile.exists() and pidfile.read_text() and _alive(int(pidfile.read_text())):
            os.kill(int(pidfile.read_text()), signal.SIGKILL)  # only if the test failed
