"""The contract every runtime implements: :class:`Seq2SeqBackend`.

Shape of the contract (Polygraphy's loader/runner split, adapted to seq2seq):

* ``prepare(model, workdir, calibration)`` builds or reuses artifacts. The cache key is
  a content hash of the model + the backend's settings + runtime versions; every
  artifact directory carries a ``manifest.json`` with sha256 checksums, so a corrupt
  artifact is detected and rebuilt, never loaded.
* ``activate()`` is the only place runtime resources (sessions, interpreters,
  threads) are created; ``deactivate()`` frees them. Backends are context managers.
* ``encode(input_ids, attention_mask)`` -> :class:`EncoderState` (opaque to the loop).
* ``decode_step(state, decoder_input_ids, cache)`` -> ``(logits [B, V] float32, cache)``.
  ``decoder_input_ids`` is the whole prefix ``[B, t]`` so far (starting with the decoder
  start token); a backend with a KV cache uses only the last column and its cache.
* ``generate(...)`` defaults to the shared host loop in :mod:`backends.generation`
  (greedy and beam search written once); a runtime with a native generator overrides
  ``generate_impl`` but still exposes step logits.

Public methods check state and inputs, then delegate to ``*_impl`` hooks.
"""
from __future__ import annotations

import abc
import hashlib
import json
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from backends.errors import ArtifactError, BackendStateError, InvalidInputError
from backends.machine import build_identity
from backends.machine import describe as describe_machine

ARTIFACT_FORMAT_VERSION = 2  # 2: generation.json names the tokenizer files and the mask rule
#: encoder -> decoder boundary configurations a quantized split backend can run (the split-
#: generation suite's boundary matrix). "raw" passes int8 bytes across unchanged.
BOUNDARY_MODES = (
    "fp32enc-fp32dec",
    "int8enc-dequant-fp32dec",
    "fp32enc-quant-int8dec",
    "int8enc-requant-int8dec",
    "int8enc-raw-int8dec",
)
SEQQUANT_VERSION = "0.1.0"
MANIFEST = "manifest.json"


# ---------------------------------------------------------------------------------------
# Data passed across the contract
# ---------------------------------------------------------------------------------------
@dataclass
class CalibrationSet:
    """Calibration pool: parallel source/target sentences (the default is Multi30k val)."""

    sources: list[str]
    targets: list[str]
    name: str = "calibration"

    def __post_init__(self) -> None:
        if len(self.sources) != len(self.targets):
            raise InvalidInputError(f"calibration set '{self.name}': {len(self.sources)} sources but "
                                    f"{len(self.targets)} targets")

    def fingerprint(self) -> str:
        h = hashlib.sha256()
        for s, t in zip(self.sources, self.targets):
            h.update(s.encode("utf-8") + b"\0" + t.encode("utf-8") + b"\n")
        return h.hexdigest()[:16]


@dataclass
class EncoderState:
    """What ``encode`` returns. ``tensors`` are batch-first; the loop never looks inside."""

    tensors: dict[str, Any]
    attention_mask: np.ndarray  # int64 [B, S] as given to encode
    batch_size: int


@dataclass
class Signature:
    """How a result was made (sacrebleu-style). Built from the live backend."""

    backend: str
    runtime: str
    runtime_version: str
    precision: str
    threads: int
    quantization: dict[str, Any] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    seqquant: str = SEQQUANT_VERSION

    def short(self) -> str:
        q = ",".join(f"{k}={v}" for k, v in sorted(self.quantization.items())) or "none"
        kernels = f"|k:{self.settings['kernels']}" if self.settings.get("kernels") else ""
        return (f"be:{self.backend}|rt:{self.runtime}-{self.runtime_version}|p:{self.precision}|q:{q}"
                f"|thr:{self.threads}{kernels}|v:{self.seqquant}")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["short"] = self.short()
        return d


@dataclass
class Artifacts:
    """What ``prepare`` built or reused."""

    directory: str | None
    files: dict[str, str]  # role -> absolute path
    bytes: int
    cache_key: str
    reused: bool
    build_seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)  # e.g. op audit, boundary params
    #: role -> sha256 of the file's bytes (from the manifest): what a baseline compares across machines
    sha256: dict[str, str] = field(default_factory=dict)
    #: the machine that built them (:func:`backends.machine.build_identity`; empty for older manifests)
    built_on: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class FloatFallback:
    """How a backend leaves named parts of its network in float (selective float, for a rescue search):
    the backend option that lists them, every part it accepts (name -> what it covers, in the order the
    parts are named), the parts this backend already leaves in float, and names that stand for several
    parts (TFLite's ``layer_norm``: ``encoder.layer_norm`` and ``decoder.layer_norm``)."""
    option: str
    parts: dict[str, str]
    current: tuple[str, ...] = ()
    aliases: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def canonical(self, parts) -> tuple[str, ...]:
        """``parts`` with aliases expanded and duplicates dropped, in :attr:`parts` order (one name per set
        of parts); an unknown part is an InvalidInputError listing the accepted ones."""
        parts = {q for p in parts for q in self.aliases.get(p, (p,))}
        unknown = sorted(parts - set(self.parts))
        if unknown:
            raise InvalidInputError(f"unknown float part(s) {unknown}; choose from "
                                    + ", ".join(f"{k} ({v})" for k, v in self.parts.items())
                                    + "".join(f"; {a} stands for {', '.join(ps)}" for a, ps in self.aliases.items()))
        return tuple(p for p in self.parts if p in parts)

    def units(self, names=None) -> tuple[tuple[str, ...], ...]:
        """What a search tries as one step: each of ``names`` as its canonical parts, an alias as one unit (a
        region in every graph) and a part as its own; by default every alias and every part no alias covers.
        In :attr:`parts` order (of each unit's first part), whatever the order of ``names``."""
        if names is None:
            covered = {p for ps in self.aliases.values() for p in ps}
            names = [*self.aliases, *(p for p in self.parts if p not in covered)]
        order = list(self.parts)
        return tuple(sorted(dict.fromkeys(self.canonical([n]) for n in names), key=lambda u: order.index(u[0])))

    def named(self, parts) -> tuple[str, ...]:
        """``parts`` (canonical) named briefly: every alias whose parts are all there stands for them."""
        parts = self.canonical(parts)
        out: list[str] = []
        for p in parts:
            alias = next((a for a, ps in self.aliases.items() if p in ps and set(ps) <= set(parts)), p)
            if alias not in out:
                out.append(alias)
        return tuple(out)


def check_manifest(target: Path, key: str, verify: bool = True) -> tuple[dict[str, Any] | None, dict[str, Path],
                                                                         list[str]]:
    """Read the artifact manifest in ``target`` and check it against cache key ``key`` and its files
    against their recorded size and (``verify``) sha256. Returns (manifest, role -> file, problems); the
    artifacts are intact when ``problems`` is empty. Used by the cache (rebuild) and by export (refuse)."""
    mpath = target / MANIFEST
    if not mpath.is_file():
        return None, {}, [f"{mpath} is missing"]
    try:
        manifest = json.loads(mpath.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        return None, {}, [f"{mpath} is not valid JSON ({exc})"]
    if manifest.get("cache_key") != key:
        return manifest, {}, [f"{target} holds other artifacts (cache key {str(manifest.get('cache_key'))[:16]} "
                              f"vs {str(key)[:16]})"]
    files, problems = {}, []
    for role, info in (manifest.get("files") or {}).items():
        p = target / info["path"]
        if not p.is_file():
            problems.append(f"{p} is missing")
        elif p.stat().st_size != info["bytes"] or (verify and sha256_file(p) != info["sha256"]):
            problems.append(f"{p} changed since it was built (checksum mismatch)")
        else:
            files[role] = p
    return manifest, files, problems


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# ---------------------------------------------------------------------------------------
# The contract
# ---------------------------------------------------------------------------------------
class Seq2SeqBackend(abc.ABC):
    #: runtime family name recorded in signatures ("torch", "tflite", "onnxruntime", "ctranslate2")
    runtime: ClassVar[str] = "unknown"
    #: default precision label ("fp32", "int8", "int8-dynamic", "int16x8", ...)
    precision: ClassVar[str] = "fp32"
    #: options this class accepts, with defaults; registry variants override values
    OPTIONS: ClassVar[dict[str, Any]] = {}
    #: options shared by every backend
    COMMON_OPTIONS: ClassVar[dict[str, Any]] = {"threads": 2, "max_source_length": 64, "max_new_tokens": 64}
    #: options that change how artifacts run, not what they are: left out of the cache key (the
    #: results' fingerprint still has them; the signature records them)
    RUN_OPTIONS: ClassVar[tuple[str, ...]] = ("threads",)
    #: the shared search drops what is finished from the batch (greedy: a row once it has emitted EOS; beam
    #: search: a source whose best hypotheses are final, with its beams; the encoder state and cache
    #: reordered with :meth:`select`), so a batch stops paying for sentences already done, as CTranslate2
    #: does. A backend whose state cannot be reordered sets this False.
    compact_finished: ClassVar[bool] = True
    #: who runs the search: "shared" (:mod:`backends.generation`) or "native" (the runtime's own
    #: generator, e.g. transformers' ``generate`` or CTranslate2's ``translate_batch``)
    search: ClassVar[str] = "shared"

    def __init__(self, name: str | None = None, **options: Any):
        self.name = name or type(self).__name__
        accepted = {**self.COMMON_OPTIONS, **self.OPTIONS}
        unknown = sorted(set(options) - set(accepted))
        if unknown:
            raise InvalidInputError(f"Backend '{self.name}' got unknown option(s) {unknown}; "
                                    f"accepted: {sorted(accepted)}")
        self.options: dict[str, Any] = {**accepted, **options}
        self.model = None  # ModelBundle after prepare()
        self.artifacts: Artifacts | None = None
        self._active = False

    # ---- identity ------------------------------------------------------------------
    @property
    def threads(self) -> int:
        return int(self.options["threads"])

    @property
    def max_source_length(self) -> int:
        return int(self.options["max_source_length"])

    @property
    def max_new_tokens(self) -> int:
        return int(self.options["max_new_tokens"])

    @property
    def precision_label(self) -> str:
        return str(self.options.get("precision") or self.precision)

    def runtime_versions(self) -> dict[str, str]:
        """Versions of every package whose change would change the artifacts or results."""
        return {}

    def quantization_settings(self) -> dict[str, Any]:
        """Quantization settings for the signature (empty for FP32)."""
        return {}

    def settings(self) -> dict[str, Any]:
        """Everything that determines the artifacts (part of the cache key)."""
        return {k: v for k, v in sorted(self.options.items()) if k not in self.RUN_OPTIONS}

    def signature(self) -> Signature:
        versions = self.runtime_versions()
        main = next(iter(versions.values()), "unknown")
        return Signature(backend=self.name, runtime=self.runtime, runtime_version=main,
                         precision=self.precision_label, threads=self.threads,
                         quantization=self.quantization_settings(),
                         settings={**self.settings(), **{k: self.options[k] for k in self.RUN_OPTIONS
                                                         if k != "threads"},
                                   "host_loop": self.host_loop(), "versions": versions})

    def host_loop(self) -> str:
        """How the tokens are searched (recorded in the signature, so a baseline can tell a change of
        seqquant's loop from a change of the runtime)."""
        if self.search != "shared":
            return self.search
        return "shared, finished rows leave the batch" if self.compact_finished else "shared, every row every step"

    def cache_key(self, model) -> str:
        payload = {"model": model.content_hash, "class": f"{type(self).__module__}.{type(self).__qualname__}",
                   "settings": self.settings(), "versions": self.runtime_versions(),
                   "format": ARTIFACT_FORMAT_VERSION, "source_prefix": model.conventions.source_prefix}
        return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()

    # ---- lifecycle -----------------------------------------------------------------
    def prepare(self, model, workdir: str | os.PathLike, calibration: CalibrationSet | None = None,
                force: bool = False) -> Artifacts:
        """Build or reuse artifacts under ``workdir``; see the module docstring."""
        if self._active:
            raise BackendStateError(f"{self.name}: prepare() called while active; deactivate() first")
        self.model = model
        key = self._artifact_key(model, calibration)
        workdir = Path(workdir)
        target = workdir / f"{self.name}-{key[:16]}"
        if not force:
            reused = self.find_artifacts(model, workdir, calibration)
            if reused is not None:
                self.artifacts = reused
                return reused
        if target.exists():
            shutil.rmtree(target)
        tmp = workdir / f".tmp-{self.name}-{key[:16]}-{os.getpid()}"
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
        start = time.perf_counter()
        try:
            result = self.prepare_impl(model, tmp, calibration) or {}
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        files = dict(result.get("files", {}))
        extra = dict(result.get("extra", {}))
        manifest = {"cache_key": key, "backend": self.name, "created": time.time(),
                    "build_seconds": time.perf_counter() - start, "built_on": build_identity(describe_machine()),
                    "extra": extra, "files": {}}
        for role, rel in files.items():
            p = tmp / rel
            if not p.exists():
                raise ArtifactError(f"{self.name}: prepare_impl reported {rel} but did not write it")
            manifest["files"][role] = {"path": rel, "sha256": sha256_file(p), "bytes": p.stat().st_size}
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1, default=str))
        if target.exists():  # built concurrently by another process: ours replaces it
            shutil.rmtree(target, ignore_errors=True)
        os.replace(tmp, target)
        self.artifacts = self._load_manifest(target, key, verify=False, reused=False)
        return self.artifacts

    def _artifact_key(self, model, calibration: CalibrationSet | None) -> str:
        key = self.cache_key(model)
        if calibration is not None and self.uses_calibration():
            key = hashlib.sha256((key + calibration.fingerprint()).encode()).hexdigest()
        return key

    def find_artifacts(self, model, workdir: str | os.PathLike, calibration: CalibrationSet | None = None,
                       verify: bool = True) -> Artifacts | None:
        """The cached artifacts ``prepare`` would reuse (with ``verify``, checksums checked), or None: it
        would build. No runtime import, so the orchestrator can ask before starting a build process."""
        key = self._artifact_key(model, calibration)
        workdir = Path(workdir)
        target = workdir / f"{self.name}-{key[:16]}"
        # the same key under another backend name (a variant differing only in run options,
        # e.g. LiteRT kernels or threads) is the same artifacts: reuse them
        for cand in [target, *sorted(p for p in workdir.glob(f"*-{key[:16]}") if p != target)]:
            found = self._load_manifest(cand, key, verify=verify)
            if found is not None:
                return found
        return None

    def uses_calibration(self) -> bool:
        """True when the artifacts depend on the calibration data (static quantization)."""
        return False

    def _load_manifest(self, target: Path, key: str, verify: bool = True, reused: bool = True):
        manifest, files, problems = check_manifest(target, key, verify)
        if problems:
            return None  # missing, other or corrupt artifacts: the caller rebuilds
        return Artifacts(directory=str(target), files={r: str(p) for r, p in files.items()},
                         bytes=sum(manifest["files"][r]["bytes"] for r in files), cache_key=key, reused=reused,
                         build_seconds=float(manifest.get("build_seconds", 0.0)),
                         extra=manifest.get("extra", {}),
                         sha256={r: manifest["files"][r]["sha256"] for r in files},
                         built_on=manifest.get("built_on") or {})

    def activate(self) -> "Seq2SeqBackend":
        if self._active:
            raise BackendStateError(f"{self.name}: already active")
        if self.model is None:
            raise BackendStateError(f"{self.name}: activate() before prepare()")
        self.activate_impl()
        self._active = True
        return self

    def deactivate(self) -> None:
        if self._active:
            try:
                self.deactivate_impl()
            finally:
                self._active = False

    def __enter__(self) -> "Seq2SeqBackend":
        return self.activate()

    def __exit__(self, *exc) -> None:
        self.deactivate()

    @property
    def is_active(self) -> bool:
        return self._active

    # ---- inference -----------------------------------------------------------------
    def _check_active(self, what: str) -> None:
        if not self._active:
            raise BackendStateError(f"{self.name}: {what}() needs activate() first")

    @staticmethod
    def _check_ids(name: str, arr: Any) -> np.ndarray:
        a = np.asarray(arr)
        if a.ndim != 2 or a.shape[0] < 1 or a.shape[1] < 1:
            raise InvalidInputError(f"{name}: expected a [batch, length] array, got shape {a.shape}")
        if not np.issubdtype(a.dtype, np.integer):
            raise InvalidInputError(f"{name}: expected integer token ids, got dtype {a.dtype}")
        return a.astype(np.int64, copy=False)

    def encode(self, input_ids, attention_mask) -> EncoderState:
        self._check_active("encode")
        ids = self._check_ids("input_ids", input_ids)
        mask = self._check_ids("attention_mask", attention_mask)
        if ids.shape != mask.shape:
            raise InvalidInputError(f"input_ids {ids.shape} and attention_mask {mask.shape} differ in shape")
        return self.encode_impl(ids, mask)

    def decode_step(self, state: EncoderState, decoder_input_ids, cache: Any = None):
        self._check_active("decode_step")
        ids = self._check_ids("decoder_input_ids", decoder_input_ids)
        if ids.shape[0] != state.batch_size:
            raise InvalidInputError(f"decoder_input_ids batch {ids.shape[0]} != encoder batch {state.batch_size}")
        logits, cache = self.decode_step_impl(state, ids, cache)
        logits = np.asarray(logits, dtype=np.float32)
        if logits.ndim != 2 or logits.shape[0] != ids.shape[0]:
            raise BackendStateError(f"{self.name}: decode_step returned logits of shape {logits.shape}, "
                                    f"expected [{ids.shape[0]}, vocab]")
        return logits, cache

    def first_step_logits(self, input_ids, attention_mask) -> np.ndarray:
        """Logits for the first target token (prefix = decoder start), float32 [B, V]."""
        self._check_active("first_step_logits")
        ids = self._check_ids("input_ids", input_ids)
        mask = self._check_ids("attention_mask", attention_mask)
        return np.asarray(self.first_step_logits_impl(ids, mask), dtype=np.float32)

    def first_step_logits_impl(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        state = self.encode_impl(input_ids, attention_mask)
        start = np.full((input_ids.shape[0], 1), self.model.conventions.decoder_start_token_id, dtype=np.int64)
        logits, _ = self.decode_step_impl(state, start, None)
        return logits

    def generate(self, input_ids, attention_mask, max_new_tokens: int | None = None,
                 num_beams: int = 1) -> list[list[int]]:
        """Token ids of the best hypothesis per row (no decoder start, no EOS, no padding)."""
        self._check_active("generate")
        ids = self._check_ids("input_ids", input_ids)
        mask = self._check_ids("attention_mask", attention_mask)
        n = self.max_new_tokens if max_new_tokens is None else int(max_new_tokens)
        if n < 1:
            raise InvalidInputError(f"max_new_tokens must be >= 1, got {n}")
        if int(num_beams) < 1:
            raise InvalidInputError(f"num_beams must be >= 1, got {num_beams}")
        return self.generate_impl(ids, mask, n, int(num_beams))

    def generate_impl(self, input_ids, attention_mask, max_new_tokens: int, num_beams: int) -> list[list[int]]:
        from backends.generation import generate

        return generate(self, input_ids, attention_mask, max_new_tokens, num_beams, self.model.conventions)

    # ---- optional capabilities ----------------------------------------------------------
    def float_fallback(self) -> FloatFallback:
        """The parts of the network this backend can leave in float (``python cli.py rescue`` searches
        them); an InvalidInputError saying why when it cannot."""
        raise InvalidInputError(f"{self.name}: {type(self).__name__} cannot leave parts of its network in float "
                                f"(no selective-float option)")

    def boundary_modes(self) -> tuple[str, ...]:
        """Subset of :data:`BOUNDARY_MODES` this backend can run (empty: not a quantized split)."""
        return ()

    def set_boundary_mode(self, mode: str | None) -> None:
        """Switch the encoder->decoder boundary (None restores the backend's own)."""
        if mode is not None and mode not in self.boundary_modes():
            raise InvalidInputError(f"{self.name}: boundary mode '{mode}' not supported; "
                                    f"supported: {list(self.boundary_modes()) or 'none'}")
        self.set_boundary_mode_impl(mode)

    def set_boundary_mode_impl(self, mode: str | None) -> None:
        pass

    def supports_op_numerics(self) -> bool:
        """Whether :meth:`op_numerics` can measure this backend's quantized ops (the numerics suite); a
        backend that says so implements ``op_numerics_impl(input_ids, attention_mask, max_new_tokens)``."""
        return False

    def op_numerics(self, input_ids, attention_mask, max_new_tokens: int | None = None) -> dict[str, Any]:
        """Translate ``input_ids`` greedily while measuring every quantized op of each graph against the
        same op in float on its dequantized inputs: ``{"kernels": ..., "graphs": {role: summary}}``
        (summary: :meth:`backends.tflite.numerics.OpNumerics.summary`)."""
        self._check_active("op_numerics")
        impl = getattr(self, "op_numerics_impl", None)
        if not self.supports_op_numerics() or impl is None:
            raise InvalidInputError(f"{self.name}: per-op numerics are not available for this backend")
        ids = self._check_ids("input_ids", input_ids)
        mask = self._check_ids("attention_mask", attention_mask)
        if ids.shape != mask.shape:
            raise InvalidInputError(f"input_ids {ids.shape} and attention_mask {mask.shape} differ in shape")
        n = self.max_new_tokens if max_new_tokens is None else int(max_new_tokens)
        if n < 1:
            raise InvalidInputError(f"max_new_tokens must be >= 1, got {n}")
        return impl(ids, mask, n)

    def select(self, obj: Any, indices: np.ndarray) -> Any:
        """Reorder an encoder state or cache along the batch axis (beam search)."""
        return select_batch(obj, indices)

    # ---- hooks ---------------------------------------------------------------------
    @abc.abstractmethod
    def prepare_impl(self, model, outdir: Path, calibration: CalibrationSet | None) -> dict[str, Any]:
        """Write artifacts into ``outdir``; return ``{"files": {role: relpath}, "extra": {...}}``."""

    @abc.abstractmethod
    def activate_impl(self) -> None: ...

    def deactivate_impl(self) -> None:
        pass

    @abc.abstractmethod
    def encode_impl(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> EncoderState: ...

    @abc.abstractmethod
    def decode_step_impl(self, state: EncoderState, decoder_input_ids: np.ndarray, cache: Any): ...


def select_batch(obj: Any, indices: np.ndarray) -> Any:
    """Index every array in a nested structure along axis 0 (numpy, torch, dict, list, tuple)."""
    if obj is None:
        return None
    if isinstance(obj, EncoderState):
        return EncoderState(select_batch(obj.tensors, indices), obj.attention_mask[indices], len(indices))
    if isinstance(obj, np.ndarray):
        return obj[indices]
    if isinstance(obj, dict):
        return {k: select_batch(v, indices) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(select_batch(v, indices) for v in obj)
    if hasattr(obj, "index_select"):  # torch.Tensor, without importing torch
        import torch

        return obj.index_select(0, torch.as_tensor(np.asarray(indices), dtype=torch.long, device=obj.device))
    if isinstance(obj, (int, float, str)):
        return obj
    raise BackendStateError(f"cannot reorder an object of type {type(obj).__name__} along the batch axis; "
                            f"override Seq2SeqBackend.select()")
