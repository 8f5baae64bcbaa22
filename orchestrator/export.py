"""``python cli.py export``: copy one backend's measured artifacts out of a run, ready to ship.

The exported directory holds exactly the files the run measured (checked against the artifact
manifest's sha256, and the manifest's cache key against the one the report recorded), the model's
configuration and tokenizer files (``model/``, no weights), and ``export.json``: where the files came
from, the command that measured them, the backend's signature, metrics and verdict, and every file's
checksum. A TFLite export also carries ``reference_loop.py``, the host loop written from
``generation.json`` alone (numpy + LiteRT), which reproduces the backend's tokens.

Nothing is written unless every check passes; the directory appears complete or not at all.
"""
from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

from backends.base import check_manifest, sha256_file
from orchestrator.errors import RunDirError

EXPORT_FORMAT = "seqquant-export/1"
#: the checkpoint files an app needs besides the runtime artifacts (never the weights)
MODEL_CONFIG_FILES = ("config.json", "generation_config.json")
#: headline metrics copied into export.json (all of them stay in the run's report.json)
SUMMARY_METRICS = ("bleu", "chrf", "exact_match_vs_reference", "latency_p50_ms", "latency_p90_ms", "ms_per_token",
                   "bytes", "peak_rss_mb", "cross_source_cosine", "first_step_argmax_agreement", "source_blind")


def pick_backend(report: dict[str, Any], name: str | None) -> str:
    """The backend to export: ``name``, else the run's selection."""
    backends = report.get("backends") or {}
    shippable = sorted(n for n, b in backends.items() if b.get("status") == "ok" and (b.get("artifacts") or {}))
    if name is None:
        name = (report.get("selection") or {}).get("chosen")
        if not name:
            raise RunDirError(f"this run selected no backend; pass --backend (backends with artifacts: "
                              f"{', '.join(shippable) or 'none'})")
    if name not in backends:
        raise RunDirError(f"backend '{name}' is not in this run; backends with artifacts: "
                          f"{', '.join(shippable) or 'none'}")
    rec = backends[name]
    if rec.get("status") != "ok" or not rec.get("artifacts"):
        why = rec.get("reason") or "no artifacts recorded"
        raise RunDirError(f"backend '{name}' has nothing to export (status {rec.get('status')}: {why}); "
                          f"backends with artifacts: {', '.join(shippable) or 'none'}")
    return name


def _artifact_files(name: str, art: dict[str, Any]) -> dict[str, Path]:
    """role -> file, checked against the artifact manifest (cache key and sha256)."""
    rebuild = "re-run the same `compare` command to rebuild them, then export again"
    if not art.get("directory") or not Path(art["directory"]).is_dir():
        raise RunDirError(f"{name}: the artifacts of this run are gone ({art.get('directory')}); {rebuild}")
    _, files, problems = check_manifest(Path(art["directory"]), art.get("cache_key"))
    if problems:
        raise RunDirError(f"{name}: the artifacts are not the ones this run measured: {'; '.join(problems)}; "
                          f"{rebuild}")
    return files


def _model_files(report: dict[str, Any]) -> dict[str, Path]:
    """The checkpoint's configuration and tokenizer files, from the model the run measured."""
    from backends.model import ModelBundle

    model = report.get("model") or {}
    path = Path(str(model.get("path") or ""))
    if not model.get("path") or not path.is_dir():
        raise RunDirError(f"the run's model directory {path} is gone; the export needs its tokenizer files")
    bundle = ModelBundle.load(path)
    if model.get("content_hash") and bundle.content_hash != model["content_hash"]:
        raise RunDirError(f"the model at {path} changed since the run (content hash {bundle.content_hash[:16]} "
                          f"vs {str(model['content_hash'])[:16]}); re-run `compare`, then export")
    names = [f for f in MODEL_CONFIG_FILES if (path / f).is_file()] + bundle.tokenizer_files()
    return {f: path / f for f in names}


def _extras(files: dict[str, Path]) -> dict[str, Path]:
    """Files shipped with a format the export recognises: the TFLite reference loop."""
    from backends.tflite import reference_loop

    gen = files.get("generation")
    if gen is not None:
        try:
            fmt = json.loads(gen.read_text(encoding="utf-8")).get("format")
        except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
            fmt = None
        if fmt == reference_loop.FORMAT:
            return {"reference_loop.py": Path(reference_loop.__file__)}
    return {}


def export_backend(report: dict[str, Any], run_dir: Path, dest: Path, backend: str | None = None,
                   force: bool = False) -> dict[str, Any]:
    """Copy ``backend``'s artifacts (default: the selected one) into ``dest``; return export.json."""
    name = pick_backend(report, backend)
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())) and not force:
        raise RunDirError(f"--to {dest} exists and is not an empty directory; pick another or pass --force "
                          f"to replace it")
    rec = report["backends"][name]
    plan: dict[str, Path] = {}
    artifacts = _artifact_files(name, rec["artifacts"])
    for p in artifacts.values():
        plan[p.name] = p
    plan.update((f"model/{n}", p) for n, p in _model_files(report).items())
    plan.update(_extras(artifacts))

    staging = dest.with_name(dest.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        listing = {}
        for rel, src in plan.items():
            out = staging / rel
            out.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, out)
            listing[rel] = {"sha256": sha256_file(out), "bytes": out.stat().st_size}
        sig = rec.get("signature") or {}
        info = {
            "format": EXPORT_FORMAT,
            "backend": name,
            "selected": (report.get("selection") or {}).get("chosen") == name,
            "runtime": sig.get("runtime"), "runtime_version": sig.get("runtime_version"),
            "precision": sig.get("precision"), "signature": sig.get("short"),
            "full_int8": (rec.get("artifacts") or {}).get("full_int8"),
            "roles": {role: p.name for role, p in artifacts.items()},
            "metrics": {k: rec["metrics"][k] for k in SUMMARY_METRICS if k in (rec.get("metrics") or {})},
            "verdict": {k: (rec.get("verdict") or {}).get(k) for k in ("kind", "summary")},
            "model": {k: (report.get("model") or {}).get(k) for k in ("path", "family", "content_hash",
                                                                        "source_prefix")},
            "measured_by": {"run_dir": str(run_dir), "command": report.get("command"),
                            "created": report.get("created"), "n_sentences": (report.get("data") or {})
                            .get("n_sentences"), "reference_backend": report.get("reference_backend")},
            "exported": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "files": listing,
        }
        kernels = (sig.get("settings") or {}).get("kernels")
        if kernels:  # the LiteRT kernels that ran the measurement; reference_loop.py uses the same
            info["kernels"] = kernels
        if "reference_loop.py" in plan:
            info["run"] = "python reference_loop.py . SOURCE_IDS...  (token ids of one tokenized source)"
        (staging / "export.json").write_text(json.dumps(info, indent=1) + "\n", encoding="utf-8")
        if dest.is_dir():
            shutil.rmtree(dest)
        elif dest.exists():
            dest.unlink()
        staging.rename(dest)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return info
