import shutil

import pytest

from backends.errors import InputTooLongError, InvalidInputError, UnsupportedModelError
from backends.model import ModelBundle


def _copy(src, dst):
    shutil.copytree(src, dst)
    for p in dst.iterdir():
        p.chmod(0o644)
    return dst


def test_missing_dir(tmp_path):
    with pytest.raises(InvalidInputError, match="does not exist"):
        ModelBundle.load(tmp_path / "nope")


def test_not_a_checkpoint(tmp_path):
    with pytest.raises(InvalidInputError, match="config.json"):
        ModelBundle.load(tmp_path)


def test_truncated_weights_and_missing_tokenizer(tmp_path, tiny_model):
    d = _copy(tiny_model("marian"), tmp_path / "m")
    w = d / "model.safetensors"
    w.write_bytes(w.read_bytes()[:-100])
    (d / "source.spm").unlink()
    with pytest.raises(UnsupportedModelError) as err:
        ModelBundle.load(d)
    msg = str(err.value)
    assert "truncated" in msg and "tokenizer" in msg  # both reasons at once


def test_content_hash_changes_with_weights(tmp_path, tiny_model):
    d = _copy(tiny_model("marian"), tmp_path / "m")
    h1 = ModelBundle.load(d).content_hash
    (d / "generation_config.json").write_text('{"num_beams": 2}')
    assert ModelBundle.load(d).content_hash != h1


def test_encode_truncates_or_refuses(tiny_model):
    b = ModelBundle.load(tiny_model("marian"))
    long = " ".join(["word"] * 50)
    enc = b.encode_sources(["short one", long], max_length=10)
    assert enc.input_ids.shape == (2, 10) and enc.truncated == 1
    assert enc.input_ids[1, -1] == b.conventions.eos_token_id
    with pytest.raises(InputTooLongError, match="sentence 2 of this batch"):
        b.encode_sources(["short one", long], max_length=10, strict=True)


def test_long_source_counted_without_tokenizer_warning(capfd):
    """Sources are tokenized untruncated to count their length; transformers' own "longer than the
    specified maximum sequence length" warning must not leak next to seqquant's counted warning."""
    from tests.fixtures.tiny_models import DEFAULT_MODEL

    b = ModelBundle.load(DEFAULT_MODEL)
    long = " ".join(["word"] * (b.tokenizer.model_max_length + 10))
    enc = b.encode_sources([long], max_length=16)
    b.encode_targets([long])
    assert enc.truncated == 1
    captured = capfd.readouterr()
    assert "Token indices sequence length" not in captured.err + captured.out
