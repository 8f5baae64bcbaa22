"""onnx-fp32 against the PyTorch reference on tiny random Marian, BART and T5 checkpoints."""
from __future__ import annotations

import numpy as np
import pytest

from backends.registry import get_backend
from tests.backends.onnxrt.conftest import OPTS, SOURCES

FAMILIES = ("marian", "bart", "t5")


@pytest.fixture(scope="module")
def torch_outputs(tiny_model, onnx_workdir):
    from backends.model import ModelBundle

    cache = {}

    def get(family: str, num_beams: int):
        if (family, num_beams) not in cache:
            bundle = ModelBundle.load(tiny_model(family))
            be = get_backend("torch-fp32", **OPTS)
            be.prepare(bundle, onnx_workdir / family)
            enc = bundle.encode_sources(SOURCES, OPTS["max_source_length"])
            with be:
                cache[(family, num_beams)] = (be.generate(enc.input_ids, enc.attention_mask, num_beams=num_beams),
                                              be.first_step_logits(enc.input_ids, enc.attention_mask))
        return cache[(family, num_beams)]

    return get


@pytest.mark.parametrize("family", FAMILIES)
def test_fp32_greedy_equals_torch(prepared, torch_outputs, family):
    bundle, be = prepared(family, "onnx-fp32")
    enc = bundle.encode_sources(SOURCES, OPTS["max_source_length"])
    with be:
        out = be.generate(enc.input_ids, enc.attention_mask, num_beams=1)
        logits = be.first_step_logits(enc.input_ids, enc.attention_mask)
    ref, ref_logits = torch_outputs(family, 1)
    assert out == ref
    assert sum(len(o) for o in out) > 0  # something was generated
    assert logits.shape == ref_logits.shape == (len(SOURCES), bundle.conventions.vocab_size)
    np.testing.assert_allclose(logits, ref_logits, atol=2e-4, rtol=1e-3)


@pytest.mark.parametrize("family", FAMILIES)
def test_fp32_beam_search_equals_torch(prepared, torch_outputs, family):
    """Beam search reorders the KV cache through ``select``: a wrong layout breaks equality."""
    bundle, be = prepared(family, "onnx-fp32")
    enc = bundle.encode_sources(SOURCES, OPTS["max_source_length"])
    with be:
        out = be.generate(enc.input_ids, enc.attention_mask, num_beams=3)
    assert out == torch_outputs(family, 3)[0]


def test_fp32_artifacts_and_signature(prepared, onnx_workdir):
    bundle, be = prepared("marian", "onnx-fp32")
    art = be.artifacts
    assert set(art.files) == {"encoder", "decoder", "decoder_with_past"}
    assert art.bytes == sum(c["bytes"] for c in art.extra["components"].values()) > 0
    assert "Gather" in art.extra["components"]["encoder"]["ops"]
    sig = be.signature().to_dict()
    assert sig["runtime"] == "onnxruntime" and sig["threads"] == be.threads
    versions = sig["settings"]["versions"]
    assert {"onnxruntime", "optimum-onnx", "onnx", "transformers"} <= set(versions)
    assert sig["runtime_version"] == versions["onnxruntime"]
    assert sig["settings"]["session"]["intra_op_num_threads"] == be.threads
    assert sig["quantization"] == {}
    again = get_backend("onnx-fp32", **OPTS).prepare(bundle, onnx_workdir / "marian")
    assert again.reused and again.cache_key == art.cache_key


def test_threads_reach_the_session(tiny_model, prepared, onnx_workdir):
    bundle, _ = prepared("marian", "onnx-fp32")
    be = get_backend("onnx-fp32", threads=1, **OPTS)
    be.prepare(bundle, onnx_workdir / "marian")  # threads are not part of the cache key
    assert be.artifacts.reused
    with be:
        opts = be._sessions.sessions["encoder"].get_session_options()
        assert opts.intra_op_num_threads == 1 and opts.inter_op_num_threads == 1
    assert be.signature().threads == 1
