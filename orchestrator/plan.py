"""Which backends and suites a run executes, and the fingerprints that decide what can be reused."""
from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from typing import Any

from orchestrator.matrix import RUN_ONLY_SETTINGS
from orchestrator.run_store import code_digest, digest

#: modules whose code shapes every backend's results (changing them invalidates stored results)
CORE_MODULES = ("backends.base", "backends.generation", "backends.model", "backends.families",
                "orchestrator.worker")


@dataclass
class SuitePlan:
    name: str
    fingerprint: str
    options: dict[str, Any]
    reuse: dict[str, Any] | None = None  # a stored record with the same fingerprint


@dataclass
class BackendPlan:
    name: str
    entry: Any = None  # backends.registry.BackendEntry
    skip_reason: str | None = None
    fingerprint: str = ""
    settings: dict[str, Any] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)
    suites: list[SuitePlan] = field(default_factory=list)

    @property
    def pending(self) -> list[SuitePlan]:
        return [s for s in self.suites if s.reuse is None]


def runtime_versions(requires: tuple[str, ...]) -> dict[str, str]:
    from backends._imports import KNOWN_DEPENDENCIES, version_of

    out = {}
    for mod in requires:
        top = mod.split(".")[0]
        for dist in KNOWN_DEPENDENCIES.get(top, ((top,), None))[0]:
            v = version_of(dist)
            if v != "not-installed":
                out[top] = v
                break
        else:
            out[top] = "unknown"
    return out


def suite_available(name: str) -> str | None:
    """None if the suite's module exists, else the reason it is skipped."""
    from orchestrator.suites.base import SUITES

    module = SUITES[name].partition(":")[0]
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        spec = None
    if spec is None:
        return f"suite '{name}' is not implemented in this checkout (module {module} missing)"
    return None


def suite_code(name: str) -> str:
    from orchestrator.suites.base import SUITES, get_suite

    return code_digest(SUITES[name].partition(":")[0], "orchestrator.suites.base", "orchestrator.suites.util",
                       *get_suite(name).code_modules)


def backend_fingerprint(name: str, entry, base: dict[str, Any], options: dict[str, Any],
                        settings: dict[str, Any]) -> str:
    module = entry.target.partition(":")[0]
    module = module.rpartition(".")[0] or module  # the backend's whole package
    return digest({**base, "backend": name, "target": entry.target, "entry_options": entry.options,
                   "options": options, "settings": {k: v for k, v in settings.items() if k not in RUN_ONLY_SETTINGS},
                   "versions": runtime_versions(entry.requires), "code": code_digest(module, *CORE_MODULES)})
