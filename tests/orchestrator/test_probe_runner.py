"""orchestrator.probe_runner: what the weight and activation probes share."""
from __future__ import annotations

import argparse

import numpy as np
import pytest

from backends.errors import InvalidInputError
from orchestrator import probe_runner as pr


def _res(names):
    return {"kind": "test probe", "model": "m", "sentences": 3, "method": "x", "seconds": 1.0,
            "probes": [{"probe": n, "tensors": 2, "identical": 0.5, "noise_scale": 0.1} for n in names]}


def test_format_results_aligns_long_probe_names_and_removes_in_quadrature():
    text = pr.format_results(_res(["a", "all-but-norm-in+norm-out+logits"]), backend_scale=0.5)
    lines = text.splitlines()
    assert lines[0].startswith("test probe: m, 3 sentences")
    header, *rows = lines[1:3]
    assert len({len(r) for r in rows}) == 1  # one column layout whatever the name's length
    assert rows[0].split()[-1] == "0.490"  # sqrt(0.5^2 - 0.1^2)
    assert "quadrature" in lines[-1]
    assert "without it" not in pr.format_results(_res(["a"]))


def test_removal_effect_is_quadrature():
    assert pr.removal_effect(0.151, 0.0) == pytest.approx(0.151)
    assert pr.removal_effect(0.5, 0.3) == pytest.approx(0.4)
    assert pr.removal_effect(0.1, 0.2) == 0.0
    assert np.isfinite(pr.removal_effect(0.151, 0.024))


def test_run_probe_set_checks_names_before_loading_anything(tmp_path):
    def perturb(session, probe):  # never reached
        raise AssertionError
    def spec(name):
        if name != "a":
            raise InvalidInputError(f"unknown probe {name!r}")
    kw = dict(kind="k", method="m")
    with pytest.raises(InvalidInputError, match="unknown probe"):
        pr.run_probe_set(tmp_path / "missing", ["x"], ["b"], spec, perturb, **kw)
    with pytest.raises(InvalidInputError, match="no probe given"):
        pr.run_probe_set(tmp_path / "missing", ["x"], [], spec, perturb, **kw)
    with pytest.raises(InvalidInputError, match="no source"):
        pr.run_probe_set(tmp_path / "missing", [], ["a"], spec, perturb, **kw)


def test_run_cli_turns_bad_options_into_exit_2(capsys):
    ap = pr.argument_parser("p", "d", ["a"], ["a", "b"])
    assert "ofa,b" in ap.format_help().replace("\n", "").replace(" ", "")
    called = []

    def run(sources, probes, progress):
        called.append(probes)
        return _res(probes)
    for argv, msg in ((["--limit", "-1"], "--limit"), (["--backend-noise", "-0.1"], "--backend-noise"),
                      (["--src", "/nonexistent/src.txt"], "does not exist")):
        assert pr.run_cli(ap.parse_args(argv), run) == 2
        assert msg in capsys.readouterr().err
    assert not called
    assert pr.run_cli(ap.parse_args(["--limit", "2", "--probes", "a, b"]), run) == 0
    assert called == [["a", "b"]] and "test probe" in capsys.readouterr().out
    assert isinstance(ap.parse_args([]), argparse.Namespace)
