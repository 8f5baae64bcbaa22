"""mBART: BART with pre-LayerNorm, final layer norms and a forced target-language BOS."""
from __future__ import annotations

from backends.families.bart import BartFamily
from backends.families.registry import register_family


@register_family
class MBartFamily(BartFamily):
    name = "mbart"
    model_types = ("mbart",)
    hf_model_class = "MBartForConditionalGeneration"
    norm = "pre"
    final_layer_norm = True
    tokenizer_files = (("tokenizer.json",), ("sentencepiece.bpe.model",))
