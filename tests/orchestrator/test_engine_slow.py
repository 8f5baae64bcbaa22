"""Slow fault-injection runs: a backend that hangs in decode_step (killed at the timeout, the other
backend's result kept), and a real Ctrl-C of `python cli.py compare` followed by a resume."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from orchestrator.cli_app import main
from tests.fixtures.faulty_backends import COUNTER_ENV, TARGETS, register_faulty_backends

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def test_hanging_backend_times_out_and_others_finish(tiny_model, tmp_path):
    register_faulty_backends()
    matrix = tmp_path / "m.toml"
    matrix.write_text('[run]\nsuites = ["quality"]\nreference = "test-counting"\n'
                      '[settings]\nlimit = 2\nmax_new_tokens = 4\ntimeout = 600\n'
                      '[overrides.test-hang]\ntimeout = 45\n')
    out = tmp_path / "run"
    rc = main(["compare", "--matrix", str(matrix), "--model", str(tiny_model("marian")),
               "--backends", "test-hang,test-counting", "--out", str(out), "--quiet"])
    assert rc in (0, 3)
    r = json.loads((out / "report.json").read_text())
    hang = r["backends"]["test-hang"]
    assert hang["status"] == "failed" and "timed out after 45 s" in hang["reason"]
    assert hang["exit"]["timed_out"] is True and hang["settings"]["timeout"] == 45
    assert r["backends"]["test-counting"]["status"] == "ok"
    assert r["backends"]["test-counting"]["metrics"]["bleu"] >= 0


PLUGIN_MAIN = """
import sys
sys.path.insert(0, {repo!r})
if __name__ == "__main__":
    from tests.fixtures.faulty_backends import register_faulty_backends
    register_faulty_backends()
    from orchestrator.cli_app import main
    sys.exit(main(sys.argv[1:]))
"""


def test_ctrl_c_then_resume_does_not_recompute(tiny_model, tmp_path):
    """Interrupt while the second backend hangs; the first backend's finished suite survives and the
    re-run reuses it (its activation counter does not move)."""
    script = tmp_path / "seqquant_with_plugins.py"
    script.write_text(PLUGIN_MAIN.format(repo=str(REPO)))
    counter = tmp_path / "activations.txt"
    out = tmp_path / "run"
    env = {**os.environ, COUNTER_ENV: str(counter)}
    args = [sys.executable, str(script), "compare", "--model", str(tiny_model("marian")), "--limit", "2",
            "--max-new-tokens", "4", "--suites", "quality", "--reference", "test-counting", "--out", str(out),
            "--quiet"]
    proc = subprocess.Popen(args + ["--backends", "test-counting,test-hang", "--timeout", "600"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    finished = out / "backends" / "test-counting" / "suites" / "quality.json"
    hang_log = out / "backends" / "test-hang" / "worker.log"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and not (hang_log.exists() and "hanging" in hang_log.read_text()):
        time.sleep(1)
    assert finished.exists()
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "re-run the same command to resume" in " ".join(err.split()).lower()
    assert not (out / "report.json").exists()
    assert counter.read_text().count("\n") == 1
    before = finished.read_text()
    # resume: the finished backend is reused; the hang is given a short timeout this time
    r = subprocess.run(args + ["--backends", "test-counting,test-hang", "--timeout", "30"], env=env,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode in (0, 3), r.stderr
    report = json.loads((out / "report.json").read_text())
    assert report["backends"]["test-counting"]["reused"] is True
    assert report["backends"]["test-counting"]["status"] == "ok"
    assert report["backends"]["test-hang"]["status"] == "failed"
    assert counter.read_text().count("\n") == 1 and finished.read_text() == before
