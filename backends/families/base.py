"""Model families: what differs between seq2seq architectures, declared once.

Each family (one file each) subclasses :class:`ModelFamily` and declares only what
differs: which ``config.json`` fields hold the common hyper-parameters
(``FIELD_MAP``, the optimum ``NormalizedConfig`` idea), how positions and norms
work, and the generation conventions (decoder start, forced BOS/EOS, task prefix).
Backends that re-implement the network (TFLite) read :class:`NormalizedConfig`;
every backend reads :class:`GenerationConventions`.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from backends.errors import ConfigurationChecker


@dataclass(frozen=True)
class NormalizedConfig:
    model_type: str
    d_model: int
    encoder_layers: int
    decoder_layers: int
    encoder_heads: int
    decoder_heads: int
    encoder_ffn_dim: int
    decoder_ffn_dim: int
    vocab_size: int
    head_dim: int
    activation: str  # "swish"/"silu", "gelu", "relu", "gelu_new", ...
    gated_ffn: bool  # T5 v1.1 "gated-gelu"
    positions: str  # "sinusoidal" | "learned" | "relative"
    position_offset: int  # BART-style learned positions start at 2
    max_positions: int
    norm: str  # "post" (Marian/BART) | "pre" (mBART/M2M100/Pegasus) | "rms-pre" (T5)
    layernorm_embedding: bool  # LN right after the embeddings (BART/mBART)
    final_layer_norm: bool  # LN after the last layer (pre-norm families)
    scale_embedding: bool  # multiply embeddings by sqrt(d_model)
    layer_norm_eps: float
    tie_word_embeddings: bool
    lm_head_scale: float  # T5 scales the decoder output by d_model**-0.5 when tied
    final_logits_bias: bool
    relative_attention_num_buckets: int = 0
    relative_attention_max_distance: int = 0
    attention_scale: bool = True  # T5 does not scale q by 1/sqrt(head_dim)
    extras: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class GenerationConventions:
    decoder_start_token_id: int
    eos_token_id: int
    pad_token_id: int
    vocab_size: int
    bos_token_id: int | None = None
    forced_bos_token_id: int | None = None
    forced_eos_token_id: int | None = None
    bad_words_ids: tuple[int, ...] = ()  # single-token bans (e.g. opus-mt bans <pad>)
    no_repeat_ngram_size: int = 0
    min_length: int = 0
    length_penalty: float = 1.0
    early_stopping: bool | str = False
    source_prefix: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _is_int(value: Any, minimum: int = 0) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum


# value kind -> (what the message says, test)
_KINDS = {
    "size": ("a positive integer", lambda v: _is_int(v, 1)),
    "count": ("a non-negative integer", _is_int),
    "id": ("a non-negative integer token id", _is_int),
    "float": ("a positive number", lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0),
    "number": ("a number", lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)),
    "str": ("a string", lambda v: isinstance(v, str)),
    "bool": ("true or false", lambda v: isinstance(v, bool)),
    "id-lists": ("a list of token-id lists", lambda v: isinstance(v, list) and all(
        isinstance(ids, list) and all(_is_int(i) for i in ids) for ids in v)),
}
# generation settings (config.json, overridden by generation_config.json) read by conventions()
_GENERATION_KINDS = {"bos_token_id": "id", "forced_bos_token_id": "id", "forced_eos_token_id": "id",
                     "bad_words_ids": "id-lists", "no_repeat_ngram_size": "count", "min_length": "count",
                     "length_penalty": "number"}


class ModelFamily:
    """Base family; subclasses override class attributes and, rarely, hooks."""

    name: ClassVar[str] = "base"
    model_types: ClassVar[tuple[str, ...]] = ()
    hf_model_class: ClassVar[str] = "AutoModelForSeq2SeqLM"
    # common name -> HF config field (first existing wins when a tuple)
    FIELD_MAP: ClassVar[dict[str, Any]] = {
        "d_model": "d_model",
        "encoder_layers": "encoder_layers",
        "decoder_layers": "decoder_layers",
        "encoder_heads": "encoder_attention_heads",
        "decoder_heads": "decoder_attention_heads",
        "encoder_ffn_dim": "encoder_ffn_dim",
        "decoder_ffn_dim": "decoder_ffn_dim",
        "vocab_size": "vocab_size",
        "activation": "activation_function",
        "max_positions": "max_position_embeddings",
        "scale_embedding": "scale_embedding",
    }
    # common name -> value kind (see _KINDS), checked when the field is present
    FIELD_KINDS: ClassVar[dict[str, str]] = {
        "d_model": "size", "encoder_layers": "size", "decoder_layers": "size", "encoder_heads": "size",
        "decoder_heads": "size", "encoder_ffn_dim": "size", "decoder_ffn_dim": "size", "vocab_size": "size",
        "head_dim": "size", "max_positions": "size", "activation": "str", "scale_embedding": "bool",
    }
    positions: ClassVar[str] = "sinusoidal"
    position_offset: ClassVar[int] = 0
    norm: ClassVar[str] = "post"
    layernorm_embedding: ClassVar[bool] = False
    final_layer_norm: ClassVar[bool] = False
    layer_norm_eps: ClassVar[float] = 1e-5
    final_logits_bias: ClassVar[bool] = True
    decoder_start_from_pad: ClassVar[bool] = False  # no decoder_start_token_id: start with <pad> (T5)
    # tokenizer file sets, any complete one suffices (a fast tokenizer's tokenizer.json alone usually does)
    tokenizer_files: ClassVar[tuple[tuple[str, ...], ...]] = (("tokenizer.json",),)

    # ---- normalisation -------------------------------------------------------------
    def _lookup(self, config: dict[str, Any], common: str) -> tuple[str, Any]:
        """(config field name, value) of a common name; the value is None when absent."""
        src = self.FIELD_MAP.get(common, common)
        names = src if isinstance(src, tuple) else (src,)
        for n in names:
            if config.get(n) is not None:
                return n, config[n]
        return "/".join(names), None

    def _field(self, config: dict[str, Any], common: str, default: Any = None) -> Any:
        value = self._lookup(config, common)[1]
        return default if value is None else value

    def required_fields(self) -> list[str]:
        return ["d_model", "encoder_layers", "decoder_layers", "encoder_heads", "decoder_heads", "vocab_size"]

    def check(self, config: dict[str, Any], checker: ConfigurationChecker,
              generation_config: dict[str, Any] | None = None) -> None:
        """Add every reason this config (and generation config) is unsupported to ``checker``."""
        checker.check(bool(config.get("is_encoder_decoder", True)),
                      "config.is_encoder_decoder is false: seqquant handles encoder-decoder models only")
        for common in self.required_fields():
            name, value = self._lookup(config, common)
            checker.check(value is not None, f"config.json lacks '{name}' ({common})")
        bad = set()  # config field names already reported (T5 maps both head counts to num_heads)
        for common, kind in self.FIELD_KINDS.items():
            name, value = self._lookup(config, common)
            what, ok = _KINDS[kind]
            if name not in bad and not checker.check(value is None or ok(value),
                                                     f"config.json '{name}' must be {what}, got {value!r}"):
                bad.add(name)
        generation_config = generation_config or {}
        merged = self._merged(config, generation_config)

        def origin(key: str) -> str:
            return "generation_config.json" if generation_config.get(key) is not None else "config.json"

        for key, kind in _GENERATION_KINDS.items():
            what, ok = _KINDS[kind]
            checker.check(merged.get(key) is None or ok(merged[key]),
                          f"{origin(key)} '{key}' must be {what}, got {merged.get(key)!r}")
        # special ids as conventions() resolves them: key -> required
        start_from_pad = self.decoder_start_from_pad and merged.get("decoder_start_token_id") is None
        vocab = self._field(config, "vocab_size")
        for key, needed in (("eos_token_id", True), ("decoder_start_token_id", not self.decoder_start_from_pad),
                            ("pad_token_id", start_from_pad)):
            value = merged.get(key)
            if value is None:
                checker.check(not needed, f"config.json lacks {key}" + (
                    f" (a {self.name} model without decoder_start_token_id starts decoding with it)"
                    if start_from_pad else ""))
                continue
            ids = value if key == "eos_token_id" and isinstance(value, list) and value else [value]
            if checker.check(all(_is_int(i) for i in ids),
                             f"{origin(key)} '{key}' must be {_KINDS['id'][0]}, got {value!r}"):
                checker.check(not _is_int(vocab, 1) or max(ids) < vocab,
                              f"{origin(key)} '{key}' {value!r} is outside the vocabulary (vocab_size {vocab})")

    def normalize(self, config: dict[str, Any]) -> NormalizedConfig:
        d_model = int(self._field(config, "d_model"))
        heads = int(self._field(config, "encoder_heads"))
        return NormalizedConfig(
            model_type=config.get("model_type", self.name),
            d_model=d_model,
            encoder_layers=int(self._field(config, "encoder_layers")),
            decoder_layers=int(self._field(config, "decoder_layers")),
            encoder_heads=heads,
            decoder_heads=int(self._field(config, "decoder_heads")),
            encoder_ffn_dim=int(self._field(config, "encoder_ffn_dim", 4 * d_model)),
            decoder_ffn_dim=int(self._field(config, "decoder_ffn_dim", 4 * d_model)),
            vocab_size=int(self._field(config, "vocab_size")),
            head_dim=int(self._field(config, "head_dim", d_model // heads)),
            activation=str(self._field(config, "activation", "gelu")),
            gated_ffn=False,
            positions=self.positions,
            position_offset=self.position_offset,
            max_positions=int(self._field(config, "max_positions", 1024)),
            norm=self.norm,
            layernorm_embedding=self.layernorm_embedding,
            final_layer_norm=self.final_layer_norm,
            scale_embedding=bool(self._field(config, "scale_embedding", False)),
            layer_norm_eps=float(self.layer_norm_eps),
            tie_word_embeddings=bool(config.get("tie_word_embeddings", True)),
            lm_head_scale=1.0,
            final_logits_bias=self.final_logits_bias,
        )

    # ---- generation ----------------------------------------------------------------
    @staticmethod
    def _merged(config: dict[str, Any], generation_config: dict[str, Any]) -> dict[str, Any]:
        """config.json overridden by the set fields of generation_config.json (as HF generate does)."""
        return {**config, **{k: v for k, v in generation_config.items() if v is not None}}

    def conventions(self, config: dict[str, Any], generation_config: dict[str, Any],
                    source_prefix: str | None = None) -> GenerationConventions:
        """Resolve the generation conventions of a config that passed :meth:`check`."""
        merged = self._merged(config, generation_config)
        pad = merged.get("pad_token_id")
        eos = merged.get("eos_token_id")
        if isinstance(eos, list):
            eos = eos[0]
        start = merged.get("decoder_start_token_id")
        if start is None:
            start = pad
        bad = tuple(ids[0] for ids in (merged.get("bad_words_ids") or []) if len(ids) == 1)
        return GenerationConventions(
            decoder_start_token_id=int(start),
            eos_token_id=int(eos),
            pad_token_id=int(pad if pad is not None else eos),
            vocab_size=int(self._field(config, "vocab_size")),
            bos_token_id=merged.get("bos_token_id"),
            forced_bos_token_id=merged.get("forced_bos_token_id"),
            forced_eos_token_id=merged.get("forced_eos_token_id"),
            bad_words_ids=bad,
            no_repeat_ngram_size=int(merged.get("no_repeat_ngram_size") or 0),
            min_length=int(merged.get("min_length") or 0),
            length_penalty=float(merged.get("length_penalty", 1.0) if merged.get("length_penalty") is not None else 1.0),
            early_stopping=merged.get("early_stopping", False) or False,
            source_prefix=source_prefix if source_prefix is not None else self.default_source_prefix(config),
        )

    def default_source_prefix(self, config: dict[str, Any]) -> str:
        return ""

    # ---- tokenizer -----------------------------------------------------------------
    def tokenizer_file_sets(self, path: Path) -> tuple[tuple[str, ...], ...]:
        """The tokenizer file sets for the checkpoint at ``path`` (any complete one suffices)."""
        return self.tokenizer_files

    def check_tokenizer_files(self, path: Path, checker: ConfigurationChecker) -> None:
        """Add a reason naming the missing files unless one tokenizer file set is complete in ``path``."""
        sets = self.tokenizer_file_sets(path)
        missing = [[f for f in files if not (path / f).exists()] for files in sets]
        if all(missing):
            needs = f"the {self.name} family needs {' or '.join(' + '.join(files) for files in sets)}"
            partial = [m for m, files in zip(missing, sets) if len(m) < len(files)]
            checker.check(False, f"incomplete tokenizer: missing {', '.join(min(partial, key=len))} ({needs})"
                          if partial else f"no tokenizer files: {needs}")
