"""Orchestrator-specific user errors (all derive from :class:`backends.errors.SeqquantError`).

Every message says what is wrong *and* what to do; the CLI prints it and exits with code 2.
"""
from __future__ import annotations

from backends.errors import InvalidInputError, SeqquantError


class DataError(InvalidInputError):
    """A source/reference/calibration file that cannot be used (missing, misaligned, empty lines, bad bytes)."""


class MatrixError(InvalidInputError):
    """An invalid matrix / constraints TOML file: names the file, the line or key, and the valid keys."""


class SettingsError(InvalidInputError):
    """A run setting out of range (``--limit``, ``--num-beams``, ``--batch-size``, ...)."""


class RunDirError(SeqquantError):
    """A run directory that cannot be read (``select`` / ``baseline save`` on a directory without a report)."""
