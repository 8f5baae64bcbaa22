"""User-facing errors of the CTranslate2 backends (light: no ctranslate2 import)."""
from __future__ import annotations

from backends.errors import SeqquantError


class ComputeTypeUnsupportedError(SeqquantError, RuntimeError):
    """The requested CTranslate2 compute type cannot run on this device/CPU.

    The orchestrator records the backend as *skipped* with this message (``reasons``
    lists every reason) instead of failing the run.
    """

    def __init__(self, backend: str, reasons: list[str]):
        self.backend = backend
        self.reasons = list(reasons)
        super().__init__(f"Backend '{backend}' cannot run here: " + "; ".join(self.reasons))
