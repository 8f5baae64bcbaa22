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


def resolve_family(config: dict[str, Any], where: str = "model", generation_config: dict[str, Any] | None = None,
                   checker: ConfigurationChecker | None = None):
    """Return the family instance for ``config`` after checking it; raise listing every reason.

    With a ``checker`` the reasons are only added to it (the caller adds its own and validates)
    and the result is None when the family is unknown.
    """
    _ensure_loaded()
    if not isinstance(config, dict):
        raise UnsupportedModelError(where, [f"config.json holds {type(config).__name__} {config!r:.40}, "
                                            f"not a JSON object"])
    own = checker is None
    checker = checker or ConfigurationChecker(where)
    model_type = config.get("model_type")
    cls = _FAMILIES.get(model_type) if isinstance(model_type, str) else None
    if cls is None:
        archs = config.get("architectures") or []
        checker.check(False, f"model_type '{model_type}' (architectures {archs}) is not a supported family")
        checker.check(bool(config.get("is_encoder_decoder", False)),
                      "config.is_encoder_decoder is not true: not an encoder-decoder checkpoint")
        checker.hint = f"Supported model families (config.model_type): {', '.join(supported_model_types())}"
        if own:
            checker.validate()
        return None
    family = cls()
    family.check(config, checker, generation_config)
    if own:
        checker.validate()
    return family
