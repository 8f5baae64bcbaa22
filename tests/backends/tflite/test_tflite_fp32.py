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



def test_source_buckets_option():
    from backends.tflite.backend import source_buckets

    assert source_buckets("auto", 64) == (16, 32, 64)
    assert source_buckets("auto", 24) == (16, 24)
    assert source_buckets("auto", 10) == (10,)
    assert source_buckets("none", 64) == () and source_buckets(None, 64) == () and source_buckets([], 64) == ()
    assert source_buckets([8, 40, 8], 64) == (8, 40, 64)
    for bad in ([0, 8], [8, 65], ["8"], "some", 16, [True]):
        with pytest.raises(InvalidInputError, match="source_buckets"):
            source_buckets(bad, 64)
    with pytest.raises(InvalidInputError, match="source_buckets"):
        get_backend("tflite-fp32-split", source_buckets=[100])._check_options()


LONG = ("A man in a blue shirt and a woman in a long red dress walk their three small dogs along the "
        "sandy beach at sunset while children play.")


@pytest.mark.parametrize("family", ["marian", "t5"])
def test_source_buckets_equal_static_encoder(prepared, family):
    """The bucketed (dynamic-length) encoder gives the static encoder's outputs; a short and a
    long source run at different bucket widths, each on its own interpreter."""
    import json
    from pathlib import Path

    S = 48  # buckets 16, 32, 48 (T5's task prefix makes its sources long)
    sources = ["Dogs run.", LONG]
    bundle, dyn = prepared(family, "tflite-fp32-split", max_source_length=S)
    _, static = prepared(family, "tflite-fp32-split", max_source_length=S, source_buckets="none")
    assert dyn.source_buckets == (16, 32, 48) and static.source_buckets == ()
    widths = [int(bundle.encode_sources([s], S).attention_mask.sum()) for s in sources]
    buckets = [dyn._bucket(w) for w in widths]
    assert buckets[0] < buckets[1], widths  # the two sources use different buckets
    with dyn, static:
        for s, w in zip(sources, widths):
            enc = bundle.encode_sources([s], S)
            a, b = dyn.encode(enc.input_ids, enc.attention_mask), static.encode(enc.input_ids, enc.attention_mask)
            for name, value in b.tensors.items():
                got, want = np.asarray(a.tensors[name]), np.asarray(value)
                assert got.shape == want.shape, name
                if got.ndim == 4:  # cross K/V [B, H, S, Dh]: the real positions (padding is masked)
                    got, want = got[:, :, :w], want[:, :, :w]
                np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4, err_msg=name)
        assert sorted(dyn._enc_runs) == sorted(set(buckets))
        enc = bundle.encode_sources(sources, S)
        assert dyn.generate(enc.input_ids, enc.attention_mask) == static.generate(enc.input_ids, enc.attention_mask)
    g = json.loads((Path(dyn.artifacts.directory) / dyn.artifacts.files["generation"]).read_text())
    assert g["source_buckets"] == [16, 32, 48]
    assert all(i["shape"] == [-1, -1] for i in g["encoder"]["inputs"])
