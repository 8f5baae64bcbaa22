"""The pre-norm families (mBART, Pegasus, M2M100/NLLB) through every runtime's FP32 variant:
token for token equal to transformers' generate on tiny random models.

(Marian, BART and T5 are covered in each backend's own tests.)"""
from __future__ import annotations

import pytest

from backends.errors import UnsupportedModelError
from backends.model import ModelBundle
from backends.registry import available_backends, get_backend

SOURCES = ["A man in an orange hat starring at something.", "Two dogs play in the snow.",
           "A girl is eating an apple on a bench."]
FAMILIES = ("mbart", "pegasus", "m2m100")
RUNTIMES = ("tflite-fp32-split", "onnx-fp32", "ct2-fp32")


@pytest.fixture(scope="module")
def oracle(tiny_model, tmp_path_factory):
    out = {}
    for fam in FAMILIES:
        bundle = ModelBundle.load(tiny_model(fam))
        enc = bundle.encode_sources(SOURCES, 32)
        be = get_backend("torch-fp32", max_new_tokens=12, max_source_length=32)
        be.prepare(bundle, tmp_path_factory.mktemp(f"oracle-{fam}"))
        with be:
            out[fam] = (bundle, enc, be.generate(enc.input_ids, enc.attention_mask))
    return out


@pytest.mark.parametrize("backend", RUNTIMES)
@pytest.mark.parametrize("family", FAMILIES)
def test_fp32_runtime_equals_oracle(oracle, tmp_path, family, backend):
    if backend not in available_backends(installed_only=True):
        pytest.skip(f"{backend} not installed")
    bundle, enc, expected = oracle[family]
    be = get_backend(backend, max_new_tokens=12, max_source_length=32)
    if (family, backend) == ("pegasus", "ct2-fp32"):
        # known: CTranslate2 4.8's PegasusLoader asks for a layernorm_embedding HF Pegasus does not have.
        # If this starts converting, drop this branch: the equality below must then hold.
        with pytest.raises(UnsupportedModelError, match="layernorm_embedding"):
            be.prepare(bundle, tmp_path)
        return
    be.prepare(bundle, tmp_path)
    with be:
        assert be.generate(enc.input_ids, enc.attention_mask) == expected
