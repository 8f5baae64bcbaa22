"""T5 (and T5 v1.1 / Flan-T5): relative position bias, RMSNorm pre-norm, optional gated FFN,
no attention scaling, tied LM head scaled by d_model**-0.5, task prefix from the config."""
from __future__ import annotations

from dataclasses import replace

from backends.families.base import ModelFamily, NormalizedConfig
from backends.families.registry import register_family


@register_family
class T5Family(ModelFamily):
    name = "t5"
    model_types = ("t5",)
    hf_model_class = "T5ForConditionalGeneration"
    FIELD_MAP = {
        "d_model": "d_model",
        "encoder_layers": "num_layers",
        "decoder_layers": ("num_decoder_layers", "num_layers"),
        "encoder_heads": "num_heads",
        "decoder_heads": "num_heads",
        "encoder_ffn_dim": "d_ff",
        "decoder_ffn_dim": "d_ff",
        "vocab_size": "vocab_size",
        "head_dim": "d_kv",
        "activation": "dense_act_fn",
        "max_positions": "n_positions",
    }
    FIELD_KINDS = {**ModelFamily.FIELD_KINDS, "layer_norm_epsilon": "float", "relative_attention_num_buckets": "size",
                   "relative_attention_max_distance": "size"}
    positions = "relative"
    norm = "rms-pre"
    final_layer_norm = True
    layer_norm_eps = 1e-6
    final_logits_bias = False
    decoder_start_from_pad = True
    tokenizer_files = (("tokenizer.json",), ("spiece.model",))  # T5TokenizerFast or T5Tokenizer

    def check(self, config, checker, generation_config=None):
        super().check(config, checker, generation_config)
        proj = str(config.get("feed_forward_proj", "relu"))
        act = proj.split("-")[-1]
        checker.check(act in ("relu", "gelu", "gelu_new", "silu"),
                      f"feed_forward_proj '{proj}' is not supported (relu, gated-gelu, gated-silu are)")

    def normalize(self, config) -> NormalizedConfig:
        base = super().normalize(config)
        proj = str(config.get("feed_forward_proj", "relu"))
        gated = proj.startswith("gated-")
        act = config.get("dense_act_fn") or proj.split("-")[-1]
        if gated and act == "gelu":
            act = "gelu_new"  # HF maps gated-gelu to gelu_new
        tie = bool(config.get("tie_word_embeddings", True))
        return replace(
            base,
            activation=act,
            gated_ffn=gated,
            scale_embedding=False,
            layer_norm_eps=float(self._field(config, "layer_norm_epsilon", 1e-6)),
            tie_word_embeddings=tie,
            lm_head_scale=base.d_model ** -0.5 if tie else 1.0,
            relative_attention_num_buckets=int(self._field(config, "relative_attention_num_buckets", 32)),
            relative_attention_max_distance=int(self._field(config, "relative_attention_max_distance", 128)),
            attention_scale=False,
            max_positions=int(config.get("n_positions") or 512),
        )

    def default_source_prefix(self, config) -> str:
        """The task prefix when the checkpoint names exactly one translation task."""
        tasks = config.get("task_specific_params") or {}
        prefixes = {v.get("prefix") for k, v in tasks.items() if k.startswith("translation") and v.get("prefix")}
        return prefixes.pop() if len(prefixes) == 1 else ""
