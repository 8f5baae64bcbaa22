"""Family registry keyed by ``config.model_type`` (CTranslate2's ``register_loader`` idea)."""
from __future__ import annotations

from types import MappingProxyType
from typing import Any

from backends.errors import ConfigurationChecker, UnsupportedModelError

_FAMILIES: dict[str, Any] = {}
families = MappingProxyType(_FAMILIES)


def register_family(cls):
    for model_type in cls.model_types:
        if model_type in _FAMILIES:
            raise ValueError(f"model_type '{model_type}' already registered by {_FAMILIES[model_type].__name__}")
        _FAMILIES[model_type] = cls
    return cls


def supported_model_types() -> list[str]:
    _ensure_loaded()
    return sorted(_FAMILIES)


def _ensure_loaded() -> None:
    # importing the family modules registers them; cheap (no heavy deps)
    from backends.families import bart, m2m100, marian, mbart, pegasus, t5  # noqa: F401


def resolve_family(config: dict[str, Any], where: str = "model"):
    """Return the family instance for ``config`` after checking it; raise listing every reason."""
    _ensure_loaded()
    model_type = config.get("model_type")
    hint = f"Supported model families (config.model_type): {', '.join(supported_model_types())}"
    checker = ConfigurationChecker(where, hint)
    cls = _FAMILIES.get(model_type)
    if cls is None:
        archs = config.get("architectures") or []
        checker.check(False, f"model_type '{model_type}' (architectures {archs}) is not a supported family")
        checker.check(bool(config.get("is_encoder_decoder", False)),
                      "config.is_encoder_decoder is not true: not an encoder-decoder checkpoint")
        raise UnsupportedModelError(where, checker.reasons, hint)
    family = cls()
    family.check(config, checker)
    checker.validate()
    return family
