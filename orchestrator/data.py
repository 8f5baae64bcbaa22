"""Parallel data (sources + references) and calibration pools, validated before any backend runs.

Plain text, one sentence per line, UTF-8, optionally gzip-compressed (``.gz``). Problems are reported with
file names and line numbers: missing files, non-UTF-8 bytes, line-count mismatch between source and
reference, and empty lines (an error unless ``skip_empty``, which drops those *pairs* and counts them).
"""
from __future__ import annotations

import gzip
import hashlib
from dataclasses import dataclass, field
from pathlib import Path

from orchestrator.errors import DataError

DEFAULTS_DIR = Path(__file__).resolve().parent / "defaults"
DEFAULT_MODEL = DEFAULTS_DIR / "model" / "marian-en-de-multi30k"
DEFAULT_DATA = DEFAULTS_DIR / "data" / "multi30k"
DEFAULT_SRC = DEFAULT_DATA / "test_2016_flickr.en.gz"
DEFAULT_REF = DEFAULT_DATA / "test_2016_flickr.de.gz"
DEFAULT_CAL_SRC = DEFAULT_DATA / "val.en.gz"
DEFAULT_CAL_REF = DEFAULT_DATA / "val.de.gz"

_MAX_LISTED = 8


def _list_lines(nums: list[int]) -> str:
    shown = ", ".join(str(n) for n in nums[:_MAX_LISTED])
    return shown + (f", ... ({len(nums)} in total)" if len(nums) > _MAX_LISTED else "")


def read_lines(path: str | Path, what: str = "file") -> list[str]:
    """Lines of a UTF-8 text file (``.gz`` transparently), without line terminators."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{what} {path} does not exist")
    if path.is_dir():
        raise DataError(f"{what} {path} is a directory; expected a text file with one sentence per line")
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError) as exc:
        raise DataError(f"{what} {path}: cannot read it as gzip ({exc}); is the file complete?") from exc
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    lines = raw.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    out = []
    bad = []
    for i, line in enumerate(lines, 1):
        if line.endswith(b"\r"):
            line = line[:-1]
        try:
            out.append(line.decode("utf-8"))
        except UnicodeDecodeError as exc:
            bad.append((i, exc))
    if bad:
        i, exc = bad[0]
        raise DataError(f"{what} {path}: invalid UTF-8 on line(s) {_list_lines([b for b, _ in bad])} "
                        f"(line {i}: {exc.reason} at byte {exc.start}). Re-encode the file as UTF-8, "
                        f"e.g. iconv -f latin1 -t utf-8 {path.name}")
    return out


def fingerprint(*columns: list[str]) -> str:
    h = hashlib.sha256()
    for col in columns:
        h.update(str(len(col)).encode() + b"|")
        for s in col:
            h.update(s.encode("utf-8") + b"\n")
    return h.hexdigest()[:16]


@dataclass
class ParallelData:
    src_path: str
    ref_path: str
    sources: list[str]
    references: list[str]
    total_lines: int  # lines in the files
    skipped_empty: list[int] = field(default_factory=list)  # 1-based line numbers dropped with skip_empty
    line_numbers: list[int] = field(default_factory=list)  # 1-based file line of each kept pair

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.sources, self.references)

    def describe(self) -> dict:
        return {"src": self.src_path, "ref": self.ref_path, "n_sentences": len(self.sources),
                "lines_in_files": self.total_lines, "skipped_empty_lines": len(self.skipped_empty),
                "fingerprint": self.fingerprint}


def load_parallel(src: str | Path, ref: str | Path, limit: int | None = None, skip_empty: bool = False,
                  what: str = "test set") -> ParallelData:
    """Read and validate aligned source/reference files; ``limit`` keeps the first N usable pairs."""
    sources = read_lines(src, f"{what} source")
    refs = read_lines(ref, f"{what} reference")
    if len(sources) != len(refs):
        raise DataError(f"{what}: {src} has {len(sources)} lines but {ref} has {len(refs)}; source and "
                        f"reference must be line-aligned (one sentence per line, same order)")
    if not sources:
        raise DataError(f"{what}: {src} is empty")
    empty = [i + 1 for i, (s, r) in enumerate(zip(sources, refs)) if not s.strip() or not r.strip()]
    if empty and not skip_empty:
        raise DataError(f"{what}: empty line(s) {_list_lines(empty)} in {src} / {ref}. Remove them, or pass "
                        f"--skip-empty to drop those sentence pairs (they are counted in the report)")
    drop = set(empty)
    pairs = [(i, s, r) for i, (s, r) in enumerate(zip(sources, refs), 1) if i not in drop]
    if not pairs:
        raise DataError(f"{what}: every line of {src} / {ref} is empty")
    if limit is not None and limit > 0:
        pairs = pairs[:limit]
    return ParallelData(str(src), str(ref), [p[1] for p in pairs], [p[2] for p in pairs], len(sources), empty,
                        [p[0] for p in pairs])


def load_calibration(src: str | Path, ref: str | Path, size: int):
    """The calibration pool (default: Multi30k val), first ``size`` non-empty pairs."""
    from backends.base import CalibrationSet

    data = load_parallel(src, ref, limit=size, skip_empty=True, what="calibration set")
    return CalibrationSet(data.sources, data.references, name=Path(src).name), data
