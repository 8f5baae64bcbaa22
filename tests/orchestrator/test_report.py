"""report.json helpers and report.md rendering."""
import json
import math

from orchestrator.report import SCHEMA_VERSION, json_safe, render_markdown, summary_rows


def minimal_report():
    return {
        "schema_version": SCHEMA_VERSION, "tool": {"name": "seqquant", "version": "0.1.0"},
        "command": "python cli.py compare --limit 2", "created": "2026-01-01T00:00:00Z",
        "model": {"path": "/m", "family": "marian", "content_hash": "ab" * 32},
        "data": {"src": "s.en", "ref": "r.de", "n_sentences": 2, "truncated_sources": 0, "max_source_length": 64,
                 "calibration": {"src": "v.en", "n_sentences": 5}},
        "settings": {"num_beams": 1, "batch_size": 32, "max_new_tokens": 64, "threads": 2},
        "reference_backend": "a",
        "backends": {
            "a": {"status": "ok", "reason": None, "metrics": {"bleu": 30.123, "chrf": 55.0,
                                                              "exact_match_vs_reference": 1.0, "bytes": 2_000_000},
                  "artifacts": {"bytes": 10}, "signature": {"short": "be:a|rt:torch"}, "verdict": {"kind": "pass"}},
            "b": {"status": "failed", "reason": "process killed by signal SIGABRT during 'quality'\nmore",
                  "metrics": {}, "artifacts": None, "signature": None, "log_tail": ["Fatal Python error: Aborted"]},
            "c": {"status": "skipped", "reason": "needs x. Install with: pip install -e '.[tflite]'",
                  "metrics": {}, "artifacts": None, "signature": None},
        },
        "warnings": ["1 of 2 source(s) are longer than max_source_length"],
    }


def test_summary_rows():
    rows = {r[0]: r for r in summary_rows(minimal_report())}
    assert rows["a"][1:8] == ["ok", "30.12", "55.00", "100.0%", "2.0", "-", "pass"]
    assert rows["b"][1] == "failed" and rows["b"][-1] == "process killed by signal SIGABRT during 'quality'"
    assert rows["c"][-1].endswith("pip install -e '.[tflite]'")


def test_markdown_has_command_table_reasons_and_log_tail():
    md = render_markdown(minimal_report())
    assert "`python cli.py compare --limit 2`" in md
    assert "| a | ok | 30.12 |" in md and "SIGABRT" in md and "Fatal Python error: Aborted" in md
    assert "pip install -e '.[tflite]'" in md and "## Warnings" in md and "be:a|rt:torch" in md


def test_json_safe_makes_strict_json():
    data = {"x": float("nan"), "y": [float("inf"), 1.5], "z": {"w": -math.inf}}
    text = json.dumps(json_safe(data), allow_nan=False)
    assert json.loads(text) == {"x": None, "y": [None, 1.5], "z": {"w": None}}


def test_regression_text_states_each_change_once():
    from orchestrator.report_tables import regression_text

    metric = {"backend": "ct2-int8", "metric": "latency_p50_ms", "baseline": 21.95, "current": 34.71,
              "reason": "latency_p50_ms 21.95 -> 34.71 (allowed rise 5.4875)"}
    assert regression_text(metric) == "ct2-int8: latency_p50_ms 21.95 -> 34.71 (allowed rise 5.4875)"
    verdict = {"backend": "b", "metric": "verdict", "baseline": "pass", "current": "mask",
               "reason": "verdict no longer pass"}
    assert regression_text(verdict) == "b: verdict pass -> mask (verdict no longer pass)"


def test_markdown_names_the_machine_when_the_report_has_one():
    rep = minimal_report()
    assert "- Machine:" not in render_markdown(rep)  # reports written before the machine was recorded
    rep["machine"] = {"cpu": "AMD EPYC", "arch": "x86_64", "cores": 2, "isa": ["avx2", "fma"], "memory_gb": 23.5,
                      "os": "Linux 6.1", "python": "3.11.7", "dispatch_env": {"ONEDNN_MAX_CPU_ISA": "SSE41"}}
    assert ("- Machine: AMD EPYC (x86_64, 2 cores, 23.5 GB; isa avx2 fma); Linux 6.1, Python 3.11.7; dispatch "
            "ONEDNN_MAX_CPU_ISA=SSE41") in render_markdown(rep)
