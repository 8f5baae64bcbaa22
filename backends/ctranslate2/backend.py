"""CTranslate2 behind the seqquant contract.

* ``prepare`` converts the local checkpoint with CT2's Transformers converter
  (:mod:`backends.ctranslate2.convert`, with the vocabulary/decoder-start fixes that make
  CT2 FP32 reproduce ``transformers`` greedy search) and stores the weights in the
  variant's compute type, so the artifact's bytes are the deployable model's size.
* ``generate`` is CT2's own ``Translator.translate_batch`` (greedy or beam search in C++,
  with CT2's KV cache), with HF's generation conventions mapped onto CT2 options.
* ``first_step_logits``/``decode_step`` come from CT2 too: ``translate_batch`` with
  ``return_logits_vocab=True`` returns the raw (pre-softmax) decoder logits of every
  position of the hypothesis, teacher-forced through ``target_prefix``.

CT2's ``Translator`` has no public "run the encoder only" or "one decoder step with a
given cache" call, so ``encode`` only records the source and every ``decode_step``
re-runs encoder + decoder over the whole prefix: a step costs O(prefix length) and a
split-generated sentence O(T^2) decoder positions. That is correct (the split-generation
suite compares tokens, not speed) but must not be used for speed measurements; the
speed path is ``generate`` (CT2's native loop).
"""
from __future__ import annotations

import math
import os
import platform
from pathlib import Path
from typing import Any

import numpy as np

from backends._imports import require, version_of
from backends.base import EncoderState, Seq2SeqBackend
from backends.ctranslate2.convert import INFO_FILE, convert_checkpoint, read_vocabulary
from backends.ctranslate2.errors import ComputeTypeUnsupportedError
from backends.errors import BackendStateError, InvalidInputError, NonFiniteLogitsError
from backends.machine import cpu_model

COMPUTE_TYPES = ("float32", "int8", "int8_float32", "int8_float16", "int8_bfloat16", "int16", "float16", "bfloat16")
_PRECISION = {"float32": "fp32", "int8": "int8", "int8_float32": "int8-float32", "int16": "int16",
              "float16": "fp16", "bfloat16": "bf16", "int8_float16": "int8-float16",
              "int8_bfloat16": "int8-bfloat16"}


#: ``gemm_library`` choices: CT2's own default (Intel MKL on GenuineIntel CPUs, oneDNN elsewhere; a
#: user's ``CT2_USE_MKL`` wins), or one forced through ``CT2_USE_MKL``
GEMM_LIBRARIES = ("auto", "mkl", "dnnl")
#: the library CT2 resolved in this process: CT2 reads ``CT2_USE_MKL`` once, at its first GEMM query
_process_gemm: str | None = None


def use_gemm_library(choice: str, device: str = "cpu") -> tuple[str | None, list[str]]:
    """Make CT2 use GEMM library ``choice`` in this process, before its first GEMM query.

    Returns ``(library, reasons)``: the library CT2 runs (``"mkl"``/``"dnnl"``; ``None`` where it
    is neither, e.g. off x86 or on a GPU) and why ``choice`` cannot be honoured (empty: it is).
    CT2 reads ``CT2_USE_MKL`` once, at its first GEMM query in a process (``cpu/backend.cc``), so
    a different choice later needs a new process (the orchestrator runs every backend in its
    own). What CT2 really runs is read back from it: only its MKL backend has an int16 GEMM.
    """
    global _process_gemm
    if choice not in GEMM_LIBRARIES:
        return None, [f"gemm_library '{choice}' is not one of {', '.join(GEMM_LIBRARIES)}"]
    x86 = platform.machine().lower() in ("x86_64", "amd64", "i686", "x86")
    if device != "cpu" or not x86:
        where = f"device '{device}'" if device != "cpu" else f"a {platform.machine()} CPU"
        return None, [] if choice == "auto" else [f"gemm_library '{choice}' applies to x86 CPUs only, not {where}"]
    if _process_gemm is None:
        if choice != "auto":
            os.environ["CT2_USE_MKL"] = "1" if choice == "mkl" else "0"
        ct2 = require("ctranslate2", "the CTranslate2 backends")
        try:
            supported = set(ct2.get_supported_compute_types("cpu"))
        except (ValueError, RuntimeError) as exc:  # "This CTranslate2 binary was not compiled with Intel MKL"
            return None, [f"CTranslate2 cannot use gemm_library '{choice}' (CT2_USE_MKL="
                          f"{os.environ.get('CT2_USE_MKL', '')!r}): {exc}"]
        _process_gemm = "mkl" if "int16" in supported else "dnnl"
    if choice != "auto" and choice != _process_gemm:
        return _process_gemm, [f"gemm_library '{choice}' cannot be used: CTranslate2 already runs "
                               f"{_process_gemm} in this process (it reads CT2_USE_MKL once, at first use); "
                               f"run this backend in its own process, as the compare command does"]
    return _process_gemm, []


def preflight_compute_type(compute_type: str, device: str = "cpu") -> list[str]:
    """Reasons ``compute_type`` cannot run on ``device`` here (empty list: it can)."""
    if compute_type not in COMPUTE_TYPES:
        return [f"'{compute_type}' is not a CTranslate2 compute type (known: {', '.join(COMPUTE_TYPES)})"]
    ct2 = require("ctranslate2", "the CTranslate2 backends")
    try:
        supported = set(ct2.get_supported_compute_types(device))
    except (ValueError, RuntimeError) as exc:
        return [f"CTranslate2 cannot use device '{device}': {exc}"]
    if compute_type in supported:
        return []
    reason = (f"compute type '{compute_type}' is not supported on {device} by ctranslate2 "
              f"{version_of('ctranslate2')} (ctranslate2.get_supported_compute_types('{device}') = "
              f"{sorted(supported)})")
    if compute_type == "int16" and device == "cpu":
        reason += (f"; CT2's int16 GEMM exists only in its Intel MKL backend, which CT2 enables by default "
                   f"on GenuineIntel CPUs only (this CPU: {cpu_model()}); gemm_library='mkl' forces it")
    elif compute_type in ("float16", "bfloat16", "int8_float16", "int8_bfloat16") and device == "cpu":
        reason += "; this CPU lacks the instructions CT2 needs for that 16-bit float type"
    return [reason]


class CTranslate2Backend(Seq2SeqBackend):
    runtime = "ctranslate2"
    precision = "fp32"
    search = "native"  # translate_batch
    OPTIONS = {"compute_type": "float32", "device": "cpu", "gemm_library": "auto"}

    def __init__(self, name: str | None = None, **options: Any):
        super().__init__(name, **options)
        ct = str(self.options["compute_type"])
        if ct not in COMPUTE_TYPES:
            raise InvalidInputError(f"Backend '{self.name}': compute_type '{ct}' is not a CTranslate2 compute "
                                    f"type; choose from {', '.join(COMPUTE_TYPES)}")
        if self.options["gemm_library"] not in GEMM_LIBRARIES:
            raise InvalidInputError(f"Backend '{self.name}': gemm_library '{self.options['gemm_library']}' is not "
                                    f"one of {', '.join(GEMM_LIBRARIES)}")
        self._translator = None
        self._gemm: str | None = None
        self._effective_compute_type: str | None = None
        self._vocab: list[str] = []
        self._tok2id: dict[str, int] = {}

    # ---- identity ------------------------------------------------------------------
    @property
    def compute_type(self) -> str:
        return str(self.options["compute_type"])

    @property
    def device(self) -> str:
        return str(self.options["device"])

    @property
    def precision_label(self) -> str:
        return _PRECISION.get(self.compute_type, self.compute_type)

    def runtime_versions(self) -> dict[str, str]:
        return {"ctranslate2": version_of("ctranslate2"), "transformers": version_of("transformers")}

    def quantization_settings(self) -> dict[str, Any]:
        q: dict[str, Any] = {"compute_type": self.compute_type, "weights_stored_as": self.compute_type}
        if self._effective_compute_type is not None:
            q["effective_compute_type"] = self._effective_compute_type
        if self._gemm is not None:
            # the int8 GEMM library changes results (default model, AMD EPYC: 73.6% vs 90.9% identical
            # to FP32 with oneDNN vs MKL), so it is part of the signature
            q["gemm_library"] = self._gemm
        if self.compute_type.startswith("int8"):
            # int8 weights of linear+embedding layers, symmetric, one scale per output row; activations
            # quantized dynamically per row inside each GEMM; all other layers run in float
            q["scheme"] = "w8-per-row-sym+a8-dynamic"
        elif self.compute_type == "int16":
            q["scheme"] = "w16+a16-mkl"
        return q

    # ---- preflight -----------------------------------------------------------------
    def preflight(self) -> list[str]:
        """Why this variant cannot run here (empty: it can). Call before ``prepare``."""
        self._gemm, reasons = use_gemm_library(str(self.options["gemm_library"]), self.device)
        return reasons or preflight_compute_type(self.compute_type, self.device)

    def _require_supported(self) -> None:
        reasons = self.preflight()
        if reasons:
            raise ComputeTypeUnsupportedError(self.name, reasons)

    # ---- lifecycle -----------------------------------------------------------------
    def prepare(self, model, workdir, calibration=None, force: bool = False):
        self._require_supported()  # a clean, explained skip before any conversion work
        artifacts = super().prepare(model, workdir, calibration, force)
        if self._effective_compute_type is None:
            # the signature is taken right after prepare(): resolve what CT2 will actually run
            # (e.g. "int8" runs as "int8_float32" on CPU) by loading the artifact once
            ct2 = require("ctranslate2", self.name)
            probe = ct2.Translator(str(artifacts.directory), device=self.device, compute_type=self.compute_type,
                                   inter_threads=1, intra_threads=1)
            self._effective_compute_type = str(probe.compute_type)
            del probe
        return artifacts

    def prepare_impl(self, model, outdir: Path, calibration) -> dict[str, Any]:
        info = convert_checkpoint(model, outdir, quantization=self.compute_type)
        files = {p.stem if p.name != INFO_FILE else "conversion_info": p.name
                 for p in sorted(outdir.iterdir()) if p.is_file()}
        weights = (outdir / "model.bin").stat().st_size
        return {"files": files, "extra": {"conversion": info, "model_bin_bytes": weights,
                                          "compute_type": self.compute_type}}

    def activate_impl(self) -> None:
        self._require_supported()
        if self.artifacts is None or self.artifacts.directory is None:
            raise BackendStateError(f"{self.name}: no converted model; prepare() first")
        ct2 = require("ctranslate2", self.name)
        directory = Path(self.artifacts.directory)
        self._vocab = read_vocabulary(directory)
        self._tok2id = {t: i for i, t in enumerate(self._vocab)}
        if len(self._vocab) != self.model.conventions.vocab_size:
            raise BackendStateError(f"{self.name}: converted vocabulary has {len(self._vocab)} tokens, "
                                    f"the model {self.model.conventions.vocab_size}; rebuild with force=True")
        try:
            self._translator = ct2.Translator(str(directory), device=self.device, compute_type=self.compute_type,
                                              inter_threads=1, intra_threads=self.threads)
        except ValueError as exc:  # e.g. "Requested int16 compute type, but ... do not support"
            raise ComputeTypeUnsupportedError(self.name, [str(exc)]) from exc
        self._effective_compute_type = str(self._translator.compute_type)

    def deactivate_impl(self) -> None:
        if self._translator is not None:
            self._translator.unload_model()
        self._translator = None

    # ---- token mapping -------------------------------------------------------------
    def _source_tokens(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> list[list[str]]:
        vocab = self._vocab
        n = len(vocab)
        rows = []
        for ids, mask in zip(input_ids, attention_mask):
            keep = ids[mask.astype(bool)]
            if keep.size and (keep.min() < 0 or keep.max() >= n):
                raise InvalidInputError(f"{self.name}: token id out of the model vocabulary [0, {n})")
            rows.append([vocab[i] for i in keep.tolist()])
        return rows

    def _ids(self, tokens: list[str]) -> list[int]:
        return [self._tok2id[t] for t in tokens]

    def _prefix_tokens(self, decoder_input_ids: np.ndarray) -> list[list[str]] | None:
        """``decoder_input_ids`` without the decoder start column, as CT2 target prefixes."""
        if decoder_input_ids.shape[1] <= 1:
            return None
        n = len(self._vocab)
        body = decoder_input_ids[:, 1:]
        if body.min() < 0 or body.max() >= n:
            raise InvalidInputError(f"{self.name}: decoder token id out of the model vocabulary [0, {n})")
        return [[self._vocab[i] for i in row] for row in body.tolist()]

    # ---- inference -----------------------------------------------------------------
    def _raw_logits(self, source: list[list[str]], decoder_input_ids: np.ndarray) -> np.ndarray:
        """Raw logits of the next token after ``decoder_input_ids`` (start column included)."""
        t = decoder_input_ids.shape[1]
        prefix = self._prefix_tokens(decoder_input_ids)
        results = self._translator.translate_batch(
            source, target_prefix=prefix, beam_size=1, max_decoding_length=t, min_decoding_length=0,
            max_input_length=0, return_logits_vocab=True, end_token=[],
        )
        out = np.empty((len(source), len(self._vocab)), dtype=np.float32)
        for i, r in enumerate(results):
            steps = np.asarray(r.logits[0], dtype=np.float32)
            if steps.ndim != 2 or steps.shape[0] < t or steps.shape[1] != len(self._vocab):
                raise BackendStateError(f"{self.name}: CT2 returned logits of shape {steps.shape} for a prefix "
                                        f"of {t} tokens (expected [{t}, {len(self._vocab)}])")
            out[i] = steps[t - 1]
        return out

    def encode_impl(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> EncoderState:
        # CT2 runs its encoder inside translate_batch; the state is the source itself.
        return EncoderState({"input_ids": np.array(input_ids, dtype=np.int64)}, np.array(attention_mask),
                            input_ids.shape[0])

    def decode_step_impl(self, state: EncoderState, decoder_input_ids: np.ndarray, cache: Any):
        """Logits of the next token given the whole prefix; recomputes encoder + prefix (no cache)."""
        source = self._source_tokens(state.tensors["input_ids"], state.attention_mask)
        return self._raw_logits(source, decoder_input_ids), None

    def first_step_logits_impl(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        start = np.full((input_ids.shape[0], 1), self.model.conventions.decoder_start_token_id, dtype=np.int64)
        return self._raw_logits(self._source_tokens(input_ids, attention_mask), start)

    def generation_options(self, max_new_tokens: int, num_beams: int) -> dict[str, Any]:
        """HF generation conventions mapped onto ``translate_batch`` options (see tests)."""
        conv = self.model.conventions
        max_len = max_new_tokens
        if conv.forced_eos_token_id is not None and conv.forced_eos_token_id == conv.eos_token_id:
            # HF forces EOS as the last of max_new_tokens: at most max_new_tokens - 1 real tokens
            max_len = max_new_tokens - 1
        opts: dict[str, Any] = dict(
            beam_size=num_beams, num_hypotheses=1, max_decoding_length=max_len, max_input_length=0,
            # HF: EOS banned while cur_len (start token included) < min_length
            min_decoding_length=max(0, conv.min_length - 1),
            length_penalty=float(conv.length_penalty), no_repeat_ngram_size=int(conv.no_repeat_ngram_size),
            return_end_token=False,
        )
        if conv.bad_words_ids:
            opts["suppress_sequences"] = [[self._vocab[i]] for i in conv.bad_words_ids]
        return opts

    def generate_impl(self, input_ids, attention_mask, max_new_tokens: int, num_beams: int) -> list[list[int]]:
        conv = self.model.conventions
        source = self._source_tokens(input_ids, attention_mask)
        opts = self.generation_options(max_new_tokens, num_beams)
        if opts["max_decoding_length"] < 1:
            return [[] for _ in source]  # only the forced EOS fits
        prefix = None
        if conv.forced_bos_token_id is not None:
            prefix = [[self._vocab[int(conv.forced_bos_token_id)]] for _ in source]
        # return_scores: the only trace of non-finite logits inside CT2's own loop (a NaN log-probability)
        results = self._translator.translate_batch(source, target_prefix=prefix, return_scores=True, **opts)
        bad = [i for i, r in enumerate(results) if any(math.isnan(x) or x == math.inf for x in r.scores)]
        if bad:
            raise NonFiniteLogitsError(
                f"{self.name}: translate_batch returned a NaN score (its log-probability: the "
                f"model's logits or activations are not finite) for {len(bad)} of {len(results)} sentences "
                f"of this batch (first: sentence {bad[0] + 1})")
        pad = conv.pad_token_id
        out = []
        for r in results:
            ids = self._ids(r.hypotheses[0])
            # like the torch-fp32 oracle: no pad tokens in returned hypotheses
            out.append([i for i in ids if i != pad])
        return out
