"""The console summary (``show``, and the end of ``compare`` / ``select``): failed steps are printed as
errors, and the closing line names every report file the run has."""
from __future__ import annotations

import copy
import io

from orchestrator.report import report_problems
from orchestrator.console import print_report

_REPORT = {
    "schema_version": 1, "tool": {"name": "seqquant", "version": "0.1.0"}, "command": "python cli.py compare",
    "created": "2026-01-01T00:00:00Z",
    "model": {"path": "/m/marian-en-de-multi30k", "family": "marian", "content_hash": "ab" * 32},
    "data": {"src": "/d/test_2016_flickr.en.gz", "ref": "/d/test_2016_flickr.de.gz", "n_sentences": 5,
             "lines_in_files": 1000, "skipped_empty_lines": 0, "max_source_length": 64, "truncated_sources": 0,
             "calibration": {"src": "/d/val.en.gz", "n_sentences": 200}},
    "settings": {"num_beams": 1, "batch_size": 32, "max_new_tokens": 64, "threads": 2, "limit": 5},
    "reference_backend": "torch-fp32",
    "suites": {"quality": {"status": "ok", "reason": None}},
    "backends": {"torch-fp32": {"status": "ok", "reason": None, "signature": None,
                                "metrics": {"bleu": 30.5, "chrf": 66.2, "exact_match_vs_reference": 1.0},
                                "suites": {"quality": {"status": "ok"}}}},
    "warnings": [], "run": {"dir": "/r", "wall_seconds": 12.5, "backends_run": ["torch-fp32"],
                            "backends_reused": []},
}


def minimal_report() -> dict:
    """The smallest report.json that ``show`` / ``select`` / ``baseline save`` accept."""
    return copy.deepcopy(_REPORT)


def render(report: dict, run_dir=None) -> str:
    from rich.console import Console

    buf = io.StringIO()
    print_report(report, Console(file=buf, width=400, highlight=False, color_system=None), run_dir)
    return buf.getvalue()


def test_minimal_report_is_a_report():
    assert report_problems(minimal_report()) == []


def test_compare_and_hook_errors_are_printed_as_errors():
    rep = minimal_report()
    out = render(rep)
    assert "error" not in out  # nothing failed: no error line
    rep["compare_errors"] = {"quality": "InvalidInputError: [suites.quality]: unknown option(s) ['bogus_option']\n"
                                        "Traceback (most recent call last):\n  ..."}
    rep["hook_errors"] = {"report_html": "ImportError: cannot import name 'x'\nTraceback ..."}
    out = render(rep)
    assert "error: suite quality: its compare step failed" in out and "bogus_option" in out
    assert "error: the report_html step failed: ImportError: cannot import name 'x'" in out
    assert "Traceback" not in out  # first lines only; the tracebacks stay in report.json
    assert "compare_errors and hook_errors in report.json" in out


def test_closing_line_names_report_html_only_when_it_exists(tmp_path):
    rep = minimal_report()
    out = render(rep, tmp_path)
    assert f"report: {tmp_path}/report.json, {tmp_path}/report.md  (12.5 s)" in out
    assert "report.html" not in out
    (tmp_path / "report.html").write_text("<html></html>")
    out = render(rep, tmp_path)
    assert f"report: {tmp_path}/report.json, {tmp_path}/report.md, {tmp_path}/report.html  (12.5 s)" in out


def test_closing_line_without_wall_time(tmp_path):
    rep = minimal_report()
    rep["run"]["wall_seconds"] = None  # e.g. an interrupted run's report
    assert f"{tmp_path}/report.md\n" in render(rep, tmp_path)


def test_baseline_line_names_changed_outputs_moved_logits_and_artifacts_not_the_baselines_bytes():
    rep = minimal_report()
    rep["baseline"] = {"file": "b.json", "regressions": [],
                       "outputs": {"torch-fp32": {"n": 5, "changed": 0}, "tflite-int8": {"n": 5, "changed": 2}},
                       "artifacts": {"torch-fp32": {"kind": "same"}, "tflite-int8": {"kind": "rebuilt"}}}
    rep["baseline"]["first_step"] = {"torch-fp32": {"exact": True, "max_abs_diff": 0.0},
                                     "tflite-int8": {"exact": False, "max_abs_diff": 0.21875}}
    out = render(rep)
    assert ("baseline: no regression vs b.json; outputs changed: tflite-int8 2/5; first-step logits moved: "
            "tflite-int8 (max 0.219); artifacts not the baseline's bytes: tflite-int8 (rebuilt)") in out
    rep["baseline"]["artifacts"]["tflite-int8"]["kind"] = "same"
    assert "artifacts not" not in render(rep)
