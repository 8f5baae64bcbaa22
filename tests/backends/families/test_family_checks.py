"""ModelFamily.check: typed fields and special token ids (with generation_config overrides), the
required tokenizer files per family; every reason in one error."""
import json

import pytest

from backends.errors import ConfigurationChecker, UnsupportedModelError
from backends.families import resolve_family
from backends.families.registry import families

MARIAN = {"model_type": "marian", "is_encoder_decoder": True, "d_model": 8, "encoder_layers": 1, "decoder_layers": 1,
          "encoder_attention_heads": 2, "decoder_attention_heads": 2, "vocab_size": 10, "eos_token_id": 0,
          "pad_token_id": 9, "decoder_start_token_id": 9}
T5 = {"model_type": "t5", "d_model": 8, "num_layers": 1, "num_heads": 2, "d_kv": 4, "vocab_size": 10,
      "eos_token_id": 1, "pad_token_id": 0}


def reasons(config, generation=None) -> list[str]:
    with pytest.raises(UnsupportedModelError) as err:
        resolve_family(json.loads(json.dumps(config)), generation_config=generation)
    return err.value.reasons


def test_valid_configs_resolve():
    assert resolve_family(MARIAN).name == "marian" and resolve_family(T5).name == "t5"


@pytest.mark.parametrize("key", ["eos_token_id", "decoder_start_token_id"])
def test_missing_special_id(key):
    cfg = {k: v for k, v in MARIAN.items() if k != key}
    assert reasons(cfg) == [f"config.json lacks {key}"]


@pytest.mark.parametrize("value", ["x", True, -1, 2.0, [], ["x"]])
def test_bad_eos_in_generation_config(value):
    assert reasons(MARIAN, {"eos_token_id": value}) == [
        f"generation_config.json 'eos_token_id' must be a non-negative integer token id, got {value!r}"]


def test_generation_config_overrides_and_eos_list():
    cfg = {k: v for k, v in MARIAN.items() if k not in ("eos_token_id", "decoder_start_token_id")}
    family = resolve_family(cfg, generation_config={"eos_token_id": [0, 1], "decoder_start_token_id": 9})
    conv = family.conventions(cfg, {"eos_token_id": [0, 1], "decoder_start_token_id": 9})
    assert (conv.eos_token_id, conv.decoder_start_token_id, conv.pad_token_id) == (0, 9, 9)


def test_ids_outside_vocabulary():
    assert reasons({**MARIAN, "pad_token_id": 10, "decoder_start_token_id": 12}) == [
        "config.json 'decoder_start_token_id' 12 is outside the vocabulary (vocab_size 10)",
        "config.json 'pad_token_id' 10 is outside the vocabulary (vocab_size 10)"]


def test_t5_decoder_start_defaults_to_pad():
    family = resolve_family(T5)
    assert family.conventions(T5, {}).decoder_start_token_id == 0
    cfg = {k: v for k, v in T5.items() if k != "pad_token_id"}
    msg = reasons(cfg)
    assert len(msg) == 1 and msg[0].startswith("config.json lacks pad_token_id") and "decoder_start" in msg[0]
    assert resolve_family(cfg, generation_config={"decoder_start_token_id": 0}).name == "t5"


def test_field_types_all_listed_at_once():
    cfg = {**MARIAN, "d_model": "abc", "encoder_layers": 0, "vocab_size": True, "scale_embedding": "yes",
           "activation_function": 3, "max_position_embeddings": 1.5}
    got = reasons(cfg, {"min_length": -1, "length_penalty": "x", "forced_bos_token_id": "de"})
    for expected in ("config.json 'd_model' must be a positive integer, got 'abc'",
                     "config.json 'encoder_layers' must be a positive integer, got 0",
                     "config.json 'vocab_size' must be a positive integer, got True",
                     "config.json 'scale_embedding' must be true or false, got 'yes'",
                     "config.json 'activation_function' must be a string, got 3",
                     "config.json 'max_position_embeddings' must be a positive integer, got 1.5",
                     "generation_config.json 'min_length' must be a non-negative integer, got -1",
                     "generation_config.json 'length_penalty' must be a number, got 'x'",
                     "generation_config.json 'forced_bos_token_id' must be a non-negative integer token id, got 'de'"):
        assert expected in got
    assert len(got) == 9


def test_t5_field_names_and_floats():
    got = reasons({**T5, "num_heads": "2", "d_kv": 0, "layer_norm_epsilon": "1e-6"})
    assert got == ["config.json 'num_heads' must be a positive integer, got '2'",
                   "config.json 'd_kv' must be a positive integer, got 0",
                   "config.json 'layer_norm_epsilon' must be a positive number, got '1e-6'"]


@pytest.mark.parametrize("config", [[1, 2], "marian", None])
def test_config_not_an_object(config):
    with pytest.raises(UnsupportedModelError, match="not a JSON object"):
        resolve_family(config)


def test_unhashable_model_type():
    with pytest.raises(UnsupportedModelError, match="not a supported family"):
        resolve_family({"model_type": ["marian"]})


def test_caller_checker_collects_without_raising():
    checker = ConfigurationChecker("m")
    assert resolve_family({**MARIAN, "d_model": None}, checker=checker).name == "marian"
    assert checker.reasons == ["config.json lacks 'd_model' (d_model)"]
    assert resolve_family({"model_type": "gpt2"}, checker=checker) is None and len(checker.reasons) == 3


# family -> (files that make a loadable tokenizer, files that do not -> the missing files named)
TOKENIZERS = {
    "marian": ([("source.spm", "target.spm", "vocab.json")], [(("source.spm",), "target.spm, vocab.json"),
                                                               (("tokenizer.json",), None)]),
    "bart": ([("tokenizer.json",), ("vocab.json", "merges.txt")], [(("vocab.json",), "merges.txt")]),
    "mbart": ([("tokenizer.json",), ("sentencepiece.bpe.model",)], [(("spiece.model",), None)]),
    "t5": ([("tokenizer.json",), ("spiece.model",)], [(("sentencepiece.bpe.model",), None)]),
    "pegasus": ([("tokenizer.json",), ("spiece.model",)], [(("source.spm",), None)]),
    "m2m_100": ([("sentencepiece.bpe.model", "vocab.json")], [(("sentencepiece.bpe.model",), "vocab.json"),
                                                              (("tokenizer.json",), None)]),
}


def _tok_reasons(tmp_path, model_type, files, tokenizer_class=None):
    d = tmp_path / ("_".join(files) or "empty")
    d.mkdir()
    for f in files:
        (d / f).write_text("x")
    if tokenizer_class:
        (d / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": tokenizer_class}))
    checker = ConfigurationChecker("m")
    families[model_type]().check_tokenizer_files(d, checker)
    return checker.reasons


@pytest.mark.parametrize("model_type", sorted(TOKENIZERS))
def test_tokenizer_files(tmp_path, model_type):
    good, bad = TOKENIZERS[model_type]
    for files in good:
        assert _tok_reasons(tmp_path, model_type, files) == []
    for files, missing in bad:
        (msg,) = _tok_reasons(tmp_path, model_type, files)
        name = families[model_type].name
        assert msg.startswith(f"incomplete tokenizer: missing {missing} (the {name} family needs " if missing
                              else f"no tokenizer files: the {name} family needs ")
    (msg,) = _tok_reasons(tmp_path, model_type, ())
    assert msg.startswith("no tokenizer files") and all(f in msg for fs in good for f in fs)


def test_nllb_tokenizer_files(tmp_path):
    assert _tok_reasons(tmp_path, "m2m_100", ("tokenizer.json",), "NllbTokenizer") == []
    assert _tok_reasons(tmp_path, "m2m_100", ("sentencepiece.bpe.model",), "NllbTokenizerFast") == []
