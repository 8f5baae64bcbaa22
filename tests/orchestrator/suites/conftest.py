"""A measured report on the tiny Marian (module-scoped fixtures are expensive: share them).

References are the torch-fp32 oracle's own translations (self-references), so BLEU on a random
tiny model is meaningful: 100 for a backend that reproduces the oracle, lower when it diverges.
"""
from __future__ import annotations

import pytest

from tests.orchestrator.suites.helpers import SimQuantBoundaryBackend, SourceBlindBackend, load_test_data, run_suites

N = 8
MAX_NEW = 8
SUITE_OPTS = {"split-generation": {"tf_sentences": 4, "tf_steps": 6, "boundary_n": N},
              "source-sensitivity": {"pairs": 4},
              "speed": {"warmup": 1, "latency_n": 3, "throughput_n": 4, "throughput_batch": 4},
              "quality": {"bootstrap_samples": 100, "bootstrap_metrics": ["bleu", "chrf"]}}


_CACHE: dict = {}


@pytest.fixture(scope="session")
def measured(tiny_model, tmp_path_factory):
    return measured_report(tiny_model, tmp_path_factory)


def measured_report(tiny_model, tmp_path_factory):
    """(report, model_dir, run_dir), computed once per process: : torch-fp32 (reference), torch-fp32-split, sim-int8 (requantized
    boundary), sim-int8-raw (raw boundary, decoder scale 4x the encoder's), sim-int8-naive (boundary
    calibrated on zeros: source-blind), all suites."""
    from backends.registry import get_backend

    if "measured" in _CACHE:
        return _CACHE["measured"]
    model_dir = tiny_model("marian")
    sources, _ = load_test_data(N)
    refs = translate_reference_short(model_dir, sources)
    run_dir = tmp_path_factory.mktemp("measured")
    backends = {
        "torch-fp32": get_backend("torch-fp32", max_new_tokens=MAX_NEW),
        "torch-fp32-split": get_backend("torch-fp32-split", max_new_tokens=MAX_NEW),
        "sim-int8": SimQuantBoundaryBackend(name="sim-int8", max_new_tokens=MAX_NEW),
        "sim-int8-raw": SimQuantBoundaryBackend(name="sim-int8-raw", boundary="raw", max_new_tokens=MAX_NEW),
        "sim-int8-naive": SourceBlindBackend(name="sim-int8-naive", max_new_tokens=MAX_NEW),
    }
    report = run_suites(model_dir, backends, ["quality", "split-generation", "source-sensitivity", "speed"],
                        sources, refs, run_dir, suite_options=SUITE_OPTS)
    _CACHE["measured"] = (report, model_dir, run_dir)
    return _CACHE["measured"]


def translate_reference_short(model_dir, sources):
    from backends.model import ModelBundle
    from backends.registry import get_backend

    bundle = ModelBundle.load(model_dir)
    b = get_backend("torch-fp32", max_new_tokens=MAX_NEW)
    b.prepare(bundle, model_dir.parent / "ref-artifacts")
    with b:
        enc = bundle.encode_sources(sources, b.max_source_length)
        return bundle.decode(b.generate(enc.input_ids, enc.attention_mask))


