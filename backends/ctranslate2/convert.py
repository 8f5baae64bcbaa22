"""Convert a local Hugging Face checkpoint with CTranslate2's Transformers converter.

The stock ``ctranslate2.converters.TransformersConverter`` is used through its public
loader classes, with three convention fixes so that CT2 FP32 reproduces
``transformers`` greedy search token for token:

1. **Vocabulary = the model's id space.** The CT2 vocabulary is written id-ordered with
   exactly ``config.vocab_size`` unique entries (holes/duplicates get unique
   placeholders). The stock Marian loader *drops* ``<pad>`` (the last id), so CT2 can
   never emit or condition on it; the stock BART loader keeps a tokenizer-sized list.
   With a bijective id <-> token list, seqquant ids go in and come out unchanged.
2. **Decoder start = HF's ``decoder_start_token_id``.** The stock Marian loader writes
   ``decoder_start_token="</s>"`` and sets ``start_from_zero_embedding=True`` (the
   original Marian toolkit starts from a zero vector). A HF-trained Marian starts from
   the ``<pad>`` embedding, which is *not* zero when the LM head is tied (the softmax
   gradient reaches the pad row: 0.33 L2 norm on the default model). We keep the pad
   row, write the HF start token and disable ``start_from_zero_embedding``. Measured
   on the default model: plain conversion agreed with torch-fp32 greedy on 62% of the
   test sentences, the fixed one on >= 99% (see the tests and the benchmark).
3. **EOS/UNK tokens** are written from the same id space.
4. **BART with recent transformers**: ``BartConfig`` no longer has ``normalize_before``,
   which CT2's ``BartLoader`` reads (AttributeError with the stock converter); we set it
   from the family's norm layout (BART: post-norm).

Nothing here downloads: the model and tokenizer come from ``ModelBundle`` (local files).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from backends._imports import require
from backends.errors import ArtifactError, UnsupportedModelError

INFO_FILE = "seqquant_ct2.json"

# seqquant family -> CT2 loader class name in ctranslate2.converters.transformers
_LOADERS = {
    "marian": "MarianMTLoader",
    "bart": "BartLoader",
    "mbart": "MBartLoader",
    "t5": "T5Loader",
    "m2m100": "M2M100Loader",
    "pegasus": "PegasusLoader",
}


def model_vocabulary(bundle) -> tuple[list[str], dict[str, Any]]:
    """Id-ordered, unique token list of length ``config.vocab_size`` + what was patched."""
    n = int(bundle.conventions.vocab_size)
    tok = bundle.tokenizer
    tokens: list[str | None] = [None] * n
    beyond = 0
    for t, i in sorted(tok.get_vocab().items(), key=lambda kv: kv[1]):
        if 0 <= i < n:
            if tokens[i] is None:
                tokens[i] = t
        else:
            beyond += 1
    seen: set[str] = set()
    holes = dups = 0
    for i, t in enumerate(tokens):
        if t is None:
            holes += 1
            tokens[i] = f"<seqquant_unused_{i}>"
        elif t in seen:
            dups += 1
            tokens[i] = f"<seqquant_dup_{i}>"
        seen.add(tokens[i])
    return tokens, {"vocab_size": n, "placeholder_ids": holes, "duplicate_tokens": dups,
                    "tokenizer_ids_beyond_model_vocab": beyond}


def _loader_for(bundle, tokens: list[str]):
    tf = require("ctranslate2.converters.transformers", "the CTranslate2 converter")
    family = bundle.family_name
    base_name = _LOADERS.get(family)
    base = getattr(tf, base_name, None) if base_name else None
    if base is None:
        raise UnsupportedModelError(f"Model family '{family}'",
                                    [f"no CTranslate2 Transformers loader is mapped for it "
                                     f"(mapped: {', '.join(sorted(_LOADERS))})"])
    conv = bundle.conventions

    pre_norm = bundle.normalized.norm != "post"

    class SeqquantLoader(base):  # type: ignore[misc, valid-type]
        def get_model_spec(self, model):
            # recent transformers dropped BartConfig/MBartConfig.normalize_before, which CT2's BartLoader
            # reads; loaders that set it themselves (Marian, M2M100, Pegasus) still override this
            if family != "t5" and not hasattr(model.config, "normalize_before"):
                model.config.normalize_before = pre_norm
            return super().get_model_spec(model)

        def get_vocabulary(self, model, tokenizer):
            return list(tokens)

        def set_config(self, config, model, tokenizer):
            super().set_config(config, model, tokenizer)
            config.decoder_start_token = tokens[conv.decoder_start_token_id]
            config.eos_token = tokens[conv.eos_token_id]
            unk = getattr(tokenizer, "unk_token", None)
            config.unk_token = unk if unk in tokens else tokens[conv.eos_token_id]

    if family == "marian":
        bart = tf.BartLoader

        class SeqquantMarianLoader(SeqquantLoader):
            def get_model_spec(self, model):
                # MarianMTLoader.get_model_spec minus _remove_pad_weights: keep the <pad> row
                model.config.normalize_before = False
                model.config.normalize_embedding = False
                return bart.get_model_spec(self, model)

            def set_decoder(self, spec, decoder):
                super().set_decoder(spec, decoder)
                spec.start_from_zero_embedding = False  # HF starts from the <pad> embedding

        return SeqquantMarianLoader()
    return SeqquantLoader()


def convert_checkpoint(bundle, outdir: Path, quantization: str) -> dict[str, Any]:
    """Convert ``bundle`` into ``outdir`` with weights stored as ``quantization``.

    Returns conversion facts (vocabulary, start token, files) for the manifest.
    """
    require("torch", "the CTranslate2 converter")
    require("transformers", "the CTranslate2 converter")
    converters = require("ctranslate2.converters", "the CTranslate2 converter")
    import torch

    tokens, vocab_info = model_vocabulary(bundle)
    loader = _loader_for(bundle, tokens)

    class BundleConverter(converters.TransformersConverter):
        """TransformersConverter reading model + tokenizer from the ModelBundle (local files only)."""

        def _load(self):
            with torch.no_grad():
                model = bundle.load_torch_model()
                return loader(model, bundle.tokenizer)

    try:
        BundleConverter(str(bundle.path)).convert(str(outdir), quantization=quantization, force=True)
    except (ValueError, NotImplementedError) as exc:  # converter's own "unsupported" errors
        raise UnsupportedModelError(f"CTranslate2 conversion of {bundle.path}", [str(exc)]) from exc
    cfg = json.loads((outdir / "config.json").read_text())
    vocab_files = sorted(p.name for p in outdir.glob("*vocabulary*"))
    written = []
    for name in vocab_files:
        p = outdir / name
        written = json.loads(p.read_text()) if p.suffix == ".json" else p.read_text().splitlines()
        if written != tokens:
            raise ArtifactError(f"CTranslate2 wrote {name} with {len(written)} tokens that differ from the "
                                f"model's {len(tokens)}-token id space")
    info = {
        "loader": f"ctranslate2.converters.transformers.{_LOADERS[bundle.family_name]} (+ seqquant fixes)",
        "quantization": quantization,
        "vocabulary": {**vocab_info, "files": vocab_files},
        "ct2_config": cfg,
        "decoder_start_token": cfg.get("decoder_start_token"),
        "decoder_start_token_id": bundle.conventions.decoder_start_token_id,
        "fixes": ["vocabulary = model id space (no token dropped)",
                  "decoder_start_token = HF decoder_start_token_id"]
                 + (["start_from_zero_embedding = False (HF Marian starts from the <pad> embedding)"]
                    if bundle.family_name == "marian" else []),
    }
    (outdir / INFO_FILE).write_text(json.dumps(info, indent=1))
    return info


def read_vocabulary(directory: Path) -> list[str]:
    """The token list a converted model uses (shared or target vocabulary)."""
    for name in ("shared_vocabulary.json", "target_vocabulary.json"):
        p = directory / name
        if p.exists():
            return json.loads(p.read_text())
    for name in ("shared_vocabulary.txt", "target_vocabulary.txt"):
        p = directory / name
        if p.exists():
            return p.read_text(encoding="utf-8").split("\n")[:-1]
    raise ArtifactError(f"{directory}: no CTranslate2 vocabulary file")
