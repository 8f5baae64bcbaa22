"""What the quantization probes share: run the PyTorch reference, perturb it, count what changes.

A probe (:mod:`orchestrator.weight_probe`, :mod:`orchestrator.activation_probe`) runs the PyTorch
reference (``torch-fp32-split``: the shared host loop, equal to ``torch-fp32``) once as is and then
once per probe with one perturbation applied (e.g. one weight group rounded to int8), and reports per
probe the share of greedy outputs identical to the unmodified model and, from the unmodified model's
own top-1 - top-2 margins (:mod:`orchestrator.suites.margins`), the logistic noise scale that predicts
that share. Noise scales of independent sources add in quadrature, so with a backend's fitted noise
scale (split-generation's ``flip_noise_scale``) the printout also says what removing one source alone
would leave of it.

A probe module supplies ``spec(name)`` (what a probe name means; an unknown name raises
InvalidInputError), ``perturb(session, probe) -> (row fields, restore)`` and optionally
``setup(session) -> cleanup``, called once before the reference run.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from backends.errors import InvalidInputError, SeqquantError


class ProbeSession:
    """The live reference backend a probe perturbs (only inside :func:`run_probe_set`)."""

    def __init__(self, backend, model, batch_size: int):
        self.backend, self.model, self.batch_size = backend, model, batch_size
        self.state: dict[str, Any] = {}  # what a probe's setup keeps for its perturbations
        self.extra: dict[str, Any] = {}  # what it adds to the results

    @property
    def net(self):
        """The live PyTorch model."""
        return self.backend.torch_module()

    def generate(self, sources: list[str], batch_size: int | None = None) -> list[list[int]]:
        """Greedy outputs of the (possibly perturbed) model through the shared host loop."""
        from orchestrator.suites.base import generate_in_batches

        return generate_in_batches(self.backend, self.model, sources, batch_size or self.batch_size)[0]


Perturb = Callable[[ProbeSession, str], tuple[dict[str, Any], Callable[[], None]]]


def run_probe_set(model_dir: str | Path, sources: list[str], probes: list[str], spec: Callable[[str], Any],
                  perturb: Perturb, *, kind: str, method: str,
                  setup: Callable[[ProbeSession], Callable[[], None] | None] | None = None,
                  threads: int = 2, batch_size: int = 32, max_source_length: int = 64,
                  max_new_tokens: int = 64, source_prefix: str | None = None,
                  progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """The probe results as a JSON-ready dict (see the module docstring)."""
    from backends.model import ModelBundle
    from backends.registry import get_backend
    from orchestrator.suites.margins import noise_scale_for, score_own_output, top2_margins

    if not probes:
        raise InvalidInputError("no probe given")
    for p in probes:
        spec(p)
    if not sources:
        raise InvalidInputError("no source sentences to probe")
    model = ModelBundle.load(model_dir, source_prefix=source_prefix)
    backend = get_backend("torch-fp32-split", threads=threads, max_source_length=max_source_length,
                          max_new_tokens=max_new_tokens)
    started = time.time()
    extra: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="seqquant-probe-") as tmp:
        backend.prepare(model, tmp)
        backend.activate()
        cleanup = None
        try:
            session = ProbeSession(backend, model, batch_size)
            if setup is not None:
                cleanup = setup(session)
            ref = session.generate(sources)
            scored = score_own_output(backend, model, sources, ref, batch_size)
            top2, offsets = top2_margins(scored), scored["offsets"]
            rows = []
            for probe in probes:
                if progress:
                    progress(probe)
                fields, restore = perturb(session, probe)
                try:
                    out = session.generate(sources)
                finally:
                    restore()
                identical = float(np.mean([a == b for a, b in zip(out, ref)]))
                rows.append({"probe": probe, **fields, "identical": identical,
                             "noise_scale": noise_scale_for(top2, offsets, identical)})
            extra = session.extra
        finally:
            if cleanup is not None:
                cleanup()
            backend.deactivate()
    return {"kind": kind, "model": str(model_dir), "sentences": len(sources),
            "max_source_length": max_source_length, "max_new_tokens": max_new_tokens, "threads": threads,
            "method": method, **extra, "probes": rows, "seconds": round(time.time() - started, 1)}


def removal_effect(backend_scale: float, probe_scale: float) -> float:
    """A backend's noise scale with one independent source of ``probe_scale`` removed (quadrature)."""
    return float(np.sqrt(max(0.0, backend_scale ** 2 - probe_scale ** 2)))


def format_results(res: dict[str, Any], backend_scale: float | None = None) -> str:
    w = max([18] + [len(r["probe"]) for r in res["probes"]])
    lines = [f"{res.get('kind', 'probe')}: {res['model']}, {res['sentences']} sentences, greedy, "
             f"{res['method']} ({res['seconds']} s)",
             f"{'probe':<{w}} {'tensors':>7} {'identical':>9} {'noise (nats)':>12}"
             + (f" {'backend without it':>19}" if backend_scale else "")]
    for r in res["probes"]:
        s = r["noise_scale"]
        noise = "-" if s is None else f"{s:.3f}"
        line = f"{r['probe']:<{w}} {r['tensors']:>7} {r['identical']:>9.1%} {noise:>12}"
        if backend_scale and s is not None:
            line += f" {removal_effect(backend_scale, s):>19.3f}"
        lines.append(line)
    if backend_scale:
        lines.append(f"(backend without it: a noise scale of {backend_scale:.3f} nats with that source removed, "
                     f"in quadrature)")
    return "\n".join(lines)


def argument_parser(prog: str, description: str, probes: list[str],
                    known: list[str] | None = None) -> argparse.ArgumentParser:
    """The options every probe CLI takes; ``probes`` run by default, ``known`` (default: the same) can."""
    from orchestrator import data as data_mod

    ap = argparse.ArgumentParser(prog=prog, description=description)
    ap.add_argument("--model", default=str(data_mod.DEFAULT_MODEL), help="checkpoint directory (default: embedded)")
    ap.add_argument("--src", default=str(data_mod.DEFAULT_SRC), help="source sentences (default: Multi30k test)")
    ap.add_argument("--limit", type=int, default=0, help="first N sentences (0 = all)")
    ap.add_argument("--probes", default=",".join(probes), help=f"comma-separated, of {','.join(known or probes)}")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--max-source-length", type=int, default=64)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--source-prefix", default=None, help="task prefix prepended to every source (e.g. for T5)")
    ap.add_argument("--backend-noise", type=float, default=None,
                    help="a backend's fitted noise scale (nats): also print it with each probe's source removed")
    ap.add_argument("--json", action="store_true", help="print the results as JSON")
    return ap


def run_cli(args: argparse.Namespace, run: Callable[..., dict[str, Any]]) -> int:
    """Check the common options, read the sources, call ``run(sources, probes, progress=...)`` and
    print; bad input exits 2 with one message."""
    from orchestrator import data as data_mod

    try:
        if args.limit < 0 or args.threads < 1 or args.batch_size < 1:
            raise InvalidInputError("--limit must be >= 0, --threads and --batch-size >= 1")
        if args.backend_noise is not None and not args.backend_noise > 0:
            raise InvalidInputError(f"--backend-noise must be > 0, got {args.backend_noise}")
        sources = [s for s in data_mod.read_lines(args.src, "probe source") if s.strip()]
        if args.limit:
            sources = sources[:args.limit]
        probes = [p.strip() for p in args.probes.split(",") if p.strip()]
        res = run(sources, probes, progress=None if args.json else
                  (lambda p: print(f"probing {p} ...", file=sys.stderr, flush=True)))
    except SeqquantError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(res, indent=1) if args.json else format_results(res, args.backend_noise))
    return 0
