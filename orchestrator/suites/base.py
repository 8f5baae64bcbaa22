"""Suites: measurements run on every backend, and their cross-backend comparison.

Two phases, kept apart (Polygraphy's ``Comparator.run`` vs ``compare_accuracy``):

* ``Suite.run(backend, ctx)`` runs *inside the backend's worker process* and returns a
  JSON-serialisable dict of raw measurements. Large arrays go to files under
  ``ctx.outdir`` (referenced by relative path in the dict).
* ``Suite.compare(results, ctx)`` runs in the parent after every backend finished. It
  gets ``{backend_name: run_result}`` for the backends whose run succeeded and returns
  ``{backend_name: extra_fields}`` (agreement with the reference, significance, ...).

A suite result may carry a ``"metrics"`` dict; the engine merges those flat numbers into
``report.json`` ``backends.<name>.metrics``.
"""
from __future__ import annotations

import abc
import functools
import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar

from backends.base import CalibrationSet, Seq2SeqBackend


@dataclass
class SuiteContext:
    model: Any  # backends.model.ModelBundle
    sources: list[str]
    references: list[str]
    outdir: Path  # this backend's directory in the run
    calibration: CalibrationSet | None = None
    settings: dict[str, Any] = field(default_factory=dict)  # num_beams, batch_size, strict_length, ...
    suite_options: dict[str, Any] = field(default_factory=dict)  # [suites.<name>] table of the matrix
    progress: Callable[[int, int, str], None] | None = None  # (done, total, label)
    reference_backend: str | None = None  # the run's reference (suites with ``reference_role`` use it)

    @property
    def num_beams(self) -> int:
        return int(self.settings.get("num_beams", 1))

    @property
    def batch_size(self) -> int:
        return int(self.settings.get("batch_size", 32))

    def report(self, done: int, total: int, label: str = "") -> None:
        if self.progress is not None:
            self.progress(done, total, label)


@dataclass
class CompareContext:
    model: Any
    sources: list[str]
    references: list[str]
    run_dir: Path  # backends' outdirs are run_dir / "backends" / <name>
    reference_backend: str
    settings: dict[str, Any] = field(default_factory=dict)
    suite_options: dict[str, Any] = field(default_factory=dict)

    def backend_dir(self, name: str) -> Path:
        return self.run_dir / "backends" / name


class Suite(abc.ABC):
    name: ClassVar[str]
    description: ClassVar[str] = ""
    #: the options of its ``[suites.<name>]`` table, with their defaults (checked before a run starts)
    defaults: ClassVar[dict[str, Any]] = {}
    #: the keys it adds to ``report.json`` ``backends.<name>.metrics`` (what [tolerances] and rank_by may name)
    metrics: ClassVar[tuple[str, ...]] = ()
    #: those of ``metrics`` where smaller is better (the others: larger is better); baselines gate and
    #: selection ranks by this (:func:`lower_is_better`)
    lower_is_better: ClassVar[frozenset[str]] = frozenset()
    #: modules besides its own (and this one and ``suites.util``) whose code its results depend on
    code_modules: ClassVar[tuple[str, ...]] = ()
    #: whether ``run()`` measures more on the run's reference backend (its results then depend on
    #: which backend is the reference, and the plan fingerprints that)
    reference_role: ClassVar[bool] = False

    def options(self, table: dict[str, Any], where: str) -> dict[str, Any]:
        """Its options: ``defaults`` updated with ``table`` (named ``where`` in messages), checked.
        A suite with value constraints beyond the types of its defaults overrides this."""
        from orchestrator.suites.util import check_suite_options

        return check_suite_options(table, self.defaults, where)

    def supports(self, backend: Seq2SeqBackend) -> bool:
        return True

    @abc.abstractmethod
    def run(self, backend: Seq2SeqBackend, ctx: SuiteContext) -> dict[str, Any]: ...

    def compare(self, results: dict[str, dict[str, Any]], ctx: CompareContext) -> dict[str, dict[str, Any]]:
        return {}


def generate_in_batches(backend: Seq2SeqBackend, model: Any, sources: list[str], batch_size: int, *,
                        num_beams: int = 1, strict: bool = False,
                        progress: Callable[[int, int], None] | None = None) -> tuple[list[list[int]], int]:
    """Token ids of ``sources`` through ``backend``, ``batch_size`` at a time, in order; return (token ids,
    sources cut to the backend's static source length). ``strict``: a longer source is an error
    (InputTooLongError) instead; ``progress(done, total)`` is called after each batch."""
    bs = max(1, int(batch_size))
    out: list[list[int]] = []
    truncated = 0
    for i in range(0, len(sources), bs):
        enc = model.encode_sources(sources[i:i + bs], backend.max_source_length, strict=strict)
        truncated += enc.truncated
        out.extend(backend.generate(enc.input_ids, enc.attention_mask, num_beams=num_beams))
        if progress is not None:
            progress(min(i + bs, len(sources)), len(sources))
    return out, truncated


def translate_all(backend: Seq2SeqBackend, ctx: SuiteContext, sources: list[str] | None = None,
                  num_beams: int | None = None, label: str = "translate",
                  batch_size: int | None = None) -> tuple[list[list[int]], int]:
    """Translate ``sources`` (default: the test set) in batches of ``batch_size`` (default: the run's);
    return (token ids, n truncated)."""
    return generate_in_batches(backend, ctx.model, ctx.sources if sources is None else sources,
                               ctx.batch_size if batch_size is None else batch_size,
                               num_beams=ctx.num_beams if num_beams is None else num_beams,
                               strict=bool(ctx.settings.get("strict_length", False)),
                               progress=lambda done, total: ctx.report(done, total, label))


# name -> "module:Class"; imported only when used
SUITES: dict[str, str] = {
    "quality": "orchestrator.suites.quality:QualitySuite",
    "source-sensitivity": "orchestrator.suites.source_sensitivity:SourceSensitivitySuite",
    "speed": "orchestrator.suites.speed:SpeedSuite",
    "split-generation": "orchestrator.suites.split_generation:SplitGenerationSuite",
    "numerics": "orchestrator.suites.numerics:NumericsSuite",
}


def known_metrics() -> set[str]:
    """Every metric key a suite of this checkout can report (suites whose module is missing add none)."""
    out: set[str] = set()
    for name in SUITES:
        try:
            out.update(get_suite(name).metrics)
        except ImportError:  # a suite module missing from this checkout: it reports nothing
            continue
    return out


def lower_is_better(metric: str) -> bool:
    """Whether a smaller value of ``metric`` is better, as the suite reporting it declares (a metric no
    suite of this checkout reports counts as larger-is-better)."""
    return metric in _lower_is_better()


@functools.lru_cache(maxsize=1)
def _lower_is_better() -> frozenset[str]:
    out: set[str] = set()
    for name in SUITES:
        try:
            out.update(get_suite(name).lower_is_better)
        except ImportError:  # a suite module missing from this checkout declares nothing
            continue
    return frozenset(out)


def get_suite(name: str) -> Suite:
    if name not in SUITES:
        from backends.errors import InvalidInputError

        raise InvalidInputError(f"Unknown suite '{name}'. Available suites: {', '.join(sorted(SUITES))}")
    module, _, attr = SUITES[name].partition(":")
    return getattr(importlib.import_module(module), attr)()
