"""tflite-fp32-split equals the PyTorch oracle token for token on tiny random models."""
from __future__ import annotations

import numpy as np
import pytest

from backends.errors import InvalidInputError
from backends.registry import get_backend
from tests.backends.tflite.conftest import OPTS, SOURCES, translate

FAMILIES = ["marian", "bart", "t5"]


@pytest.fixture(scope="module")
def torch_outputs(tiny_model):
    from backends.model import ModelBundle

    cache = {}

    def get(family, num_beams=1):
        if (family, num_beams) not in cache:
            bundle = ModelBundle.load(tiny_model(family))
            be = get_backend("torch-fp32", **OPTS)
            be.prepare(bundle, tiny_model(family).parent / "torch-work")
            cache[family, num_beams] = translate(bundle, be, num_beams=num_beams)
        return cache[family, num_beams]

    return get


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("cross_kv", ["encoder", "decoder"])
def test_fp32_split_equals_torch_greedy(prepared, torch_outputs, family, cross_kv):
    bundle, be = prepared(family, "tflite-fp32-split", cross_kv=cross_kv)
    ours = translate(bundle, be)
    ref = torch_outputs(family)
    assert any(ref), "the tiny model produced only empty outputs; the comparison would be vacuous"
    assert ours == ref


@pytest.mark.parametrize("family", FAMILIES)
def test_fp32_split_equals_torch_beam(prepared, torch_outputs, family):
    bundle, be = prepared(family, "tflite-fp32-split")
    assert translate(bundle, be, num_beams=3) == torch_outputs(family, 3)


def test_artifacts_and_audit(prepared):
    bundle, be = prepared("marian", "tflite-fp32-split")
    files = be.artifacts.files
    assert {"encoder", "decoder", "generation"} <= set(files)
    ops = be.artifacts.extra["ops"]
    assert ops["decoder"]["num_ops"] > 0 and ops["decoder"]["full_int8"] is False
    assert any("float32" in o["outputs"] for o in ops["decoder"]["ops"])
    assert be.boundary_modes() == ()


def test_step_without_cache_replays_prefix(prepared):
    """decode_step with a whole prefix and no cache equals the cached step-by-step path."""
    bundle, be = prepared("marian", "tflite-fp32-split")
    enc = bundle.encode_sources(SOURCES[:3], be.max_source_length)
    start = bundle.conventions.decoder_start_token_id
    with be:
        state = be.encode(enc.input_ids, enc.attention_mask)
        prefix = np.full((3, 1), start, np.int64)
        cache = None
        for _ in range(4):
            logits, cache = be.decode_step(state, prefix, cache)
            prefix = np.concatenate([prefix, logits.argmax(-1)[:, None]], axis=1)
        cached, _ = be.decode_step(state, prefix, cache)
        replayed, _ = be.decode_step(state, prefix, None)
    np.testing.assert_allclose(cached, replayed, rtol=1e-5, atol=1e-5)


def test_user_errors(prepared):
    bundle, be = prepared("marian", "tflite-fp32-split")
    with pytest.raises(InvalidInputError):
        get_backend("tflite-fp32-split", quantization="int4")._check_options()
    with pytest.raises(InvalidInputError):
        get_backend("tflite-fp32-split", no_such_option=1)
    too_long = np.full((1, be.max_source_length + 5), 5, np.int64)
    with be:
        with pytest.raises(InvalidInputError, match="static source length"):
            be.encode(too_long, np.ones_like(too_long))
        enc = bundle.encode_sources(SOURCES[:1], be.max_source_length)
        with pytest.raises(InvalidInputError):
            be.generate(enc.input_ids, enc.attention_mask, max_new_tokens=be.max_new_tokens + 5)

