"""One exception root for everything seqquant reports to a user.

``SeqquantError`` and its subclasses are *user-facing*: their message says what went
wrong and what to do. ``InternalError`` is a bug in seqquant itself and deliberately
does not derive from ``SeqquantError`` (the Polygraphy convention), so a caller that
catches user errors never swallows a bug.
"""
from __future__ import annotations


class SeqquantError(Exception):
    """Root of every user-facing error."""


class UnknownBackendError(SeqquantError, ValueError):
    """A backend name that is not registered."""


class BackendUnavailableError(SeqquantError, ImportError):
    """A registered backend whose optional dependency (extra) is not installed."""


class UnsupportedModelError(SeqquantError, ValueError):
    """A checkpoint seqquant cannot handle. Lists every reason at once."""

    def __init__(self, what: str, reasons: list[str], hint: str | None = None):
        self.reasons = list(reasons)
        lines = [f"{what} is not supported:"] + [f"  - {r}" for r in self.reasons]
        if hint:
            lines.append(hint)
        super().__init__("\n".join(lines))


class InvalidInputError(SeqquantError, ValueError):
    """Bad user input: files, data, options."""


class InputTooLongError(InvalidInputError):
    """A source longer than the static source length with --strict-length."""


class ArtifactError(SeqquantError):
    """A build artifact that is missing, corrupt or could not be produced."""


class BackendStateError(SeqquantError, RuntimeError):
    """A backend method called in the wrong state (e.g. encode before activate)."""


class NonFiniteLogitsError(SeqquantError, FloatingPointError):
    """A backend produced NaN (or +inf) logits; recorded as a suite failure, never averaged into scores.

    Raised by the worker's guard around ``decode_step``/``first_step_logits`` and by the native
    generators (transformers ``generate``, CTranslate2 ``translate_batch``), which never show logits
    to that guard."""


class ConfigurationChecker:
    """Collect every unsupported reason, then raise them all at once.

    Modelled on CTranslate2's converter checker: call :meth:`check` for each
    condition and :meth:`validate` at the end.
    """

    def __init__(self, what: str, hint: str | None = None):
        self.what = what
        self.hint = hint
        self.reasons: list[str] = []

    def check(self, condition: bool, reason: str) -> bool:
        if not condition:
            self.reasons.append(reason)
        return bool(condition)

    def validate(self) -> None:
        if self.reasons:
            raise UnsupportedModelError(self.what, self.reasons, self.hint)


class InternalError(Exception):
    """A bug in seqquant. Not a ``SeqquantError`` on purpose."""
