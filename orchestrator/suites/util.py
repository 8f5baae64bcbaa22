"""Small helpers shared by the suites: option lookup, file I/O of saved arrays, logit statistics.

Only numpy/json here (no runtime imports).
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from backends.errors import InvalidInputError


def suite_options(ctx: Any, suite: str, defaults: dict[str, Any]) -> dict[str, Any]:
    """Merge ``defaults`` with the matrix's ``[suites.<suite>]`` table.

    ``ctx.suite_options`` is either that table itself or the whole ``[suites]`` table
    (``{suite_name: {...}}``); both are accepted. Unknown keys are a user error.
    """
    return check_suite_options(suite_table(ctx, suite), defaults, f"[suites.{suite}]")


def suite_table(ctx: Any, suite: str) -> dict[str, Any]:
    """The ``[suites.<suite>]`` table in ``ctx.suite_options`` (that table itself or the whole ``[suites]``)."""
    raw = dict(getattr(ctx, "suite_options", None) or {})
    if isinstance(raw.get(suite), dict):
        raw = dict(raw[suite])
    # drop other suites' tables when given the whole [suites] table
    return {k: v for k, v in raw.items() if not isinstance(v, dict)}


def check_suite_options(raw: dict[str, Any], defaults: dict[str, Any], where: str) -> dict[str, Any]:
    """``defaults`` updated with ``raw`` (one suite's option table, named ``where`` in messages), every
    value type-checked against its default's; every problem in one :class:`InvalidInputError`."""
    problems = []
    unknown = sorted(set(raw) - set(defaults))
    if unknown:
        problems.append(f"unknown option(s) {unknown}; accepted: {sorted(defaults)}")
    out = dict(defaults)
    for k, v in raw.items():
        if k not in defaults:
            continue
        d = defaults[k]
        if isinstance(d, bool):
            if not isinstance(v, bool):
                problems.append(f"{k} must be true/false, got {v!r}")
        elif isinstance(d, int):
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                problems.append(f"{k} must be a non-negative integer, got {v!r}")
        elif isinstance(d, float):
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                problems.append(f"{k} must be a finite number, got {v!r}")
            else:
                v = float(v)
        elif isinstance(d, list) and not isinstance(v, list):
            problems.append(f"{k} must be a list, got {v!r}")
        elif isinstance(d, str) and not isinstance(v, str):
            problems.append(f"{k} must be a string, got {v!r}")
        out[k] = v
    if problems:
        raise InvalidInputError(f"{where}: " + "; ".join(problems))
    return out


def sample_indices(n_total: int, n: int, seed: int) -> list[int]:
    """``n`` distinct indices from ``range(n_total)`` (sorted), reproducible for a seed."""
    n = min(n, n_total)
    rng = np.random.default_rng(seed)
    return sorted(int(i) for i in rng.choice(n_total, size=n, replace=False))


def read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def cosine_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity of two [N, V] arrays (float64)."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    num = np.sum(a * b, axis=-1)
    den = np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1) + 1e-12
    return num / den


def topk_ids(x: np.ndarray, k: int) -> np.ndarray:
    """[N, k] indices of the k largest values per row (descending)."""
    x = np.asarray(x)
    k = min(k, x.shape[-1])
    part = np.argpartition(-x, k - 1, axis=-1)[:, :k]
    vals = np.take_along_axis(x, part, axis=-1)
    order = np.argsort(-vals, axis=-1, kind="stable")
    return np.take_along_axis(part, order, axis=-1)


def topk_overlap(a: np.ndarray, b: np.ndarray, k: int) -> np.ndarray:
    """Fraction of shared top-k ids per row pair, in [0, 1]."""
    ta, tb = topk_ids(a, k), topk_ids(b, k)
    return np.array([len(set(x.tolist()) & set(y.tolist())) / float(k) for x, y in zip(ta, tb)])


def finite(x: float | None, ndigits: int = 4) -> float | None:
    """JSON-safe rounding: NaN/inf -> None."""
    if x is None:
        return None
    x = float(x)
    if not np.isfinite(x):
        return None
    return round(x, ndigits)
