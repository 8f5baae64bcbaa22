"""Matrix files: which backends x suites x data to run, with which settings (TOML, read with tomllib).

Schema (every table and key optional; unknown keys are an error naming the valid ones)::

    schema = 1
    description = "..."

    [run]
    model = "path/to/checkpoint"        # default: the embedded Marian en-de model
    backends = ["torch-fp32", ...]      # default: all registered and installed
    suites = ["quality", ...]           # a suite whose module is missing is recorded as skipped
    reference = "torch-fp32"
    missing_backends = "error"          # "skip": names not registered here are recorded as skipped

    [data]
    src = "test.en.gz"                  # paths relative to the matrix file; default: Multi30k test_2016_flickr
    ref = "test.de.gz"
    calibration_src = "val.en.gz"       # default: Multi30k val
    calibration_ref = "val.de.gz"
    calibration_size = 200
    skip_empty = false

    [settings]
    limit = 0                           # 0 = every sentence
    num_beams = 1
    batch_size = 32
    max_source_length = 64
    max_new_tokens = 64
    threads = 2
    timeout = 3600                      # seconds per backend process: its artifact build, and its suites
    build_jobs = 0                      # artifact builds at once before the suites (0 = auto: cores, memory)
    strict_length = false
    source_prefix = ""                  # e.g. "translate English to German: " for T5

    [overrides."tflite-int16x8"]        # per backend: a smaller limit / longer timeout for slow variants
    limit = 50
    timeout = 7200
    options = { }                       # extra constructor options for the backend
    [overrides."tflite-int16x8".suites.split-generation]
    boundary_n = 30                     # this backend's suite options (over the [suites.*] tables)

    [variants."tflite-int8-ln-float"]   # a named variant of a registered backend, no code needed:
    base = "tflite-int8"                # its target and requirements,
    options = { float_regions = ["layer_norm"] }   # these options over the base's,
    description = "..."                 # optional; list the name in [run] backends to run it
    [suites.quality]                    # suite options, passed to Suite.run/compare as ctx.suite_options
    [bar]                               # quality bar for orchestrator.attribution
    [constraints]                       # deployment constraints for orchestrator.selection
    [tolerances]                        # baseline tolerances for orchestrator.baseline
"""
from __future__ import annotations

import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orchestrator.errors import MatrixError

MATRICES_DIR = Path(__file__).resolve().parent.parent / "matrices"
DEFAULT_MATRIX = MATRICES_DIR / "default.toml"

TOP_KEYS = {"schema", "description", "run", "data", "settings", "overrides", "suites", "bar", "constraints",
            "tolerances", "variants"}
RUN_KEYS = {"model", "backends", "suites", "reference", "missing_backends"}
DATA_KEYS = {"src", "ref", "calibration_src", "calibration_ref", "calibration_size", "skip_empty"}
OVERRIDE_KEYS = {"limit", "timeout", "threads", "num_beams", "batch_size", "options", "suites"}
VARIANT_KEYS = {"base", "options", "description"}

# setting -> (type, min, max); None bounds are open
SETTING_RANGES: dict[str, tuple[type, float | None, float | None]] = {
    "limit": (int, 0, None),
    "num_beams": (int, 1, 16),
    "batch_size": (int, 1, 1024),
    "max_source_length": (int, 2, 4096),
    "max_new_tokens": (int, 1, 4096),
    "threads": (int, 1, 256),
    "timeout": (float, 1, None),
    "build_jobs": (int, 0, 64),
    "strict_length": (bool, None, None),
    "source_prefix": (str, None, None),
}
#: settings that change how a run is executed, never its results: not part of any fingerprint
RUN_ONLY_SETTINGS = ("timeout", "build_jobs")
DEFAULT_SETTINGS: dict[str, Any] = {"limit": 0, "num_beams": 1, "batch_size": 32, "max_source_length": 64,
                                    "max_new_tokens": 64, "threads": 2, "timeout": 3600.0, "build_jobs": 0,
                                    "strict_length": False, "source_prefix": None}


def check_setting(key: str, value: Any, where: str, exc=MatrixError) -> Any:
    """Type- and range-check one setting; ``where`` names the file/flag in the message."""
    typ, lo, hi = SETTING_RANGES[key]
    if typ is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if typ is bool and not isinstance(value, bool) or typ is not bool and isinstance(value, bool) \
            or not isinstance(value, typ):
        raise exc(f"{where}: '{key}' must be {typ.__name__}, got {value!r}")
    if typ is float and not math.isfinite(value):
        raise exc(f"{where}: '{key}' must be a finite number, got {value!r}")
    if lo is not None and value < lo or hi is not None and value > hi:
        rng = f"{lo if lo is not None else '-inf'}..{hi if hi is not None else 'inf'}"
        raise exc(f"{where}: '{key}' = {value} is out of range (allowed {rng})")
    return value


@dataclass
class Matrix:
    path: Path | None
    model: str | None = None
    backends: list[str] | None = None
    suites: list[str] = field(default_factory=lambda: ["quality"])
    reference: str = "torch-fp32"
    missing_backends: str = "error"
    data: dict[str, Any] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)  # only keys given in the file
    overrides: dict[str, dict[str, Any]] = field(default_factory=dict)
    suite_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    bar: dict[str, Any] = field(default_factory=dict)
    constraints: dict[str, Any] = field(default_factory=dict)
    tolerances: dict[str, Any] = field(default_factory=dict)
    #: name -> {"base": registered backend, "options": {...}, "description": str}
    variants: dict[str, dict[str, Any]] = field(default_factory=dict)
    description: str = ""

    def resolve_path(self, value: str | None) -> Path | None:
        """Paths in a matrix are relative to the matrix file."""
        if value is None:
            return None
        p = Path(value).expanduser()
        if not p.is_absolute() and self.path is not None:
            p = self.path.parent / p
        return p

    def to_dict(self) -> dict[str, Any]:
        return {"path": str(self.path) if self.path else None, "description": self.description,
                "backends": self.backends, "suites": self.suites, "reference": self.reference,
                "overrides": self.overrides, "suite_options": self.suite_options, "bar": self.bar,
                "constraints": self.constraints, "tolerances": self.tolerances, "variants": self.variants}


def _unknown(where: str, table: dict, valid: set[str]) -> None:
    bad = sorted(set(table) - valid)
    if bad:
        raise MatrixError(f"{where}: unknown key(s) {', '.join(repr(b) for b in bad)}; valid keys: "
                          f"{', '.join(sorted(valid))}")


def _table(doc: dict, key: str, where: str) -> dict:
    value = doc.get(key, {})
    if not isinstance(value, dict):
        raise MatrixError(f"{where}: '{key}' must be a table ([{key}]), got {type(value).__name__}")
    return value


def _str_list(value: Any, where: str) -> list[str]:
    if isinstance(value, str):
        value = [v.strip() for v in value.split(",") if v.strip()]
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise MatrixError(f"{where}: must be a list of names, got {value!r}")
    return list(dict.fromkeys(value))


def read_toml(path: str | Path, what: str = "matrix") -> dict[str, Any]:
    path = Path(path)
    if not path.exists():
        raise MatrixError(f"{what} file {path} does not exist")
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:  # message carries "(at line L, column C)"
        raise MatrixError(f"{what} file {path}: invalid TOML: {exc}") from exc
    except UnicodeDecodeError as exc:
        raise MatrixError(f"{what} file {path}: not UTF-8 text ({exc})") from exc


def parse_matrix(doc: dict[str, Any], path: Path | None = None) -> Matrix:
    name = str(path) if path else "matrix"
    _unknown(name, doc, TOP_KEYS)
    schema = doc.get("schema", 1)
    if schema != 1:
        raise MatrixError(f"{name}: 'schema' = {schema!r} is not supported (this seqquant reads schema 1)")
    m = Matrix(path=path, description=str(doc.get("description", "")))
    run = _table(doc, "run", name)
    _unknown(f"{name} [run]", run, RUN_KEYS)
    if "model" in run:
        if not isinstance(run["model"], str):
            raise MatrixError(f"{name} [run]: 'model' must be a path string")
        m.model = run["model"]
    if "backends" in run:
        m.backends = _str_list(run["backends"], f"{name} [run] backends")
    if "suites" in run:
        m.suites = _str_list(run["suites"], f"{name} [run] suites")
    if "reference" in run:
        if not isinstance(run["reference"], str):
            raise MatrixError(f"{name} [run]: 'reference' must be a backend name")
        m.reference = run["reference"]
    if "missing_backends" in run:
        if run["missing_backends"] not in ("error", "skip"):
            raise MatrixError(f"{name} [run]: 'missing_backends' must be \"error\" or \"skip\", "
                              f"got {run['missing_backends']!r}")
        m.missing_backends = run["missing_backends"]
    data = _table(doc, "data", name)
    _unknown(f"{name} [data]", data, DATA_KEYS)
    for k, v in data.items():
        if k == "calibration_size":
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise MatrixError(f"{name} [data]: 'calibration_size' must be an integer >= 1, got {v!r}")
        elif k == "skip_empty":
            if not isinstance(v, bool):
                raise MatrixError(f"{name} [data]: 'skip_empty' must be true or false, got {v!r}")
        elif not isinstance(v, str):
            raise MatrixError(f"{name} [data]: '{k}' must be a path string, got {v!r}")
    m.data = dict(data)
    settings = _table(doc, "settings", name)
    _unknown(f"{name} [settings]", settings, set(SETTING_RANGES))
    m.settings = {k: check_setting(k, v, f"{name} [settings]") for k, v in settings.items()}
    overrides = _table(doc, "overrides", name)
    for backend, table in overrides.items():
        where = f"{name} [overrides.\"{backend}\"]"
        if not isinstance(table, dict):
            raise MatrixError(f"{where}: must be a table")
        _unknown(where, table, OVERRIDE_KEYS)
        o = {}
        for k, v in table.items():
            if k == "options":
                if not isinstance(v, dict):
                    raise MatrixError(f"{where}: 'options' must be a table of backend options")
                o[k] = dict(v)
            elif k == "suites":
                if not isinstance(v, dict) or not all(isinstance(t, dict) for t in v.values()):
                    raise MatrixError(f"{where}: 'suites' must hold one table of suite options per suite, "
                                      f"e.g. [overrides.\"{backend}\".suites.split-generation]")
                o[k] = {suite: dict(t) for suite, t in v.items()}
            else:
                o[k] = check_setting(k, v, where)
        m.overrides[backend] = o
    for variant, table in _table(doc, "variants", name).items():
        where = f"{name} [variants.\"{variant}\"]"
        if not isinstance(table, dict):
            raise MatrixError(f"{where}: must be a table with 'base' and 'options'")
        _unknown(where, table, VARIANT_KEYS)
        if not isinstance(table.get("base"), str) or not table["base"]:
            raise MatrixError(f"{where}: 'base' must name a registered backend (see `python cli.py list-backends`)")
        if not isinstance(table.get("options", {}), dict):
            raise MatrixError(f"{where}: 'options' must be a table of backend options")
        if not isinstance(table.get("description", ""), str):
            raise MatrixError(f"{where}: 'description' must be a string")
        m.variants[variant] = {"base": table["base"], "options": dict(table.get("options", {})),
                               "description": table.get("description", "")}
    suites = _table(doc, "suites", name)
    for suite, table in suites.items():
        if not isinstance(table, dict):
            raise MatrixError(f"{name} [suites.{suite}]: must be a table of options")
    m.suite_options = {k: dict(v) for k, v in suites.items()}
    m.bar = dict(_table(doc, "bar", name))
    m.constraints = dict(_table(doc, "constraints", name))
    m.tolerances = dict(_table(doc, "tolerances", name))
    return m


def register_variants(m: Matrix) -> None:
    """Register the matrix's ``[variants]`` in the backend registry (before backends are resolved)."""
    from backends import registry
    from backends.errors import UnknownBackendError

    for name, v in m.variants.items():
        try:
            registry.register_variant(name, v["base"], v["description"], **v["options"])
        except UnknownBackendError as exc:  # the base is not registered
            raise MatrixError(f"{m.path or 'matrix'} [variants.\"{name}\"]: base: {exc}") from exc
        except ValueError as exc:  # the name is taken by another backend
            raise MatrixError(f"{m.path or 'matrix'} [variants.\"{name}\"]: {exc}") from exc


def load_matrix(path: str | Path | None = None) -> Matrix:
    """Read and validate a matrix file (default: ``matrices/default.toml``)."""
    path = Path(path) if path is not None else DEFAULT_MATRIX
    return parse_matrix(read_toml(path), path.resolve())


def load_table(path: str | Path, table: str) -> dict[str, Any]:
    """A file holding one table of a matrix (``bar``, ``constraints``): either that table (so any matrix
    file will do; one without it gives {}, the defaults) or its keys at the top level."""
    doc = read_toml(path, table)
    if table in doc:
        if not isinstance(doc[table], dict):
            raise MatrixError(f"{table} file {path}: '{table}' must be a table")
        return dict(doc[table])
    if set(doc) & (TOP_KEYS - {table}):  # a matrix file without the table
        return {}
    return dict(doc)


def load_constraints(path: str | Path) -> dict[str, Any]:
    """A constraints file: either a ``[constraints]`` table (a matrix) or top-level constraint keys."""
    return load_table(path, "constraints")
