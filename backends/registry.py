"""Backend registry: names -> dotted paths, imported only when asked for.

Entries are strings (``"package.module:Class"``) plus default options and the modules
the backend needs, so listing backends imports nothing heavy (the fsspec pattern).
Third-party backends register through the ``seqquant.backends`` entry-point group::

    [project.entry-points."seqquant.backends"]
    my-backend = "my_pkg.backend:MyBackend"

A variant is the same class with other default options (``tflite-int8`` and
``tflite-int8-naive`` share one class).
"""
from __future__ import annotations

import importlib
import importlib.metadata
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from backends._imports import install_hint, is_available
from backends.errors import BackendUnavailableError, UnknownBackendError

if TYPE_CHECKING:  # pragma: no cover
    from backends.base import Seq2SeqBackend

ENTRY_POINT_GROUP = "seqquant.backends"


@dataclass(frozen=True)
class BackendEntry:
    name: str
    target: str  # "package.module:Class"
    requires: tuple[str, ...] = ()  # importable module names
    options: dict[str, Any] = field(default_factory=dict)
    description: str = ""

    def missing(self) -> list[str]:
        return [m for m in self.requires if not is_available(m)]

    @property
    def available(self) -> bool:
        return not self.missing()


# Built-in backend packages. Each one's ``__init__.py`` is light (no runtime imports) and
# declares ``BACKENDS = [dict(name=..., target="pkg.mod:Class", requires=(...), description=...,
# options={...}), ...]``. One package per runtime; variants are option sets.
BUILTIN_PACKAGES = ("backends.ctranslate2", "backends.onnxrt", "backends.tflite", "backends.torch_ref")


def _builtin_entries() -> dict[str, BackendEntry]:
    entries: dict[str, BackendEntry] = {}
    for pkg in BUILTIN_PACKAGES:
        try:
            module = importlib.import_module(pkg)
        except ModuleNotFoundError as exc:
            if exc.name == pkg:  # package not present in this checkout
                continue
            raise
        for d in getattr(module, "BACKENDS", []):
            if d["name"] in entries:
                raise ValueError(f"backend '{d['name']}' declared twice ({pkg})")
            entries[d["name"]] = BackendEntry(d["name"], d["target"], tuple(d.get("requires", ())),
                                              dict(d.get("options", {})), d.get("description", ""))
    return entries


_registry: dict[str, BackendEntry] = dict(sorted(_builtin_entries().items()))
registry = MappingProxyType(_registry)
_entry_points_loaded = False


def register_backend(name: str, target: str, requires=(), description: str = "",
                     clobber: bool = False, **options: Any) -> None:
    """Register a backend by dotted path (``"pkg.mod:Class"``) without importing it."""
    if name in _registry and not clobber:
        raise ValueError(f"Backend name '{name}' is already registered ({_registry[name].target})")
    _registry[name] = BackendEntry(name, target, tuple(requires), dict(options), description)


def register_variant(name: str, base: str, description: str = "", **options: Any) -> BackendEntry:
    """Register ``name`` as a registered backend ``base`` with some options changed (no code: same
    target and requirements, ``{**base options, **options}``). Registering the same variant again is
    a no-op; a different backend under that name is an error."""
    b = get_entry(base)
    entry = BackendEntry(name, b.target, b.requires, {**b.options, **options},
                         description or f"{base} with {', '.join(f'{k}={v!r}' for k, v in options.items())}")
    existing = _registry.get(name)
    if existing is not None and existing != entry:
        raise ValueError(f"Backend name '{name}' is already registered ({existing.target} with "
                         f"{existing.options}); pick another name for the variant")
    _registry[name] = entry
    return entry


def _load_entry_points() -> None:
    global _entry_points_loaded
    if _entry_points_loaded:
        return
    _entry_points_loaded = True
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        if ep.name not in _registry:
            _registry[ep.name] = BackendEntry(ep.name, ep.value, description=f"plugin from {ep.value}")


def available_backends(installed_only: bool = False) -> list[str]:
    _load_entry_points()
    return sorted(n for n, e in _registry.items() if not installed_only or e.available)


def get_entry(name: str) -> BackendEntry:
    _load_entry_points()
    if name not in _registry:
        raise UnknownBackendError(
            f"Unknown backend '{name}'. Available backends: {', '.join(available_backends())}"
        )
    return _registry[name]


def get_backend_class(name: str):
    entry = get_entry(name)
    missing = entry.missing()
    if missing:
        hints = sorted({install_hint(m) for m in missing})
        raise BackendUnavailableError(
            f"Backend '{name}' needs {', '.join(missing)}, which is not installed. "
            f"Install with: {' ; '.join(hints)}"
        )
    module_name, _, attr = entry.target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise BackendUnavailableError(f"Backend '{name}' could not be imported ({entry.target}): {exc}") from exc
    try:
        return getattr(module, attr)
    except AttributeError as exc:
        raise UnknownBackendError(f"Backend '{name}': {entry.target} does not exist") from exc


def get_backend(name: str, **options: Any) -> "Seq2SeqBackend":
    """Instantiate a registered backend; ``options`` override the entry's defaults."""
    entry = get_entry(name)
    cls = get_backend_class(name)
    merged = {**entry.options, **options}
    return cls(name=name, **merged)
