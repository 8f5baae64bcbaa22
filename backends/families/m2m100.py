"""M2M100 / NLLB: sinusoidal positions offset by 2, pre-LayerNorm, forced target-language BOS."""
from __future__ import annotations

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
    tokenizer_files = ("tokenizer.json", "sentencepiece.bpe.model", "spm.model")
