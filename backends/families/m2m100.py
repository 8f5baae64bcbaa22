"""M2M100 / NLLB: sinusoidal positions offset by 2, pre-LayerNorm, forced target-language BOS."""
from __future__ import annotations

import json

from backends.families.base import ModelFamily
from backends.families.registry import register_family


@register_family
class M2M100Family(ModelFamily):
    name = "m2m100"
    model_types = ("m2m_100",)  # HF config.model_type for M2M100 and NLLB (dense)
    hf_model_class = "M2M100ForConditionalGeneration"
    positions = "sinusoidal"
    position_offset = 2
    norm = "pre"
    final_layer_norm = True
    tokenizer_files = (("sentencepiece.bpe.model", "vocab.json"),)  # M2M100Tokenizer (there is no fast one)
    nllb_tokenizer_files = (("tokenizer.json",), ("sentencepiece.bpe.model",))  # NllbTokenizer[Fast]

    def tokenizer_file_sets(self, path):
        """NLLB shares model_type m2m_100; tokenizer_config.json names its tokenizer class."""
        try:
            tok_cls = json.loads((path / "tokenizer_config.json").read_text(encoding="utf-8")).get("tokenizer_class")
        except (OSError, ValueError, AttributeError):
            tok_cls = None
        return self.nllb_tokenizer_files if str(tok_cls).startswith("Nllb") else self.tokenizer_files
