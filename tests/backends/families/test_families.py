import json

import pytest

from backends.errors import UnsupportedModelError
from backends.families import resolve_family, supported_model_types
from backends.model import ModelBundle


@pytest.mark.parametrize("family", ["marian", "bart", "t5"])
def test_tiny_families_resolve(tiny_model, family):
    bundle = ModelBundle.load(tiny_model(family))
    assert bundle.family_name == family
    n = bundle.normalized
    assert n.d_model == 32 and n.decoder_layers == 2
    conv = bundle.conventions
    assert conv.eos_token_id != conv.decoder_start_token_id or family == "bart"


def test_default_marian_conventions(default_model_dir):
    bundle = ModelBundle.load(default_model_dir)
    conv = bundle.conventions
    assert (conv.decoder_start_token_id, conv.pad_token_id, conv.eos_token_id) == (8000, 8000, 0)
    assert bundle.normalized.positions == "sinusoidal" and bundle.normalized.norm == "post"


def test_t5_specifics(tiny_model):
    bundle = ModelBundle.load(tiny_model("t5"))
    n = bundle.normalized
    assert n.positions == "relative" and n.norm == "rms-pre" and n.gated_ffn and not n.attention_scale
    assert n.relative_attention_num_buckets == 8
    # the task prefix comes from config.task_specific_params, and --source-prefix overrides it
    assert bundle.conventions.source_prefix == "translate English to German: "
    assert ModelBundle.load(tiny_model("t5"), source_prefix="").conventions.source_prefix == ""


@pytest.mark.parametrize("family,norm,forced_bos", [("mbart", "pre", True), ("pegasus", "pre", False),
                                                     ("m2m100", "pre", True)])
def test_pre_norm_families(tiny_model, family, norm, forced_bos):
    bundle = ModelBundle.load(tiny_model(family))
    assert bundle.family_name == family and bundle.normalized.norm == norm and bundle.normalized.final_layer_norm
    assert (bundle.conventions.forced_bos_token_id is not None) == forced_bos


def test_bart_forced_tokens(tiny_model):
    conv = ModelBundle.load(tiny_model("bart")).conventions
    assert conv.forced_bos_token_id == 0 and conv.forced_eos_token_id == 2


def test_unsupported_lists_every_reason():
    with pytest.raises(UnsupportedModelError) as err:
        resolve_family({"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"]})
    msg = str(err.value)
    assert "gpt2" in msg and "is_encoder_decoder" in msg
    for mt in ("marian", "t5", "bart"):
        assert mt in msg


def test_known_family_missing_fields_all_listed():
    with pytest.raises(UnsupportedModelError) as err:
        resolve_family({"model_type": "marian", "is_encoder_decoder": True})
    assert len(err.value.reasons) >= 5  # every missing field at once


def test_supported_types():
    assert {"marian", "bart", "mbart", "t5", "m2m_100", "pegasus"} <= set(supported_model_types())


def test_t5_unsupported_ffn():
    cfg = {"model_type": "t5", "d_model": 8, "num_layers": 1, "num_heads": 1, "vocab_size": 10,
           "feed_forward_proj": "gated-weird", "decoder_start_token_id": 0}
    with pytest.raises(UnsupportedModelError, match="feed_forward_proj"):
        resolve_family(json.loads(json.dumps(cfg)))
