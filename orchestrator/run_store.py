"""The run directory: durable, atomically written, resumable.

Layout::

    <run_dir>/
      run.json                            # what this run is (fingerprint, settings); rewritten per invocation
      report.json, report.md              # written at the end of every invocation
      artifacts/                          # backend artifact cache (unless a shared cache dir is used)
      backends/<name>/
        backend.json                      # status, reason, signature, artifacts, timings, log tail
        worker.log                        # stdout/stderr of the backend's process (native crashes land here)
        suites/<suite>.json               # {"status", "reason", "fingerprint", "seconds", "result"}
        ...                               # files the suites write (hypotheses, logits, ...)

Every JSON file is written to a temporary file and ``os.replace``-d into place, so an interrupted or
killed run never leaves a half-written result. A suite result is reused when its ``fingerprint`` (model
hash, data, settings, backend options, runtime versions, backend + suite code) matches.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any


def atomic_write_text(path: str | Path, text: str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def _json_default(obj: Any) -> Any:
    """numpy scalars/arrays (suite results often carry them) -> Python numbers/lists; anything else -> str."""
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if hasattr(obj, "item"):
        return obj.item()
    return str(obj)


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=1, sort_keys=False, default=_json_default, allow_nan=True) + "\n")


def read_json(path: str | Path) -> Any | None:
    """The JSON in ``path``, or None if it is missing or unreadable (then it is recomputed)."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def digest(obj: Any, n: int = 16) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:n]


def code_digest(*modules: str) -> str:
    """Hash of the source files of ``modules`` (located without importing them) and of their package."""
    import importlib.util

    h = hashlib.sha256()
    for mod in modules:
        try:
            spec = importlib.util.find_spec(mod)
        except (ImportError, ValueError):
            spec = None
        if spec is None or not spec.origin or not os.path.exists(spec.origin):
            h.update(f"missing:{mod}".encode())
            continue
        origin = Path(spec.origin)
        files = sorted(origin.parent.glob("*.py")) if origin.name == "__init__.py" else [origin]
        for f in files:
            h.update(f.name.encode())
            h.update(f.read_bytes())
    return h.hexdigest()[:16]


class RunStore:
    def __init__(self, run_dir: str | Path):
        self.run_dir = Path(run_dir)

    def backend_dir(self, backend: str) -> Path:
        return self.run_dir / "backends" / backend

    def suite_path(self, backend: str, suite: str) -> Path:
        return self.backend_dir(backend) / "suites" / f"{suite}.json"

    def backend_path(self, backend: str) -> Path:
        return self.backend_dir(backend) / "backend.json"

    @staticmethod
    def ok_suites(report: dict[str, Any], suite: str) -> list[tuple[str, dict[str, Any]]]:
        """(backend, its ``suite`` entry in ``report``) for the ok backends whose suite ran ok."""
        found = []
        for name, b in (report.get("backends") or {}).items():
            if not isinstance(b, dict) or b.get("status") != "ok":
                continue
            s = (b.get("suites") or {}).get(suite)
            if isinstance(s, dict) and s.get("status", "ok") == "ok":
                found.append((name, s))
        return found

    def suite_files(self, report: dict[str, Any], suite: str, field: str) -> list[tuple[str, Path]]:
        """(backend, path) of the file each ok backend's ``suite`` names in ``field`` of ``report`` (e.g. the
        quality suite's ``tokens``), for the backends whose suite ran ok."""
        return [(name, self.backend_dir(name) / s[field]) for name, s in self.ok_suites(report, suite)
                if isinstance(s.get(field), str)]

    def log_path(self, backend: str) -> Path:
        return self.backend_dir(backend) / "worker.log"

    def write_suite(self, backend: str, suite: str, record: dict[str, Any]) -> None:
        atomic_write_json(self.suite_path(backend, suite), record)

    def read_suite(self, backend: str, suite: str, fingerprint: str | None = None) -> dict[str, Any] | None:
        rec = read_json(self.suite_path(backend, suite))
        if not isinstance(rec, dict) or "status" not in rec:
            return None
        if fingerprint is not None and rec.get("fingerprint") != fingerprint:
            return None
        return rec

    def write_backend(self, backend: str, record: dict[str, Any]) -> None:
        atomic_write_json(self.backend_path(backend), record)

    def read_backend(self, backend: str) -> dict[str, Any] | None:
        rec = read_json(self.backend_path(backend))
        return rec if isinstance(rec, dict) else None

    def log_tail(self, backend: str, n: int = 20) -> list[str]:
        try:
            with open(self.log_path(backend), "rb") as fh:
                fh.seek(0, os.SEEK_END)
                size = fh.tell()
                fh.seek(max(0, size - 16384))
                data = fh.read().decode("utf-8", "replace")
        except OSError:
            return []
        lines = [ln if len(ln) <= 300 else ln[:300] + " ..." for ln in data.splitlines() if ln.strip()]
        return lines[-n:]

    def clear_backend(self, backend: str) -> None:
        """Forget every stored result of ``backend`` (--force)."""
        import shutil

        d = self.backend_dir(backend)
        if d.exists():
            shutil.rmtree(d)


class RunLock:
    """An exclusive lock on a run directory (flock: released automatically if the process dies), so two
    ``compare`` commands never write the same run at once."""

    def __init__(self, run_dir: str | Path):
        self.path = Path(run_dir) / ".lock"
        self._fh = None

    def __enter__(self) -> "RunLock":
        import fcntl

        from orchestrator.errors import RunDirError

        self.path.parent.mkdir(parents=True, exist_ok=True)
        fh = open(self.path, "a+")
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().strip() or "another process"
            fh.close()
            raise RunDirError(f"run directory {self.path.parent} is in use by {holder}; wait for it to finish, "
                              f"or pass --out DIR to run elsewhere") from None
        fh.seek(0)
        fh.truncate()
        fh.write(f"pid {os.getpid()}\n")
        fh.flush()
        self._fh = fh
        return self

    def __exit__(self, *exc) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None
