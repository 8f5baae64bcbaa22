"""PyTorch state -> family-neutral numpy weights for the TF re-implementation.

One function, :func:`extract_weights`, reads a loaded transformers seq2seq model and returns
:class:`Seq2SeqWeights`: plain float32 numpy arrays in ``x @ W + b`` layout, with the
attention scaling folded into the query projections and the embedding scale folded into
the (input) embedding table. Everything family-specific about *where* a tensor lives is
here; *how* it is used (pre/post norm, activation, positions) comes from
:class:`backends.families.NormalizedConfig` in :mod:`backends.tflite.graphs`.

BART-like families (Marian, BART, mBART, Pegasus, M2M100) share the HF module layout
(``model.encoder.layers[i].self_attn.q_proj`` ...). T5 has its own layout and graphs
(:mod:`backends.tflite.t5`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from backends.errors import UnsupportedModelError

Linear = tuple[np.ndarray, np.ndarray]  # (W [in, out], b [out])
Norm = tuple[np.ndarray, np.ndarray]  # (gamma, beta)

BART_LIKE = ("marian", "bart", "mbart", "pegasus", "m2m_100")  # config.model_type values


@dataclass
class Seq2SeqWeights:
    embed: np.ndarray  # [V, D], embedding scale folded in
    enc_pos: np.ndarray | None  # [P, D], row p = position p (offset applied)
    dec_pos: np.ndarray | None
    enc_layers: list[dict[str, Any]]
    dec_layers: list[dict[str, Any]]
    lm_head: np.ndarray  # [D, V]
    logits_bias: np.ndarray  # [V]
    enc_ln_emb: Norm | None = None
    dec_ln_emb: Norm | None = None
    enc_final_ln: Norm | None = None
    dec_final_ln: Norm | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def _np(t) -> np.ndarray:
    return t.detach().cpu().float().numpy().copy()


def _linear(mod, scale: float = 1.0) -> Linear:
    w = _np(mod.weight).T * scale  # torch [out, in] -> [in, out]
    b = _np(mod.bias) * scale if mod.bias is not None else np.zeros(w.shape[1], np.float32)
    return np.ascontiguousarray(w, dtype=np.float32), b.astype(np.float32)


def _norm(mod) -> Norm | None:
    if mod is None:
        return None
    g = _np(mod.weight)
    b = _np(mod.bias) if getattr(mod, "bias", None) is not None else np.zeros_like(g)
    return g, b


def _position_table(module, offset: int, d_model: int) -> np.ndarray:
    """Row p of the returned table is the embedding of position p."""
    if hasattr(module, "weights") and not hasattr(module, "weight"):  # M2M100 sinusoidal buffer
        table = _np(module.weights)
    else:
        table = _np(module.weight)
    if table.shape[1] != d_model:
        raise UnsupportedModelError("position table", [f"width {table.shape[1]} != d_model {d_model}"])
    return np.ascontiguousarray(table[offset:])


def _attention(attn, head_dim: int, scaled: bool) -> dict[str, Linear]:
    s = head_dim ** -0.5 if scaled else 1.0
    return {"q": _linear(attn.q_proj, s), "k": _linear(attn.k_proj), "v": _linear(attn.v_proj),
            "o": _linear(attn.out_proj)}


def extract_weights(torch_model, cfg) -> Seq2SeqWeights:
    """Copy the weights of a transformers seq2seq model (``cfg``: NormalizedConfig)."""
    family = cfg.model_type
    if family not in BART_LIKE:
        raise UnsupportedModelError(
            f"The TFLite re-implementation for model_type '{family}'",
            [f"only {', '.join(BART_LIKE)} and t5 are implemented"],
            hint="Use the torch, onnxruntime or ctranslate2 backends for this model.")
    core = torch_model.model
    enc, dec = core.encoder, core.decoder
    d = cfg.d_model
    scale = math.sqrt(d) if cfg.scale_embedding else 1.0
    tokens = _np(core.shared.weight)
    embed = (tokens * scale).astype(np.float32)
    enc_layers, dec_layers = [], []
    for layer in enc.layers:
        enc_layers.append({
            "self": _attention(layer.self_attn, cfg.head_dim, cfg.attention_scale),
            "ln_self": _norm(layer.self_attn_layer_norm),
            "fc1": _linear(layer.fc1), "fc2": _linear(layer.fc2),
            "ln_ffn": _norm(layer.final_layer_norm),
        })
    for layer in dec.layers:
        dec_layers.append({
            "self": _attention(layer.self_attn, cfg.head_dim, cfg.attention_scale),
            "ln_self": _norm(layer.self_attn_layer_norm),
            "cross": _attention(layer.encoder_attn, cfg.head_dim, cfg.attention_scale),
            "ln_cross": _norm(layer.encoder_attn_layer_norm),
            "fc1": _linear(layer.fc1), "fc2": _linear(layer.fc2),
            "ln_ffn": _norm(layer.final_layer_norm),
        })
    head = torch_model.get_output_embeddings()
    lm_head = np.ascontiguousarray(_np(head.weight).T)  # [D, V]
    bias = getattr(torch_model, "final_logits_bias", None)
    logits_bias = _np(bias).reshape(-1) if bias is not None else np.zeros(lm_head.shape[1], np.float32)
    if getattr(head, "bias", None) is not None:
        logits_bias = logits_bias + _np(head.bias)
    return Seq2SeqWeights(
        embed=embed,
        enc_pos=_position_table(enc.embed_positions, cfg.position_offset, d),
        dec_pos=_position_table(dec.embed_positions, cfg.position_offset, d),
        enc_layers=enc_layers, dec_layers=dec_layers,
        lm_head=lm_head, logits_bias=logits_bias.astype(np.float32),
        enc_ln_emb=_norm(getattr(enc, "layernorm_embedding", None)) if cfg.layernorm_embedding else None,
        dec_ln_emb=_norm(getattr(dec, "layernorm_embedding", None)) if cfg.layernorm_embedding else None,
        enc_final_ln=_norm(getattr(enc, "layer_norm", None)) if cfg.final_layer_norm else None,
        dec_final_ln=_norm(getattr(dec, "layer_norm", None)) if cfg.final_layer_norm else None,
    )
