"""MarianMT (opus-mt): sinusoidal positions, post-LayerNorm, scaled embeddings, pad = decoder start."""
from __future__ import annotations

from backends.families.base import ModelFamily
from backends.families.registry import register_family


@register_family
class MarianFamily(ModelFamily):
    name = "marian"
    model_types = ("marian",)
    hf_model_class = "MarianMTModel"
    positions = "sinusoidal"
    norm = "post"
    tokenizer_files = (("source.spm", "target.spm", "vocab.json"),)  # MarianTokenizer (there is no fast one)

    def check(self, config, checker, generation_config=None):
        super().check(config, checker, generation_config)
        checker.check(not config.get("normalize_before", False),
                      "Marian with normalize_before=true (pre-norm) is not a layout seqquant knows")
        dvs = config.get("decoder_vocab_size")
        checker.check(dvs in (None, config.get("vocab_size")),
                      f"separate decoder vocabulary (decoder_vocab_size={dvs} != vocab_size) is not supported")
