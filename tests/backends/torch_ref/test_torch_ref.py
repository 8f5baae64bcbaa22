import gzip

import pytest

from backends.model import ModelBundle
from backends.registry import get_backend


def test_first_step_logits_shape(tiny_model, tmp_path):
    bundle = ModelBundle.load(tiny_model("marian"))
    be = get_backend("torch-fp32-split")
    be.prepare(bundle, tmp_path)
    enc = bundle.encode_sources(["one sentence.", "another, unrelated one!"], 16)
    with be:
        logits = be.first_step_logits(enc.input_ids, enc.attention_mask)
    assert logits.shape == (2, 8001) and logits.dtype.name == "float32"
    assert abs(logits[0] - logits[1]).max() > 0  # source-dependent


@pytest.mark.slow
@pytest.mark.e2e
def test_real_model_split_equals_fused(default_model_dir, default_data_dir, tmp_path):
    bundle = ModelBundle.load(default_model_dir)
    with gzip.open(default_data_dir / "test_2016_flickr.en.gz", "rt") as fh:
        src = [next(fh).strip() for _ in range(64)]
    outs = {}
    for name in ("torch-fp32", "torch-fp32-split"):
        be = get_backend(name)
        be.prepare(bundle, tmp_path)
        with be:
            outs[name] = []
            for i in range(0, len(src), 32):
                enc = bundle.encode_sources(src[i:i + 32], 64)
                outs[name] += be.generate(enc.input_ids, enc.attention_mask, num_beams=4)
    assert outs["torch-fp32"] == outs["torch-fp32-split"]


@pytest.mark.parametrize("num_beams", [1, 2])
def test_generate_raises_on_non_finite_logits(tiny_model, tmp_path, num_beams):
    """transformers' generate would turn NaN logits into an empty translation; torch-fp32 says why instead."""
    from backends.errors import NonFiniteLogitsError
    from tests.fixtures.tiny_models import overflowing_copy

    bundle = ModelBundle.load(overflowing_copy(tiny_model("marian"), tmp_path / "m"))
    be = get_backend("torch-fp32")
    be.prepare(bundle, tmp_path / "art")
    enc = bundle.encode_sources(["A dog runs.", "Two men talk."], 16)
    with be, pytest.raises(NonFiniteLogitsError, match=r"torch-fp32: generate produced non-finite logits .* NaN"):
        be.generate(enc.input_ids, enc.attention_mask, max_new_tokens=6, num_beams=num_beams)
