"""The encoder and decoder-step networks as static-shape TensorFlow functions.

Driven by :class:`backends.families.NormalizedConfig` (pre/post norm, layernorm_embedding,
activation, final norms, positions) and the weights from :mod:`backends.tflite.weights`.

Two graphs, both with a dynamic batch dimension and otherwise static shapes (with
``dynamic_source`` the encoder's source length is dynamic too, up to S: the host runs it at the
smallest source-length bucket that fits and pads its outputs to S for the static decoder):

* encoder: ``input_ids`` int32 [B, S], ``attention_mask`` int32 [B, S] ->
  ``encoder_hidden_states`` [B, S, D] (``cross_kv="decoder"``) or, with
  ``cross_kv="encoder"``, the cross-attention keys/values of every decoder layer
  ``cross_k_{i}``/``cross_v_{i}`` [B, H, S, Dh].
* decoder step (one position): ``input_ids`` int32 [B, 1], ``position`` int32 [B],
  ``self_attention_mask`` int32 [B, T+1] (1 for cache slots < position and for the last slot,
  this step's own K/V; see :func:`self_attention_mask`),
  ``encoder_attention_mask`` int32 [B, S], the encoder side (hidden states or cross K/V),
  and a static self-attention cache ``self_k_{i}``/``self_v_{i}`` [B, H, T, Dh] whose slots
  ``< position`` are valid -> ``logits`` [B, V] and this position's ``new_k_{i}``/``new_v_{i}``
  [B, H, 1, Dh], which the host writes into slot ``position``. With ``logits_floor`` set it
  also returns ``logits_top`` (see :class:`GraphSpec`).

Masking (``mask_mode``): ``"select"`` (default, quantization safe) replaces masked scores
by ``rowmax - margin`` with ``where``, so the score tensor's range stays bounded by the real
scores; ``"hf"`` adds ``-1e9`` like Hugging Face (exact in float, destroys int8 score ranges).
"""
from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from backends._imports import require
from backends.errors import InvalidInputError, UnsupportedModelError
from backends.tflite.balance import BalancedNorm

#: bump when the graphs' interface, numerics or op names change (part of the artifact cache key)
GRAPH_FORMAT = 6
MASK_MODES = ("select", "bounded", "hf")
CROSS_KV_MODES = ("decoder", "encoder")
HF_MASK_VALUE = -1e9
#: named regions of both graphs, each built under its own TF name scope (``REGION_SCOPE`` + name), so
#: that selective float (``float_regions``) can leave exactly that part of the network in float
REGIONS = {
    "layer_norm": "every layer norm (RMS norm for T5): mean, centering, variance, rsqrt, scale and shift",
    "attention_softmax": "the masked softmax of every attention (scores in, probabilities out)",
    "self_attention": "self-attention from the scores to the context: Q.K^T, bias, mask, softmax, P.V",
    "cross_attention": "cross-attention from the scores to the context: Q.K^T, mask, softmax, P.V",
    "ffn": "the feed-forward blocks: both linears and the activation",
    "lm_head": "the LM head: the projection to the vocabulary and its bias",
}
REGION_SCOPE = "sqr_"
#: signature outputs a region produces: the converter renames a graph output's tensor, so its op is
#: found by the output's name instead of the scope
REGION_OUTPUTS = {"lm_head": ("logits", "logits_top")}


_REGION_PART = re.compile(rf"^{re.escape(REGION_SCOPE)}[a-z_]+?(_\d+)?$")


def op_location(tensor_name: str) -> str:
    """Where in the network a converted tensor comes from, from its name: the first fused TF op that
    carries the graphs' structural scopes (``layer_3/ffn/fc2/MatMul``, ``layer_0/self_attn/norm/Rsqrt``),
    region scopes left out; the name itself when none does (a graph output such as
    ``PartitionedCall:4``, or an artifact built before the graphs named their scopes)."""
    parts = [p for p in tensor_name.split(";") if p]
    scoped = [p for p in parts if "/" in p]
    if not scoped:
        return parts[0] if parts else tensor_name
    return "/".join(c for c in scoped[0].split("/") if not _REGION_PART.match(c))


#: the two graphs, in the order their scoped regions (``encoder.layer_norm``) are named
GRAPH_ROLES = ("encoder", "decoder")
#: the graphs a region is built in: the encoder has no cross-attention scores and no LM head
REGION_GRAPHS = {r: ("decoder",) if r in ("cross_attention", "lm_head") else GRAPH_ROLES for r in REGIONS}
#: every region of one graph, ``<graph>.<region>``, in canonical order (a region alone means it in every
#: graph it is built in)
SCOPED_REGIONS = {f"{g}.{r}": f"{desc}, in the {g} graph" for g in GRAPH_ROLES for r, desc in REGIONS.items()
                  if g in REGION_GRAPHS[r]}


def check_regions(regions: Any, who: str) -> tuple[str, ...]:
    """``regions`` as a tuple of region names, or InvalidInputError saying what is wrong. A name is one of
    :data:`REGIONS` (in every graph it is built in) or of :data:`SCOPED_REGIONS` (in one graph:
    ``decoder.layer_norm``)."""
    regions = regions or ()
    if isinstance(regions, str) or not all(isinstance(r, str) for r in regions):
        raise InvalidInputError(f"{who}: float_regions must be a list of region names, got {regions!r}")
    unknown = [r for r in regions if r not in REGIONS and r not in SCOPED_REGIONS]
    if unknown:
        raise InvalidInputError(f"{who}: float region(s) {unknown} unknown; choose from "
                                + ", ".join(f"{k} ({v})" for k, v in REGIONS.items())
                                + ", or one graph's: " + ", ".join(SCOPED_REGIONS))
    return tuple(regions)


def scoped_regions(regions: Any, who: str = "float_regions") -> tuple[str, ...]:
    """``regions`` (checked) as :data:`SCOPED_REGIONS` names in canonical order: ``layer_norm`` is
    ``encoder.layer_norm`` and ``decoder.layer_norm``; duplicates count once."""
    wanted = set()
    for r in check_regions(regions, who):
        wanted |= {f"{g}.{r}" for g in REGION_GRAPHS[r]} if r in REGIONS else {r}
    return tuple(p for p in SCOPED_REGIONS if p in wanted)


def regions_in(regions: Any, graph: str) -> tuple[str, ...]:
    """The :data:`REGIONS` names of ``regions`` that apply to ``graph`` (``encoder`` or ``decoder``)."""
    prefix = graph + "."
    return tuple(p[len(prefix):] for p in scoped_regions(regions) if p.startswith(prefix))


@dataclass(frozen=True)
class GraphSpec:
    source_length: int  # S
    cache_length: int  # T (max decoder positions)
    mask_mode: str = "select"
    mask_margin: float = 20.0
    cross_kv: str = "decoder"
    #: when set, the decoder also outputs ``logits_top`` = relu(2*(logits - floor)): a second LM
    #: head whose int8 range covers only [floor, max], i.e. finer bins where argmax is decided
    logits_floor: float | None = None
    #: encoder inputs [B, None]: any source length up to ``source_length`` (source-length buckets)
    dynamic_source: bool = False
    #: build each of :data:`REGIONS` under its name scope (for ``float_regions``). Off otherwise, so
    #: strict builds keep their op names; the scopes reorder the converter's tensors but no longer
    #: change the quantization (the range pass's subsample ignores tensor order since RANGE_PASS_FORMAT 2)
    region_scopes: bool = False

    def __post_init__(self) -> None:
        if self.mask_mode not in MASK_MODES:
            raise InvalidInputError(f"mask_mode '{self.mask_mode}' unknown; choose one of {MASK_MODES}")
        if self.cross_kv not in CROSS_KV_MODES:
            raise InvalidInputError(f"cross_kv '{self.cross_kv}' unknown; choose one of {CROSS_KV_MODES}")
        if self.source_length < 1 or self.cache_length < 1:
            raise InvalidInputError("max_source_length and max_new_tokens must be >= 1")


def self_attention_mask(positions: np.ndarray, cache_length: int) -> np.ndarray:
    """int32 [B, T+1]: cache slots before each row's position, plus the step's own slot T."""
    slots = np.arange(cache_length + 1)
    pos = np.asarray(positions).reshape(-1, 1)
    return ((slots[None, :] < pos) | (slots[None, :] == cache_length)).astype(np.int32)


def _activation(tf, name: str) -> Callable:
    name = name.lower()
    if name in ("swish", "silu"):
        return lambda x: x * tf.sigmoid(x)
    if name == "gelu":
        return lambda x: tf.nn.gelu(x, approximate=False)
    if name in ("gelu_new", "gelu_fast", "gelu_pytorch_tanh"):
        return lambda x: tf.nn.gelu(x, approximate=True)
    if name == "relu":
        return tf.nn.relu
    raise UnsupportedModelError("activation", [f"activation '{name}' is not implemented in the TFLite graphs"])


def _named_function(names: list[str], body: Callable[[dict], dict]) -> Callable:
    """A python function with exactly these positional parameter names (they become the
    TFLite signature's input names)."""
    for n in names:
        if not n.isidentifier():
            raise InvalidInputError(f"bad tensor name {n!r}")
    src = f"def fn({', '.join(names)}):\n    return body(dict({', '.join(f'{n}={n}' for n in names)}))\n"
    ns: dict[str, Any] = {"body": body}
    exec(src, ns)  # noqa: S102 - names validated as identifiers above
    return ns["fn"]


class Seq2SeqGraphs:
    """Builds the two TF functions; ``encoder_specs()``/``decoder_specs()`` name their inputs."""

    def __init__(self, weights, cfg, spec: GraphSpec):
        self.tf = require("tensorflow", "the TFLite backends")
        if cfg.positions not in ("sinusoidal", "learned"):
            raise UnsupportedModelError("positions", [f"'{cfg.positions}' positions are not implemented"])
        self.w, self.cfg, self.spec = weights, cfg, spec
        tf = self.tf
        self.act = _activation(tf, cfg.activation)
        c = lambda a: tf.constant(np.asarray(a, dtype=np.float32))  # noqa: E731
        self.c = c
        self.embed = c(weights.embed)
        need = max(spec.source_length, spec.cache_length)
        for name, table in (("encoder", weights.enc_pos), ("decoder", weights.dec_pos)):
            if table is not None and table.shape[0] < need:
                raise InvalidInputError(
                    f"the model has {table.shape[0]} {name} positions but the static shapes need {need}; "
                    f"lower --max-source-length / --max-new-tokens")
        self.enc_pos = c(weights.enc_pos[: spec.source_length])
        self.dec_pos = c(weights.dec_pos[: spec.cache_length])
        self.lm_head = c(weights.lm_head)
        self.logits_bias = c(weights.logits_bias)
        self.H, self.Dh, self.D = cfg.decoder_heads, cfg.head_dim, cfg.d_model
        self.He = cfg.encoder_heads

    # ---- building blocks -----------------------------------------------------------
    def linear(self, x, lin, name: str = "linear"):
        """x [N, in] (2-D, so the converter emits FULLY_CONNECTED with per-channel weights), built
        under the name scope ``name`` (``q``, ``fc1``, ...: the converted op's name says which)."""
        tf = self.tf
        with tf.name_scope(name):
            return tf.matmul(x, self.c(lin[0])) + self.c(lin[1])

    def scope(self, name: str):
        """A structural TF name scope (``layer_3``, ``self_attn``, ``norm``, ...). Every op is built
        under one, so a converted tensor's name locates it in the network (see :func:`op_location`)."""
        return self.tf.name_scope(name)

    def region(self, name: str):
        """The TF name scope of one of :data:`REGIONS` (op names then carry it into the .tflite), when
        ``spec.region_scopes`` is set."""
        if name not in REGIONS:
            raise ValueError(f"region '{name}' is not one of {sorted(REGIONS)}")
        return self.tf.name_scope(REGION_SCOPE + name) if self.spec.region_scopes else contextlib.nullcontext()

    def norm(self, x, norm):
        """``layer_norm`` inside the ``layer_norm`` region (call this, override ``layer_norm``)."""
        with self.scope("norm"), self.region("layer_norm"):
            return self.layer_norm(x, norm)

    def layer_norm(self, x, norm):
        if isinstance(norm, BalancedNorm):
            return self.balanced_layer_norm(x, norm)
        tf = self.tf
        mean = tf.reduce_mean(x, axis=-1, keepdims=True)
        d = x - mean
        var = tf.reduce_mean(d * d, axis=-1, keepdims=True)
        return d * tf.math.rsqrt(var + self.cfg.layer_norm_eps) * self.c(norm[0]) + self.c(norm[1])

    def balanced_layer_norm(self, x, norm: BalancedNorm):
        """Layer norm of ``basis * x`` given ``x`` (see :mod:`backends.tflite.balance`), returning the
        normalized values divided by ``basis`` (gamma and beta are folded into the consumers)."""
        tf, b = self.tf, np.asarray(norm.basis, np.float64)
        mean = tf.matmul(x, self.c((b / b.size)[:, None]))  # [N, 1]: the mean of basis * x
        d = x - tf.matmul(mean, self.c((1.0 / b)[None, :]))  # (basis * x - mean) / basis
        db = d * self.c(b)
        var = tf.reduce_mean(db * db, axis=-1, keepdims=True)
        return d * tf.math.rsqrt(var + self.cfg.layer_norm_eps)

    def masked_softmax(self, scores, valid):
        """Softmax over the last axis of ``scores`` [B, H, L, K]; ``valid`` is [B, K] (bool or int)."""
        with self.region("attention_softmax"):
            return self._masked_softmax(scores, valid)

    def _masked_softmax(self, scores, valid):
        tf = self.tf
        # dynamic source length: the shape of the integer mask, never of a float tensor (a SHAPE op
        # on a float tensor stays float after quantization)
        K = scores.shape[-1] if scores.shape[-1] is not None else tf.shape(valid)[-1]
        if self.spec.mask_mode in ("hf", "bounded"):
            value = HF_MASK_VALUE if self.spec.mask_mode == "hf" else -self.spec.mask_margin
            bias = tf.reshape((1.0 - tf.cast(valid, tf.float32)) * value, [-1, 1, 1, K])
            return tf.nn.softmax(scores + bias, axis=-1)
        valid = tf.reshape(tf.cast(valid, tf.bool), [-1, 1, 1, K])
        floor = tf.reduce_max(scores, axis=-1, keepdims=True) - self.spec.mask_margin
        return tf.nn.softmax(tf.where(valid, scores, floor), axis=-1)

    def split_heads(self, x2d, length, heads):
        """[B*L, H*Dh] -> [B, H, L, Dh]."""
        tf = self.tf
        x = tf.reshape(x2d, [-1, length, heads, self.Dh])
        return tf.transpose(x, [0, 2, 1, 3])

    def merge_heads(self, x, length, heads):
        """[B, H, L, Dh] -> [B*L, H*Dh]."""
        tf = self.tf
        x = tf.transpose(x, [0, 2, 1, 3])
        return tf.reshape(x, [-1, heads * self.Dh])

    def residual_block(self, x, norm, fn):
        if self.cfg.norm == "pre":
            return x + fn(self.norm(x, norm))
        return self.norm(x + fn(x), norm)

    def scoped(self, name: str, fn: Callable) -> Callable:
        """``fn`` run inside region ``name``."""
        def run(*args):
            with self.region(name):
                return fn(*args)
        return run

    def ffn(self, layer):
        if "ffn_scale" in layer:  # balanced intermediate (balance.balance_ffn): fc1 gives z / s
            return lambda h: self.linear(self.scaled_act(self.linear(h, layer["fc1"], "fc1"), layer["ffn_scale"]),
                                         layer["fc2"], "fc2")
        return lambda h: self.linear(self.act(self.linear(h, layer["fc1"], "fc1")), layer["fc2"], "fc2")

    def scaled_act(self, zs, s):
        """act(z) / s from zs = z / s: relu(zs), or zs * sigmoid(zs * s) for swish."""
        tf = self.tf
        if self.cfg.activation.lower() == "relu":
            return tf.nn.relu(zs)
        return zs * tf.sigmoid(zs * self.c(s))

    # ---- family hooks (T5 overrides these in backends/tflite/t5.py) --------------------
    def embed_source(self, ids):
        """Token + position embeddings of the source, [B*S, D]."""
        tf = self.tf
        x = tf.gather(self.embed, ids) + self.enc_pos[None, : self.source_width(ids)]
        x = tf.reshape(x, [-1, self.D])
        return self.norm(x, self.w.enc_ln_emb) if self.w.enc_ln_emb is not None else x

    def embed_target(self, ids, pos):
        """Embedding of this step's token at ``pos``, [B, D]."""
        tf = self.tf
        x = tf.gather(self.embed, ids[:, 0]) + tf.gather(self.dec_pos, pos)
        return self.norm(x, self.w.dec_ln_emb) if self.w.dec_ln_emb is not None else x

    def encoder_score_bias(self, S):
        """Added to encoder self-attention scores [B, H, S, S] (None: nothing); ``S`` is the
        source length (an int, or a scalar tensor with ``dynamic_source``)."""
        return None

    def decoder_score_bias(self, pos):
        """Added to the decoder step's self-attention scores [B, H, 1, T+1] (None: nothing)."""
        return None

    @staticmethod
    def add_bias(scores, bias):
        return scores if bias is None else scores + bias

    # ---- encoder -------------------------------------------------------------------
    def encoder_input_names(self) -> list[str]:
        return ["input_ids", "attention_mask"]

    def encoder_specs(self) -> list[Any]:
        tf = self.tf
        S = None if self.spec.dynamic_source else self.spec.source_length
        return [tf.TensorSpec([None, S], tf.int32, name="input_ids"),
                tf.TensorSpec([None, S], tf.int32, name="attention_mask")]

    def source_width(self, ids):
        """The encoder's source length: static S, or the input's length with ``dynamic_source``."""
        return self.tf.shape(ids)[1] if self.spec.dynamic_source else self.spec.source_length

    def cross_kv(self, hidden2d, layer, S):
        att = layer["cross"]
        return (self.split_heads(self.linear(hidden2d, att["k"], "k"), S, self.H),
                self.split_heads(self.linear(hidden2d, att["v"], "v"), S, self.H))

    def encoder_body(self, inputs: dict) -> dict:
        tf, D = self.tf, self.D
        S = self.source_width(inputs["input_ids"])
        with self.scope("embed"):
            x = self.embed_source(inputs["input_ids"])  # [B*S, D]
        valid = inputs["attention_mask"]
        with self.scope("score_bias"):
            bias = self.encoder_score_bias(S)
        for i, layer in enumerate(self.w.enc_layers):
            att = layer["self"]

            def attn(h, att=att):
                q = self.split_heads(self.linear(h, att["q"], "q"), S, self.He)
                k = self.split_heads(self.linear(h, att["k"], "k"), S, self.He)
                v = self.split_heads(self.linear(h, att["v"], "v"), S, self.He)
                with self.region("self_attention"):
                    p = self.masked_softmax(self.add_bias(tf.matmul(q, k, transpose_b=True), bias), valid)
                    ctx = self.merge_heads(tf.matmul(p, v), S, self.He)
                return self.linear(ctx, att["o"], "o")

            with self.scope(f"layer_{i}"):
                with self.scope("self_attn"):
                    x = self.residual_block(x, layer["ln_self"], attn)
                with self.scope("ffn"):
                    x = self.residual_block(x, layer["ln_ffn"], self.scoped("ffn", self.ffn(layer)))
        if self.w.enc_final_ln is not None:
            with self.scope("final"):
                x = self.norm(x, self.w.enc_final_ln)
        if self.spec.cross_kv == "decoder":
            return {"encoder_hidden_states": tf.reshape(x, [-1, S, D])}
        out = {}
        for i, layer in enumerate(self.w.dec_layers):
            with self.scope(f"decoder_layer_{i}"), self.scope("cross_attn"):  # the decoder's, built here
                out[f"cross_k_{i}"], out[f"cross_v_{i}"] = self.cross_kv(x, layer, S)
        return out

    # ---- decoder step --------------------------------------------------------------
    def boundary_names(self) -> list[str]:
        if self.spec.cross_kv == "decoder":
            return ["encoder_hidden_states"]
        return [f"cross_{kv}_{i}" for i in range(len(self.w.dec_layers)) for kv in ("k", "v")]

    def cache_names(self) -> list[str]:
        return [f"self_{kv}_{i}" for i in range(len(self.w.dec_layers)) for kv in ("k", "v")]

    def decoder_input_names(self) -> list[str]:
        return (["input_ids", "position", "self_attention_mask", "encoder_attention_mask"] + self.boundary_names()
                + self.cache_names())

    def decoder_specs(self) -> list[Any]:
        tf, S, T, H, Dh = self.tf, self.spec.source_length, self.spec.cache_length, self.H, self.Dh
        specs = {"input_ids": tf.TensorSpec([None, 1], tf.int32, name="input_ids"),
                 "position": tf.TensorSpec([None], tf.int32, name="position"),
                 "self_attention_mask": tf.TensorSpec([None, T + 1], tf.int32, name="self_attention_mask"),
                 "encoder_attention_mask": tf.TensorSpec([None, S], tf.int32, name="encoder_attention_mask")}
        for n in self.boundary_names():
            shape = [None, S, self.D] if n == "encoder_hidden_states" else [None, H, S, Dh]
            specs[n] = tf.TensorSpec(shape, tf.float32, name=n)
        for n in self.cache_names():
            specs[n] = tf.TensorSpec([None, H, T, Dh], tf.float32, name=n)
        return [specs[n] for n in self.decoder_input_names()]

    def decoder_body(self, inputs: dict) -> dict:
        tf, S, T, H, Dh, D = (self.tf, self.spec.source_length, self.spec.cache_length, self.H, self.Dh,
                              self.D)
        pos = inputs["position"]
        with self.scope("embed"):
            x = self.embed_target(inputs["input_ids"], pos)  # [B, D]
        with self.scope("score_bias"):
            self_bias = self.decoder_score_bias(pos)
        enc_valid = inputs["encoder_attention_mask"]
        self_valid = inputs["self_attention_mask"]  # [B, T+1]: slots < position, and the new slot T
        if self.spec.cross_kv == "decoder":
            enc2d = tf.reshape(inputs["encoder_hidden_states"], [-1, D])
        out = {}
        for i, layer in enumerate(self.w.dec_layers):
            att, catt = layer["self"], layer["cross"]

            def self_attn(h, att=att, i=i):
                q = tf.reshape(self.linear(h, att["q"], "q"), [-1, H, 1, Dh])
                k_new = tf.reshape(self.linear(h, att["k"], "k"), [-1, H, 1, Dh])
                v_new = tf.reshape(self.linear(h, att["v"], "v"), [-1, H, 1, Dh])
                out[f"new_k_{i}"], out[f"new_v_{i}"] = k_new, v_new
                with self.region("self_attention"):
                    k = tf.concat([inputs[f"self_k_{i}"], k_new], axis=2)  # [B, H, T+1, Dh]
                    v = tf.concat([inputs[f"self_v_{i}"], v_new], axis=2)
                    p = self.masked_softmax(self.add_bias(tf.matmul(q, k, transpose_b=True), self_bias),
                                            self_valid)
                    ctx = tf.reshape(tf.matmul(p, v), [-1, H * Dh])
                return self.linear(ctx, att["o"], "o")

            def cross_attn(h, catt=catt, i=i, layer=layer):
                q = tf.reshape(self.linear(h, catt["q"], "q"), [-1, H, 1, Dh])
                if self.spec.cross_kv == "decoder":
                    k, v = self.cross_kv(enc2d, layer, S)
                else:
                    k, v = inputs[f"cross_k_{i}"], inputs[f"cross_v_{i}"]
                with self.region("cross_attention"):
                    p = self.masked_softmax(tf.matmul(q, k, transpose_b=True), enc_valid)
                    ctx = tf.reshape(tf.matmul(p, v), [-1, H * Dh])
                return self.linear(ctx, catt["o"], "o")

            with self.scope(f"layer_{i}"):
                with self.scope("self_attn"):
                    x = self.residual_block(x, layer["ln_self"], self_attn)
                with self.scope("cross_attn"):
                    x = self.residual_block(x, layer["ln_cross"], cross_attn)
                with self.scope("ffn"):
                    x = self.residual_block(x, layer["ln_ffn"], self.scoped("ffn", self.ffn(layer)))
        if self.w.dec_final_ln is not None:
            with self.scope("final"):
                x = self.norm(x, self.w.dec_final_ln)
        with self.scope("lm_head"), self.region("lm_head"):
            logits = tf.matmul(x, self.lm_head)
            if self.cfg.lm_head_scale != 1.0:
                logits = logits * self.cfg.lm_head_scale
            out["logits"] = logits + self.logits_bias
            if self.spec.logits_floor is not None:
                # doubled weights: an exact rescale that also keeps the two heads from being merged
                top = tf.matmul(x, self.c(self.w.lm_head * 2.0 * self.cfg.lm_head_scale))
                out["logits_top"] = tf.nn.relu(top + self.c(2.0 * (self.w.logits_bias - self.spec.logits_floor)))
        return out

    # ---- concrete functions ----------------------------------------------------------
    def encoder_function(self):
        fn = _named_function(self.encoder_input_names(), self.encoder_body)
        return self.tf.function(fn).get_concrete_function(*self.encoder_specs())

    def decoder_function(self):
        fn = _named_function(self.decoder_input_names(), self.decoder_body)
        return self.tf.function(fn).get_concrete_function(*self.decoder_specs())
