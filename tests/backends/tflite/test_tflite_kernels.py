"""Which LiteRT kernels run the artifacts (``kernels``: xnnpack | builtin | reference): a run option
that reuses the artifacts, is recorded in the signature and really changes the interpreter."""
from __future__ import annotations

import numpy as np
import pytest

from backends.errors import InvalidInputError
from backends.registry import get_backend
from tests.backends.tflite.conftest import CALIBRATION, OPTS, SOURCES, translate

INT8 = {"calibration_sources": 8}


def _variant(be, name: str, **options):
    """The same backend class under another name (what a matrix [variants] table builds)."""
    return type(be)(name=name, **{**be.options, **options})


def _delegate_nodes(backend) -> int:
    """Nodes a delegate added to the decoder interpreter (0: only LiteRT's own kernels run)."""
    interp = backend._dec.interp  # noqa: SLF001 - the live interpreter is what is under test
    before = len(interp._get_ops_details())  # noqa: SLF001
    interp.allocate_tensors()
    return interp._interpreter.NumNodes() - before  # noqa: SLF001


def _first_step_logits(bundle, backend) -> np.ndarray:
    enc = bundle.encode_sources(SOURCES, backend.max_source_length)
    with backend:
        state = backend.encode(enc.input_ids, enc.attention_mask)
        start = np.full((len(SOURCES), 1), bundle.conventions.decoder_start_token_id, np.int64)
        logits, _ = backend.decode_step(state, start, None)
        return logits


@pytest.mark.parametrize("kernels", ["builtin", "reference"])
def test_kernels_reuse_artifacts_and_change_the_interpreter(prepared, tflite_workdir, kernels):
    bundle, base = prepared("marian", "tflite-int8", **INT8)
    other = _variant(base, f"tflite-int8-{kernels}", kernels=kernels)
    art = other.prepare(bundle, tflite_workdir / "marian", CALIBRATION)
    assert art.reused and art.cache_key == base.artifacts.cache_key
    assert art.directory == base.artifacts.directory  # shared under the other name, not rebuilt
    with base:
        assert _delegate_nodes(base) > 0  # LiteRT's default: XNNPACK takes the ops it supports
    with other:
        assert _delegate_nodes(other) == 0
    sig = other.signature()
    assert sig.settings["kernels"] == kernels and f"|k:{kernels}|" in sig.short()
    assert base.signature().settings["kernels"] == "xnnpack"
    out = translate(bundle, other)
    assert len(out) == len(SOURCES) and all(0 <= t < bundle.normalized.vocab_size for r in out for t in r)


def test_fp32_kernels_agree(prepared, tflite_workdir):
    """FP32: the reference kernels compute the same logits as XNNPACK up to float rounding."""
    bundle, base = prepared("marian", "tflite-fp32-split")
    ref = _variant(base, "tflite-fp32-ref", kernels="reference")
    ref.prepare(bundle, tflite_workdir / "marian")
    a, b = _first_step_logits(bundle, base), _first_step_logits(bundle, ref)
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)
    assert translate(bundle, base) == translate(bundle, ref)


def test_int8_kernels_stay_within_quantization_error(prepared, tflite_workdir):
    """INT8 logits from the reference kernels and XNNPACK differ only by rounding (a few output steps)."""
    bundle, base = prepared("marian", "tflite-int8", **INT8)
    ref = _variant(base, "tflite-int8-ref", kernels="reference")
    ref.prepare(bundle, tflite_workdir / "marian", CALIBRATION)
    a, b = _first_step_logits(bundle, base), _first_step_logits(bundle, ref)
    spread = float(a.max() - a.min())
    assert np.abs(a - b).max() <= 0.05 * spread


def test_unknown_kernels_is_a_clear_error(tiny_model, tmp_path):
    from backends.model import ModelBundle

    be = get_backend("tflite-fp32-split", kernels="gpu", **OPTS)
    with pytest.raises(InvalidInputError, match="kernels must be one of"):
        be.prepare(ModelBundle.load(tiny_model("marian")), tmp_path)
