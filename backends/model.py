"""A checkpoint on disk, validated: config, family, conventions, tokenizer, content hash.

``ModelBundle.load(path)`` checks everything a user can get wrong *before* any runtime
is touched and raises one :class:`UnsupportedModelError`/``InvalidInputError`` naming
every problem. Nothing here imports torch; the tokenizer (transformers) is loaded on
first use.
"""
from __future__ import annotations

import hashlib
import json
import mmap
import os
import struct
import warnings
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from backends._imports import require
from backends.errors import ConfigurationChecker, InputTooLongError, InvalidInputError
from backends.families import GenerationConventions, NormalizedConfig, resolve_family

#: optional tokenizer configuration shipped with the tokenizer files
TOKENIZER_CONFIG_FILES = ("tokenizer_config.json", "special_tokens_map.json", "added_tokens.json")
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


def _check_safetensors(path: Path) -> str | None:
    """Return a reason if ``path`` is not a complete safetensors file."""
    size = path.stat().st_size
    if size < 8:
        return f"{path.name} is {size} bytes: truncated or empty"
    with open(path, "rb") as fh:
        (header_len,) = struct.unpack("<Q", fh.read(8))
        if header_len <= 0 or 8 + header_len > size:
            return f"{path.name}: header length {header_len} exceeds the file size {size} (truncated?)"
        try:
            header = json.loads(fh.read(header_len))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            return f"{path.name}: unreadable header ({exc}); the file is corrupt"
    try:
        end = max((int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"), default=0)
    except (AttributeError, KeyError, TypeError, IndexError, ValueError):
        return f"{path.name}: malformed header (no tensor data_offsets); the file is corrupt"
    if 8 + header_len + end != size:
        return (f"{path.name} is {size} bytes but its header describes {8 + header_len + end} bytes: "
                f"truncated or corrupt (re-copy the checkpoint)")
    return None


#: safetensors float dtypes -> (numpy view of the bytes, exponent mask when numpy has no such float)
_FLOAT_VIEWS = {"F64": (np.float64, None), "F32": (np.float32, None), "F16": (np.float16, None),
                "BF16": (np.uint16, 0x7F80)}


def _nonfinite_tensors(path: Path) -> list[str]:
    """Names of the floating-point tensors of a (structurally valid) safetensors file that hold NaN or Inf.
    Memory-mapped: ~50 ms for the default model's 300 MB once the file is in the page cache."""
    bad = []
    with open(path, "rb") as fh:
        (n,) = struct.unpack("<Q", fh.read(8))
        header = json.loads(fh.read(n))
        with mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mm:
            for name, info in header.items():
                if name == "__metadata__" or info.get("dtype") not in _FLOAT_VIEWS:
                    continue
                view, mask = _FLOAT_VIEWS[info["dtype"]]
                start, end = (8 + n + int(o) for o in info["data_offsets"])
                arr = np.frombuffer(mm, dtype=view, count=(end - start) // np.dtype(view).itemsize, offset=start)
                finite = bool(((arr & mask) != mask).all()) if mask else bool(np.isfinite(arr).all())
                del arr  # the mmap cannot close while a view of it exists
                if not finite:
                    bad.append(name)
    return bad


def _read_json_object(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidInputError(f"{path} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise InvalidInputError(f"{path} must hold a JSON object {{...}}, not {type(data).__name__} {data!r:.40}")
    return data


def _file_sha256(path: Path, h: "hashlib._Hash") -> None:
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)


@dataclass
class Encoded:
    input_ids: np.ndarray  # int64 [B, L], padded with pad_token_id
    attention_mask: np.ndarray  # int64 [B, L]
    lengths: list[int]  # true token counts before truncation
    truncated: int  # how many rows were cut to max_length


@dataclass
class ModelBundle:
    path: Path
    config: dict[str, Any]
    generation_config: dict[str, Any]
    family: Any
    source_prefix: str | None = None
    _hash: str | None = field(default=None, repr=False)

    # ---- loading -------------------------------------------------------------------
    @classmethod
    def load(cls, path: str | os.PathLike, source_prefix: str | None = None) -> "ModelBundle":
        path = Path(path)
        if not path.exists():
            raise InvalidInputError(f"Model directory {path} does not exist. Pass --model DIR with a Hugging Face "
                                    f"checkpoint (config.json, weights, tokenizer files).")
        if not path.is_dir():
            raise InvalidInputError(f"--model {path} is a file; it must be a checkpoint directory")
        cfg_path = path / "config.json"
        if not cfg_path.exists():
            raise InvalidInputError(f"{path} has no config.json: not a Hugging Face checkpoint directory")
        config = _read_json_object(cfg_path)
        gen_path = path / "generation_config.json"
        generation = _read_json_object(gen_path) if gen_path.exists() else {}
        checker = ConfigurationChecker(f"Model {path}")
        family = resolve_family(config, where=f"Model {path}", generation_config=generation, checker=checker)
        weights = [path / w for w in WEIGHT_FILES if (path / w).exists()]
        checker.check(bool(weights), f"no weights file ({' or '.join(WEIGHT_FILES)})")
        for w in weights:
            if w.suffix == ".safetensors":
                reason = _check_safetensors(w)
                checker.check(reason is None, reason or "")
                bad = _nonfinite_tensors(w) if reason is None else []
                checker.check(not bad, f"{w.name}: NaN or Inf values in {len(bad)} tensor(s) "
                                       f"({', '.join(bad[:3])}{', ...' if len(bad) > 3 else ''}): a corrupt or "
                                       f"diverged checkpoint; every backend would generate garbage from it")
        if family is not None:
            family.check_tokenizer_files(path, checker)
        checker.validate()
        return cls(path=path, config=config, generation_config=generation, family=family,
                   source_prefix=source_prefix)

    # ---- identity ------------------------------------------------------------------
    @property
    def family_name(self) -> str:
        return self.family.name

    @property
    def content_hash(self) -> str:
        """sha256 over config, generation config, weights and tokenizer files."""
        if self._hash is None:
            h = hashlib.sha256()
            for f in sorted(p for p in self.path.iterdir() if p.is_file()):
                if f.name in ("train_report.json", "README.md") or f.name.startswith("."):
                    continue
                h.update(f.name.encode())
                _file_sha256(f, h)
            self._hash = h.hexdigest()
        return self._hash

    @cached_property
    def normalized(self) -> NormalizedConfig:
        return self.family.normalize(self.config)

    @cached_property
    def conventions(self) -> GenerationConventions:
        return self.family.conventions(self.config, self.generation_config, self.source_prefix)

    def describe(self) -> dict[str, Any]:
        return {"path": str(self.path), "family": self.family_name, "content_hash": self.content_hash,
                "model_type": self.config.get("model_type"), "source_prefix": self.conventions.source_prefix,
                "conventions": self.conventions.to_dict()}

    # ---- tokenizer -----------------------------------------------------------------
    def tokenizer_files(self) -> list[str]:
        """The tokenizer's files in the checkpoint: the first complete file set of the family plus the
        optional configuration files next to it (what an app needs to tokenize as this model does)."""
        sets = self.family.tokenizer_file_sets(self.path)
        chosen = next((files for files in sets if all((self.path / f).exists() for f in files)), ())
        extra = [f for f in TOKENIZER_CONFIG_FILES if (self.path / f).exists() and f not in chosen]
        return [*chosen, *extra]

    @cached_property
    def tokenizer(self):
        transformers = require("transformers", "tokenization")
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return transformers.AutoTokenizer.from_pretrained(str(self.path), local_files_only=True)
        except Exception as exc:  # transformers raises many types here
            raise InvalidInputError(f"Could not load the tokenizer from {self.path}: {exc}") from exc

    def encode_sources(self, texts: list[str], max_length: int, strict: bool = False) -> Encoded:
        """Tokenize sources (with the task prefix); cut rows longer than ``max_length``."""
        prefix = self.conventions.source_prefix
        texts = [prefix + t for t in texts]
        tok = self.tokenizer
        full = tok(texts, add_special_tokens=True, verbose=False)["input_ids"]
        lengths = [len(x) for x in full]
        too_long = [i for i, n in enumerate(lengths) if n > max_length]
        if too_long and strict:
            raise InputTooLongError(
                f"{len(too_long)} source(s) exceed the static source length {max_length} tokens "
                f"(first: sentence {too_long[0] + 1} of this batch, {lengths[too_long[0]]} tokens). Raise --max-source-length "
                f"or drop --strict-length to truncate them with a warning.")
        rows = []
        eos = self.conventions.eos_token_id
        for ids in full:
            if len(ids) > max_length:
                ids = ids[: max_length - 1] + ([eos] if ids[-1] == eos else [ids[max_length - 1]])
            rows.append(ids)
        width = max(len(r) for r in rows) if rows else 1
        pad = self.conventions.pad_token_id
        input_ids = np.full((len(rows), width), pad, dtype=np.int64)
        mask = np.zeros((len(rows), width), dtype=np.int64)
        for i, r in enumerate(rows):
            input_ids[i, : len(r)] = r
            mask[i, : len(r)] = 1
        return Encoded(input_ids, mask, lengths, len(too_long))

    def encode_targets(self, texts: list[str]) -> list[list[int]]:
        """Target token ids (with EOS), for calibration prefixes and teacher forcing."""
        return list(self.tokenizer(text_target=texts, add_special_tokens=True, verbose=False)["input_ids"])

    def decode(self, sequences: list[list[int]]) -> list[str]:
        return self.tokenizer.batch_decode(sequences, skip_special_tokens=True)

    # ---- reference model -----------------------------------------------------------
    def load_torch_model(self):
        """The PyTorch FP32 model in eval mode (loaded from local files only)."""
        transformers = require("transformers", "the PyTorch reference")
        require("torch", "the PyTorch reference")
        cls = getattr(transformers, self.family.hf_model_class, transformers.AutoModelForSeq2SeqLM)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                model = cls.from_pretrained(str(self.path), local_files_only=True)
        except Exception as exc:
            raise InvalidInputError(f"Could not load the weights from {self.path}: {exc}") from exc
        model.eval()
        return model
