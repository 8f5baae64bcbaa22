"""Lazy imports of heavy optional dependencies.

Nothing in ``backends/`` imports torch, tensorflow, onnxruntime or ctranslate2 at module
import time. A backend calls :func:`require` inside its methods; a missing package
becomes a :class:`BackendUnavailableError` carrying the exact pip command.
"""
from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
from types import ModuleType

from backends.errors import BackendUnavailableError

# module -> (distribution aliases, extra that installs it)
KNOWN_DEPENDENCIES: dict[str, tuple[tuple[str, ...], str]] = {
    "ai_edge_litert": (("ai-edge-litert",), "tflite"),
    "ai_edge_quantizer": (("ai-edge-quantizer",), "tflite"),
    "ctranslate2": (("ctranslate2",), "ct2"),
    "onnx": (("onnx",), "onnx"),
    "onnxruntime": (("onnxruntime", "onnxruntime-gpu", "onnxruntime-openvino"), "onnx"),
    "optimum": (("optimum-onnx", "optimum"), "onnx"),
    "tensorflow": (("tensorflow-cpu", "tensorflow"), "tflite"),
    "torch": (("torch",), "torch"),
    "transformers": (("transformers",), "torch"),
}


def install_hint(module: str) -> str:
    extra = KNOWN_DEPENDENCIES.get(module.split(".")[0], ((), None))[1]
    if extra:
        return f"pip install -e '.[{extra}]'   (from the seqquant checkout)"
    return f"pip install {module.split('.')[0]}"


def is_available(module: str) -> bool:
    """True when ``module`` can be imported, checked without importing it."""
    top = module.split(".")[0]
    try:
        if importlib.util.find_spec(top) is None:
            return False
    except (ImportError, ValueError):
        return False
    return True


def require(module: str, purpose: str = "") -> ModuleType:
    """Import ``module`` or raise :class:`BackendUnavailableError` with an install hint."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        what = f" (needed for {purpose})" if purpose else ""
        raise BackendUnavailableError(
            f"Python package '{module.split('.')[0]}' is not installed{what}: {exc}.\n"
            f"Install it with: {install_hint(module)}"
        ) from exc


def version_of(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not-installed"
