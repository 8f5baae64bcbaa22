"""Resolve one run's configuration: matrix file values, overridden by command-line flags."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orchestrator import data as data_mod
from orchestrator.errors import SettingsError
from orchestrator.matrix import DEFAULT_SETTINGS, Matrix, check_setting, load_matrix

# CLI flag -> setting key
FLAG_FOR = {"limit": "--limit", "num_beams": "--num-beams", "batch_size": "--batch-size",
            "max_source_length": "--max-source-length", "max_new_tokens": "--max-new-tokens",
            "threads": "--threads", "timeout": "--timeout", "strict_length": "--strict-length",
            "source_prefix": "--source-prefix", "build_jobs": "--build-jobs"}


@dataclass
class RunConfig:
    matrix: Matrix
    model_path: Path
    src: Path
    ref: Path
    cal_src: Path
    cal_ref: Path
    cal_size: int
    skip_empty: bool
    backends: list[str] | None  # None: every registered, installed backend
    backends_from_cli: bool
    suites: list[str]
    reference: str
    settings: dict[str, Any]
    out: Path | None = None
    #: recompute results and rebuild artifacts: True for every backend, or a set of backend names
    force: bool | frozenset[str] = False
    baseline: Path | None = None
    cache_dir: Path | None = None
    command: str = ""
    overrides: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: settings given as command-line flags (they win over the matrix's [settings], not over [overrides])
    from_cli: frozenset[str] = frozenset()

    def forces(self, name: str | None = None) -> bool:
        """Whether ``--force`` applies to backend ``name`` (None: to any backend of the run)."""
        if isinstance(self.force, frozenset):
            return bool(self.force) if name is None else name in self.force
        return bool(self.force)

    def setting_source(self, name: str, key: str) -> str:
        """Where one backend's value of setting ``key`` came from, for messages."""
        if key in self.overrides.get(name, {}):
            return f'[overrides."{name}"] {key}'
        if key in self.from_cli:
            return FLAG_FOR[key]
        if key in self.matrix.settings:
            return f"[settings] {key}"
        return f"the default {key} ([settings] {key} or {FLAG_FOR[key]})"

    def backend_settings(self, name: str) -> dict[str, Any]:
        """Settings for one backend: the run's, with its ``[overrides.<name>]`` applied."""
        o = self.overrides.get(name, {})
        return {**self.settings, **{k: v for k, v in o.items() if k not in ("options", "suites")}}

    def suite_options(self, backend: str, suite: str) -> dict[str, Any]:
        """A suite's options for one backend: ``[suites.<suite>]`` with
        ``[overrides.<backend>.suites.<suite>]`` applied."""
        return {**self.matrix.suite_options.get(suite, {}),
                **self.overrides.get(backend, {}).get("suites", {}).get(suite, {})}

    def backend_options(self, name: str) -> dict[str, Any]:
        s = self.backend_settings(name)
        return {"threads": s["threads"], "max_source_length": s["max_source_length"],
                "max_new_tokens": s["max_new_tokens"], **self.overrides.get(name, {}).get("options", {})}


def resolve_config(args: dict[str, Any], matrix: Matrix | None = None) -> RunConfig:
    """``args``: the parsed ``compare`` flags (None = not given); ``matrix``: a matrix already loaded (and
    perhaps changed, as ``rescue`` adds its variants) instead of reading ``args["matrix"]``."""
    matrix = matrix if matrix is not None else load_matrix(args.get("matrix"))
    settings = {**DEFAULT_SETTINGS, **matrix.settings}
    from_cli = set()
    for key, flag in FLAG_FOR.items():
        value = args.get(key)
        if value is None or (key == "strict_length" and value is False):
            continue
        settings[key] = check_setting(key, value, flag, exc=SettingsError)
        from_cli.add(key)
    for a, b, what in (("src", "ref", "the source file and its reference translations"),
                       ("calibration_src", "calibration_ref",
                        "the calibration sources and their reference translations")):
        if bool(args.get(a)) != bool(args.get(b)):
            raise SettingsError(f"--{a.replace('_', '-')} and --{b.replace('_', '-')} go together: give both "
                                f"{what} (one sentence per line, line-aligned)")
    if args.get("out") and Path(args["out"]).expanduser().exists() and not Path(args["out"]).expanduser().is_dir():
        raise SettingsError(f"--out {args['out']} is a file; give a directory for the run (it is created if missing)")
    d = matrix.data

    def path(cli_key, data_key, default):
        if args.get(cli_key):
            return Path(args[cli_key]).expanduser()
        if d.get(data_key):
            return matrix.resolve_path(d[data_key])
        return default

    model = Path(args["model"]).expanduser() if args.get("model") else (
        matrix.resolve_path(matrix.model) if matrix.model else data_mod.DEFAULT_MODEL)
    backends = None
    backends_from_cli = False
    if args.get("backends") is not None:
        backends = list(dict.fromkeys(b.strip() for b in args["backends"].split(",") if b.strip()))
        if not backends:
            raise SettingsError("--backends is empty; give comma-separated names (see `python cli.py list-backends`)")
        backends_from_cli = True
    elif matrix.backends is not None:
        backends = matrix.backends
    suites = matrix.suites
    if args.get("suites") is not None:
        suites = list(dict.fromkeys(s.strip() for s in args["suites"].split(",") if s.strip()))
        if not suites:
            raise SettingsError("--suites is empty; give comma-separated names (quality, source-sensitivity, "
                                "speed, split-generation)")
    return RunConfig(
        matrix=matrix, model_path=model,
        src=path("src", "src", data_mod.DEFAULT_SRC), ref=path("ref", "ref", data_mod.DEFAULT_REF),
        cal_src=path("calibration_src", "calibration_src", data_mod.DEFAULT_CAL_SRC),
        cal_ref=path("calibration_ref", "calibration_ref", data_mod.DEFAULT_CAL_REF),
        cal_size=int(d.get("calibration_size", 200)),
        skip_empty=bool(args.get("skip_empty") or d.get("skip_empty", False)),
        backends=backends, backends_from_cli=backends_from_cli, suites=suites,
        reference=args.get("reference") or matrix.reference, settings=settings,
        out=Path(args["out"]) if args.get("out") else None,
        force=args["force"] if isinstance(args.get("force"), frozenset) else bool(args.get("force")),
        baseline=Path(args["baseline"]) if args.get("baseline") else None,
        cache_dir=Path(args["cache_dir"]) if args.get("cache_dir") else None,
        command=args.get("command", ""), overrides=matrix.overrides,
        from_cli=frozenset(from_cli))
