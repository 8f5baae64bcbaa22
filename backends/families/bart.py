"""BART: learned positions offset by 2, LayerNorm on embeddings, post-LayerNorm, GELU."""
from __future__ import annotations

from backends.families.base import ModelFamily
from backends.families.registry import register_family


@register_family
class BartFamily(ModelFamily):
    name = "bart"
    model_types = ("bart",)
    hf_model_class = "BartForConditionalGeneration"
    positions = "learned"
    position_offset = 2
    norm = "post"
    layernorm_embedding = True
    tokenizer_files = (("tokenizer.json",), ("vocab.json", "merges.txt"))  # BartTokenizer[Fast]
