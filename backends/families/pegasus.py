"""Pegasus: sinusoidal positions, pre-LayerNorm with final norms, scaled embeddings."""
from __future__ import annotations

from backends.families.base import ModelFamily
from backends.families.registry import register_family


@register_family
class PegasusFamily(ModelFamily):
    name = "pegasus"
    model_types = ("pegasus",)
    hf_model_class = "PegasusForConditionalGeneration"
    positions = "sinusoidal"
    norm = "pre"
    final_layer_norm = True
    tokenizer_files = (("tokenizer.json",), ("spiece.model",))
