"""T5 in the TFLite split graphs: relative position bias, RMSNorm pre-norm, (gated) FFN.

What differs from the BART-like graphs in :mod:`backends.tflite.graphs`, and only that:

* no position embeddings; instead a learned *relative position bias* (layer 0 of each stack,
  shared by all its layers) is added to the self-attention scores. Both biases are constants
  of the static shapes: the encoder's is ``[H, S, S]``; the decoder step's is a ``[T, H, T+1]``
  table gathered at each row's position (slot ``T`` is the step's own key, relative 0);
* RMSNorm (no mean, no bias) before every block, final norms on both stacks;
* no ``1/sqrt(head_dim)`` scaling of the queries; no biases in any projection;
* FFN ``wo(act(wi(h)))`` or, gated (T5 v1.1 / Flan), ``wo(act(wi_0(h)) * wi_1(h))``;
* a tied LM head scaled by ``d_model ** -0.5`` (``NormalizedConfig.lm_head_scale``).

Cross-attention has no position bias, so cross K/V on the encoder side work unchanged.
"""
from __future__ import annotations

import numpy as np

from backends.tflite.graphs import Seq2SeqGraphs, _activation
from backends.tflite.weights import Seq2SeqWeights


def _np(t) -> np.ndarray:
    return t.detach().cpu().float().numpy().copy()


def _lin(mod) -> tuple[np.ndarray, np.ndarray]:
    w = np.ascontiguousarray(_np(mod.weight).T, dtype=np.float32)  # [in, out]
    return w, np.zeros(w.shape[1], np.float32)


def _rms(mod) -> tuple[np.ndarray, np.ndarray]:
    g = _np(mod.weight)
    return g, np.zeros_like(g)


def _attn(a) -> dict:
    return {"q": _lin(a.q), "k": _lin(a.k), "v": _lin(a.v), "o": _lin(a.o)}


def _ffn(ff) -> dict:
    d = ff.DenseReluDense
    if hasattr(d, "wi_0"):
        return {"fc1": _lin(d.wi_0), "fc1_gate": _lin(d.wi_1), "fc2": _lin(d.wo)}
    return {"fc1": _lin(d.wi), "fc2": _lin(d.wo)}


def relative_bias(table: np.ndarray, query: np.ndarray, key: np.ndarray, bidirectional: bool,
                  num_buckets: int, max_distance: int) -> np.ndarray:
    """``[H, len(query), len(key)]`` bias from a ``[num_buckets, H]`` table (transformers' bucketing)."""
    import torch
    from transformers.models.t5.modeling_t5 import T5Attention

    rel = torch.as_tensor(key[None, :] - query[:, None], dtype=torch.long)
    buckets = T5Attention._relative_position_bucket(rel, bidirectional=bidirectional, num_buckets=num_buckets,
                                                    max_distance=max_distance).numpy()
    return np.ascontiguousarray(table[buckets].transpose(2, 0, 1), dtype=np.float32)


def extract_t5_weights(torch_model, cfg) -> Seq2SeqWeights:
    enc_layers, dec_layers = [], []
    for block in torch_model.encoder.block:
        sa, ff = block.layer[0], block.layer[-1]
        enc_layers.append({"self": _attn(sa.SelfAttention), "ln_self": _rms(sa.layer_norm),
                           "ln_ffn": _rms(ff.layer_norm), **_ffn(ff)})
    for block in torch_model.decoder.block:
        sa, ca, ff = block.layer[0], block.layer[1], block.layer[2]
        dec_layers.append({"self": _attn(sa.SelfAttention), "ln_self": _rms(sa.layer_norm),
                           "cross": _attn(ca.EncDecAttention), "ln_cross": _rms(ca.layer_norm),
                           "ln_ffn": _rms(ff.layer_norm), **_ffn(ff)})
    lm_head = np.ascontiguousarray(_np(torch_model.lm_head.weight).T)
    return Seq2SeqWeights(
        embed=_np(torch_model.shared.weight), enc_pos=None, dec_pos=None,
        enc_layers=enc_layers, dec_layers=dec_layers, lm_head=lm_head,
        logits_bias=np.zeros(lm_head.shape[1], np.float32),
        enc_final_ln=_rms(torch_model.encoder.final_layer_norm),
        dec_final_ln=_rms(torch_model.decoder.final_layer_norm),
        extra={"enc_rel": _np(torch_model.encoder.block[0].layer[0].SelfAttention.relative_attention_bias.weight),
               "dec_rel": _np(torch_model.decoder.block[0].layer[0].SelfAttention.relative_attention_bias.weight)},
    )


class T5Graphs(Seq2SeqGraphs):
    """The T5 variant of the two graphs (same inputs/outputs as the BART-like ones)."""

    def __init__(self, weights, cfg, spec):
        # The base constructor expects position tables; give it empty ones and skip its
        # positions check by presenting the config's positions as "learned" to it.
        from dataclasses import replace

        S, T = spec.source_length, spec.cache_length
        zeros = np.zeros((max(S, T), cfg.d_model), np.float32)
        shim = replace(weights, enc_pos=zeros, dec_pos=zeros)
        super().__init__(shim, replace(cfg, positions="learned"), spec)
        self.w, self.cfg = weights, cfg
        self.act = _activation(self.tf, cfg.activation)
        nb, md = cfg.relative_attention_num_buckets, cfg.relative_attention_max_distance
        s = np.arange(S)
        self.enc_bias = self.c(relative_bias(weights.extra["enc_rel"], s, s, True, nb, md)[None])  # [1,H,S,S]
        # decoder: row p = query position p over key slots 0..T-1 (cache) and T (itself)
        keys = np.arange(T + 1)
        table = np.stack([relative_bias(weights.extra["dec_rel"], np.array([p]),
                                        np.where(keys == T, p, keys), False, nb, md)[:, 0, :]
                          for p in range(T)])  # [T, H, T+1]
        self.dec_bias = self.c(table)

    # ---- what differs ----------------------------------------------------------------
    def layer_norm(self, x, norm):
        tf = self.tf
        var = tf.reduce_mean(x * x, axis=-1, keepdims=True)
        return x * tf.math.rsqrt(var + self.cfg.layer_norm_eps) * self.c(norm[0])

    def residual_block(self, x, norm, fn):
        return x + fn(self.norm(x, norm))

    def ffn(self, layer):
        if "fc1_gate" not in layer:
            return super().ffn(layer)
        return lambda h: self.linear(self.act(self.linear(h, layer["fc1"], "fc1"))
                                     * self.linear(h, layer["fc1_gate"], "fc1_gate"), layer["fc2"], "fc2")

    def embed_source(self, ids):
        return self.tf.reshape(self.tf.gather(self.embed, ids), [-1, self.D])

    def embed_target(self, ids, pos):
        return self.tf.gather(self.embed, ids[:, 0])

    def encoder_score_bias(self, S):
        if self.spec.dynamic_source:
            return self.enc_bias[:, :, :S, :S]
        return self.enc_bias  # [1, H, S, S]

    def decoder_score_bias(self, pos):
        return self.tf.expand_dims(self.tf.gather(self.dec_bias, pos), 2)  # [B, H, 1, T+1]
