"""report.html: self-contained, with the four plots and the tables, from a measured report."""
from __future__ import annotations

import copy
import re
from xml.etree import ElementTree

import pytest

from orchestrator.attribution import attribute
from orchestrator.benchmark import benchmark_summary, format_summary, main
from orchestrator.report_html import render_html, write_html
from orchestrator.selection import select_targets
from tests.orchestrator.suites.conftest import measured_report


@pytest.fixture(scope="module")
def report(tiny_model, tmp_path_factory):
    rep, _, _ = measured_report(tiny_model, tmp_path_factory)
    rep = copy.deepcopy(rep)
    rep["verdict"] = attribute(rep, {})
    rep["selection"] = select_targets(rep, {})
    return rep


def test_html_has_plots_and_tables(report, tmp_path):
    path = write_html(report, tmp_path / "report.html")
    text = path.read_text(encoding="utf-8")
    assert text.startswith("<!DOCTYPE html>")
    assert "<script" not in text and "http://" not in text.replace("http://www.w3.org/2000/svg", "")
    svgs = re.findall(r"<svg.*?</svg>", text, flags=re.S)
    assert len(svgs) == 3 + 5  # scatter, sizes, sensitivity + one histogram per backend
    for s in svgs:
        ElementTree.fromstring(s)  # well-formed
    for title in ("BLEU vs latency", "Size on disk", "First divergence step", "Source sensitivity",
                  "Boundary matrix", "Verdicts", "Selection", "Where outputs leave the reference"):
        assert title in text
    for name in report["backends"]:
        assert name in text
    assert "boundary" in text and "calibration" in text


def test_html_without_optional_sections():
    rep = {"backends": {"x": {"status": "failed", "reason": "no <runtime> & co", "metrics": {}}}}
    text = render_html(rep)
    assert "no &lt;runtime&gt; &amp; co" in text and "<svg" not in text


def test_benchmark_summary(report, tmp_path, capsys):
    s = benchmark_summary(report)
    assert s["backends"]["sim-int8"]["verdict"] == "pass"
    assert ("torch-fp32-split", "torch-fp32") in {(r["a"], r["b"]) for r in s["ratios"]}
    expect = {e["backend"]: e for e in s["verdict_expectations"]}
    assert expect["torch-fp32-split"]["met"]
    assert "torch-fp32-split vs torch-fp32" in format_summary(s)
    import json

    (tmp_path / "report.json").write_text(json.dumps(report))
    assert main([str(tmp_path)]) == 0
    assert "verdicts as expected" in capsys.readouterr().out
    assert main([str(tmp_path / "nope")]) == 2
