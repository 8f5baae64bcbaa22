"""All four suites + verdict + selection + report.html through the real engine (worker processes)."""
from __future__ import annotations

import json

import pytest

from tests.orchestrator.suites.helpers import DATA


@pytest.mark.slow
def test_compare_with_all_suites_on_tiny_model(tiny_model, tmp_path):
    from orchestrator.benchmark import benchmark_summary
    from orchestrator.cli_app import main

    matrix = tmp_path / "m.toml"
    matrix.write_text("""
schema = 1
[run]
backends = ["torch-fp32", "torch-fp32-split"]
suites = ["quality", "split-generation", "source-sensitivity", "speed"]
[settings]
limit = 8
max_new_tokens = 8
batch_size = 8
[suites.split-generation]
tf_sentences = 2
tf_steps = 3
[suites.source-sensitivity]
pairs = 3
[suites.speed]
warmup = 1
latency_n = 2
throughput_n = 2
throughput_batch = 2
[suites.quality]
bootstrap_samples = 50
[bar]
max_bleu_drop = 1.0
[constraints]
precision = "any"
""")
    out = tmp_path / "run"
    code = main(["compare", "--model", str(tiny_model("marian")), "--src", str(DATA / "test_2016_flickr.en.gz"),
                 "--ref", str(DATA / "test_2016_flickr.de.gz"), "--matrix", str(matrix), "--out", str(out),
                 "--cache-dir", str(tmp_path / "cache"), "--quiet"])
    report = json.loads((out / "report.json").read_text())
    assert code == 0, report.get("hook_errors") or report.get("compare_errors")
    split = report["backends"]["torch-fp32-split"]
    assert split["status"] == "ok"
    for key in ("bleu", "exact_match_vs_reference", "tf_max_abs_logit_diff", "cross_source_cosine", "source_blind",
                "latency_p90_ms", "bytes"):
        assert key in split["metrics"], key
    assert split["metrics"]["exact_match_vs_reference"] == 1.0
    assert split["suites"]["split-generation"]["divergence"]["histogram"]["identical"] == 8
    assert split["verdict"]["kind"] == "pass"
    assert report["verdict"]["backends"] == {"torch-fp32": "pass", "torch-fp32-split": "pass"}
    assert report["selection"]["chosen"] in ("torch-fp32", "torch-fp32-split")
    assert (out / "report.html").read_text().count("<svg") >= 3
    assert benchmark_summary(report)["verdict_expectations"][0]["met"]
