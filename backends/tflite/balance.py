"""Residual-stream balancing for post-LN graphs: an exact rewrite that makes the int8 stream cheaper.

In a post-LN Transformer (Marian, BART) the residual stream is requantized five times per sub-block
in an int8 graph (the residual sum, ``x - mean``, ``(x - mean) * rsqrt(var)``, ``* gamma``,
``+ beta``), and its per-tensor int8 range is set by a few outlier channels. This module rewrites
the weights so that the graph carries the stream in a per-channel *basis* ``b`` instead:

* every stream tensor is ``x / b`` (``b`` large on the outlier channels: a narrower int8 range);
* a layer norm with input basis ``b`` computes its statistics of ``x = b * x~`` exactly
  (:class:`BalancedNorm`; the mean and the mean correction are 1-column fully connected layers whose
  per-channel int8 weights are exact) and returns ``n~ = (x~ - mean/b) * rsqrt(var + eps)``, i.e.
  ``n / b``; ``gamma`` and ``beta`` are never applied as ops: the LN output ``y = b' * n~ + beta``
  with ``b' = b * gamma`` is folded into every consumer (the next projections' weights and biases, the
  next residual branch's output projection, the LM head, the cross-attention K/V projections);
* the embedding tables are divided by the initial basis ``b0``.

In exact arithmetic the rewritten graph computes the same function (the residual branches' output
projections are scaled by ``1 / b'`` and absorb ``beta``, so the next residual sum is ``x / b'``).
Only the int8 graphs use it; the FP32 graphs are untouched.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import numpy as np

from backends.errors import UnsupportedModelError


@dataclass(frozen=True)
class BalancedNorm:
    """A post-LN layer norm whose input is carried as ``x / basis`` (gamma/beta folded elsewhere)."""

    basis: np.ndarray  # [D], > 0


def _fold_in(lin, basis: np.ndarray, offset: np.ndarray):
    """A projection of ``y = basis * n~ + offset``, rewritten to take ``n~``."""
    w, b = lin
    return ((basis[:, None] * w).astype(np.float32), (b + offset @ w).astype(np.float32))


def _fold_out(lin, basis: np.ndarray, offset: np.ndarray):
    """A residual branch's last projection, rewritten to output ``(f + offset) / basis``."""
    w, b = lin
    return ((w / basis[None, :]).astype(np.float32), ((b + offset) / basis).astype(np.float32))


class _Stream:
    """Tracks the representation ``y = basis * y~ + offset`` of the current sub-block input."""

    def __init__(self, basis: np.ndarray):
        self.basis = basis.astype(np.float64)
        self.offset = np.zeros_like(self.basis)

    def norm(self, norm) -> BalancedNorm:
        """The residual sum (in the current basis) goes through ``norm``; the output basis moves."""
        gamma, beta = (np.asarray(a, np.float64) for a in norm)
        out = BalancedNorm(self.basis.astype(np.float32))
        if np.any(gamma <= 0):
            raise UnsupportedModelError("stream balancing", ["a layer norm has a gamma <= 0"])
        self.basis = self.basis * gamma
        self.offset = beta
        return out

    def fold_in(self, lin):
        return _fold_in(lin, self.basis, self.offset)

    def fold_out(self, lin):
        return _fold_out(lin, self.basis, self.offset)


def stream_unsupported(weights, cfg) -> str | None:
    """Why :func:`balance_weights` cannot rewrite this model (None: it can)."""
    if cfg.norm != "post":
        return f"{cfg.norm} layer norms (only post-LN stacks are balanced)"
    if weights.enc_final_ln is not None or weights.dec_final_ln is not None:
        return "final layer norms"
    return None


def balance_weights(weights, cfg, basis: np.ndarray):
    """Rewrite post-LN ``Seq2SeqWeights`` to carry the residual streams in ``basis`` (see module doc).

    ``basis`` [D] > 0 is the initial basis of both stacks (they share the embedding table).
    Returns new weights whose layer norms are :class:`BalancedNorm`."""
    reason = stream_unsupported(weights, cfg)
    if reason:
        raise UnsupportedModelError("stream balancing", [reason])
    basis = np.asarray(basis, np.float64)
    if basis.shape != (weights.embed.shape[1],) or np.any(basis <= 0):
        raise UnsupportedModelError("stream balancing", ["the basis must be [d_model] and > 0"])
    w = copy.deepcopy(weights)
    w.embed = (weights.embed / basis[None, :]).astype(np.float32)
    for name in ("enc_pos", "dec_pos"):
        table = getattr(weights, name)
        if table is not None:
            setattr(w, name, (table / basis[None, :]).astype(np.float32))

    def stack(layers, emb_norm, blocks):
        s = _Stream(basis)
        norm_out = s.norm(emb_norm) if emb_norm is not None else None
        for layer in layers:
            for attn_key, ln_key, kind in blocks:
                if kind == "ffn":
                    layer["fc1"] = s.fold_in(layer["fc1"])
                    layer["fc2"] = s.fold_out(layer["fc2"])
                else:
                    att = layer[attn_key]
                    for k in ("q",) if kind == "cross" else ("q", "k", "v"):
                        att[k] = s.fold_in(att[k])
                    att["o"] = s.fold_out(att["o"])
                layer[ln_key] = s.norm(layer[ln_key])
        return s, norm_out

    enc, w.enc_ln_emb = stack(w.enc_layers, weights.enc_ln_emb, [("self", "ln_self", "self"),
                                                                 ("", "ln_ffn", "ffn")])
    for layer in w.dec_layers:  # cross K/V read the encoder output y = basis * n~ + offset
        layer["cross"]["k"] = enc.fold_in(layer["cross"]["k"])
        layer["cross"]["v"] = enc.fold_in(layer["cross"]["v"])
    dec, w.dec_ln_emb = stack(w.dec_layers, weights.dec_ln_emb, [("self", "ln_self", "self"),
                                                                 ("cross", "ln_cross", "cross"),
                                                                 ("", "ln_ffn", "ffn")])
    head_w, head_b = dec.fold_in((weights.lm_head, weights.logits_bias))
    w.lm_head, w.logits_bias = head_w, head_b
    w.extra = {**w.extra, "balanced": True}
    return w


def stream_basis(absmax: list[np.ndarray], quantile: float = 0.9, cap: float = 8.0) -> np.ndarray:
    """An initial basis from per-channel |max| of the residual sums (one array per layer norm input):
    channels above the ``quantile`` of their tensor's channel maxima are divided down to it."""
    rel = np.max([a / np.quantile(a, quantile) for a in absmax], axis=0)
    return np.clip(rel, 1.0, cap).astype(np.float32)


def _replay(graphs, attr: str, observe, enc_samples, dec_samples, max_batches: int) -> None:
    """Run the FP32 graphs eagerly on calibration batches with ``graphs.<attr>`` wrapped: ``observe``
    gets the wrapped call's arguments, its result and ``valid`` (a tensor -> its non-padding rows, numpy)."""
    from backends.tflite.convert import _valid_part

    tf = graphs.tf
    cur: dict[str, Any] = {"mask": None}
    orig = getattr(graphs, attr)

    def valid(t) -> np.ndarray:
        return _valid_part(t.numpy(), cur["mask"])

    def wrapped(*args):
        y = orig(*args)
        observe(args, y, valid)
        return y

    setattr(graphs, attr, wrapped)
    try:
        for s in list(enc_samples)[:max_batches]:
            cur["mask"] = np.asarray(s["attention_mask"]).astype(bool)
            graphs.encoder_body({k: tf.constant(v) for k, v in s.items()})
        cur["mask"] = None
        for i, s in enumerate(dec_samples):
            if i >= max_batches:
                break
            graphs.decoder_body({k: tf.constant(v) for k, v in s.items()})
    finally:
        delattr(graphs, attr)


def record_stream_absmax(graphs, enc_samples, dec_samples, max_batches: int = 50) -> list[np.ndarray]:
    """Per-channel |max| of every layer norm input of the FP32 graphs (eagerly, on calibration samples;
    encoder padding rows excluded)."""
    rec: list[list[np.ndarray]] = []
    order: dict[int, int] = {}

    def observe(args, _y, valid):
        v = valid(args[0])
        k = order.setdefault(id(args[1]), len(order))
        if k == len(rec):
            rec.append([])
        if v.size:
            rec[k].append(np.abs(v).max(axis=0))

    _replay(graphs, "layer_norm", observe, enc_samples, dec_samples, max_batches)
    return [np.max(r, axis=0) for r in rec if r]


# ---- FFN intermediate balancing ----------------------------------------------------------------
#: activations whose FFN intermediate can be carried divided by a per-channel scale ``s``:
#: relu is positively homogeneous (relu(z/s) = relu(z)/s); swish is written as (z/s) * sigmoid(z)
FFN_BALANCE_ACTIVATIONS = ("relu", "swish", "silu")


def ffn_scales(absmax: np.ndarray, levels: int = 255) -> np.ndarray:
    """Per-channel scales that bring every FFN channel to the same |max|, snapped to the grid of an
    int8 constant over [0, max(s)] (``k * max(s) / levels``, k >= 1) so the int8 graph stores them exactly."""
    a = np.asarray(absmax, np.float64)
    s = a / np.max(a)
    k = np.clip(np.round(s * levels), 1, levels)
    return (k / levels).astype(np.float32)


def balance_ffn(weights, cfg, absmax: dict[int, np.ndarray]):
    """Rewrite each FFN ``fc2(act(fc1(h)))`` to carry its intermediate divided by per-channel scales:
    ``fc1`` columns / s, ``fc2`` rows * s, and ``layer["ffn_scale"] = s`` (the graph then evaluates the
    activation as :meth:`Seq2SeqGraphs.ffn` describes). ``absmax`` maps ``id(layer["fc1"])`` to the
    per-channel |max| of the fc1 output; layers without an entry stay as they are."""
    if cfg.activation.lower() not in FFN_BALANCE_ACTIVATIONS:
        raise UnsupportedModelError("FFN balancing", [f"activation '{cfg.activation}' is not supported"])
    w = copy.copy(weights)
    w.enc_layers = [dict(layer) for layer in weights.enc_layers]
    w.dec_layers = [dict(layer) for layer in weights.dec_layers]
    for layer in w.enc_layers + w.dec_layers:
        if "fc1_gate" in layer or id(layer["fc1"]) not in absmax:
            continue
        s = ffn_scales(absmax[id(layer["fc1"])])
        (w1, b1), (w2, b2) = layer["fc1"], layer["fc2"]
        layer["fc1"] = ((w1 / s[None, :]).astype(np.float32), (b1 / s).astype(np.float32))
        layer["fc2"] = ((s[:, None] * w2).astype(np.float32), b2)
        layer["ffn_scale"] = s
    return w


def record_ffn_absmax(graphs, enc_samples, dec_samples, max_batches: int = 50) -> dict[int, np.ndarray]:
    """Per-channel |max| of every fc1 output of the FP32 graphs (encoder padding rows excluded)."""
    fc1 = {id(layer["fc1"]) for layer in graphs.w.enc_layers + graphs.w.dec_layers}
    rec: dict[int, np.ndarray] = {}

    def observe(args, y, valid):
        key = id(args[1])
        if key not in fc1:
            return
        v = valid(y)
        if v.size:
            m = np.abs(v).max(axis=0)
            rec[key] = np.maximum(rec[key], m) if key in rec else m

    _replay(graphs, "linear", observe, enc_samples, dec_samples, max_batches)
    return rec
