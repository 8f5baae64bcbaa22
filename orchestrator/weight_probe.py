"""Weight-quantization probe: what does int8 rounding of one weight group cost greedy outputs?

``python -m orchestrator.weight_probe [--model DIR] [--src FILE] [--limit N] [--probes a,b]``

Runs the PyTorch reference (``torch-fp32-split``: the shared host loop, equal to ``torch-fp32``)
once as is, then once per probe with one group of weights rounded to symmetric int8 (round to
nearest, scale = max |w| / 127 over the group's granule), everything else float, and prints per
probe the share of greedy outputs identical to the unmodified model and, from the unmodified
model's own top-1 - top-2 margins (:mod:`orchestrator.suites.margins`), the logistic noise scale
that predicts that share. Noise scales of independent sources add in quadrature, so the printout
says how much of a backend's fitted noise scale (split-generation's ``flip_noise_scale``) one weight
group can explain: what removing it alone would buy.

Probes (``PROBES``): the token-embedding tables per tensor (as an int8 GATHER quantizes them) and
per row, the LM head per output row, every other linear layer per output channel, and all of them
as a full-INT8 TFLite build stores them. With tied embeddings the LM head is untied first, so the
embedding and head probes are separable.

This is a diagnostic of the weights alone (activations stay float); it is not a backend and
selects nothing. ``--json`` prints the numbers as JSON. Bad input exits 2 with one message.
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

#: probe name -> (what it rounds, granule): "tensor" (one scale), "row" (one scale per output row)
PROBES: dict[str, tuple[str, str]] = {
    "embedding-tensor": ("embedding", "tensor"),
    "embedding-row": ("embedding", "row"),
    "lm_head-row": ("lm_head", "row"),
    "linear-channel": ("linear", "row"),
    "all-int8": ("all", "mixed"),
}


def fake_quant_int8(w, granule: str):
    """``w`` (a torch tensor, [out, in]) rounded to symmetric int8 and back, one scale per tensor or
    per row; an all-zero granule stays zero."""
    import torch

    m = w.abs().amax() if granule == "tensor" else w.abs().amax(dim=1, keepdim=True)
    scale = torch.where(m > 0, m / 127.0, torch.ones_like(m))
    return torch.clamp(torch.round(w / scale), -127, 127) * scale


def weight_groups(net) -> dict[str, list[Any]]:
    """The probe's parameter groups of a transformers seq2seq model: ``embedding`` (token-embedding
    tables: nn.Embedding with vocab_size rows, not positional tables), ``lm_head`` (the output
    projection, untied from the embeddings if it shares their tensor) and ``linear`` (every other
    nn.Linear)."""
    import torch

    head = net.get_output_embeddings()
    vocab = int(net.config.vocab_size)
    embeds = [m for m in net.modules() if isinstance(m, torch.nn.Embedding) and m.num_embeddings == vocab]
    if head is not None and any(head.weight is e.weight for e in embeds):
        head.weight = torch.nn.Parameter(head.weight.detach().clone())
        net.config.tie_word_embeddings = False
    params: dict[int, Any] = {}
    for e in embeds:
        params.setdefault(id(e.weight), e.weight)  # shared tables (encoder/decoder/shared) once
    linear = [m.weight for m in net.modules() if isinstance(m, torch.nn.Linear) and m is not head]
    return {"embedding": list(params.values()), "lm_head": [head.weight] if head is not None else [],
            "linear": linear}


#: what the ``all`` probe rounds: each group as a full-INT8 TFLite build stores it
ALL_INT8 = (("embedding", "tensor"), ("lm_head", "row"), ("linear", "row"))


def probe_plan(probe: str) -> tuple[tuple[str, str], ...]:
    """The (group, granule) pairs a probe rounds."""
    what, granule = PROBES[probe]
    return ALL_INT8 if what == "all" else ((what, granule),)


def apply_probe(groups: dict[str, list[Any]], probe: str) -> Callable[[], None]:
    """Round the probe's weights in place; returns the function that restores them."""
    import torch

    saved = []
    with torch.no_grad():
        for group, g in probe_plan(probe):
            for p in groups[group]:
                saved.append((p, p.detach().clone()))
                p.copy_(fake_quant_int8(p, g))

    def restore() -> None:
        with torch.no_grad():
            for p, w in saved:
                p.copy_(w)
    return restore


def _generate(backend, model, sources: list[str], batch_size: int) -> list[list[int]]:
    out: list[list[int]] = []
    for i in range(0, len(sources), batch_size):
        enc = model.encode_sources(sources[i:i + batch_size], backend.max_source_length)
        out += backend.generate(enc.input_ids, enc.attention_mask)
    return out


def run_probes(model_dir: str | Path, sources: list[str], probes: list[str], threads: int = 2,
               batch_size: int = 32, max_source_length: int = 64, max_new_tokens: int = 64,
               source_prefix: str | None = None,
               progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """The probe results as a JSON-ready dict (see the module docstring)."""
    from backends.model import ModelBundle
    from backends.registry import get_backend
    from orchestrator.suites.margins import noise_scale_for, score_own_output, top2_margins

    unknown = [p for p in probes if p not in PROBES]
    if unknown:
        raise InvalidInputError(f"unknown probe(s) {unknown}; choose from {sorted(PROBES)}")
    if not sources:
        raise InvalidInputError("no source sentences to probe")
    model = ModelBundle.load(model_dir, source_prefix=source_prefix)
    backend = get_backend("torch-fp32-split", threads=threads, max_source_length=max_source_length,
                          max_new_tokens=max_new_tokens)
    started = time.time()
    with tempfile.TemporaryDirectory(prefix="seqquant-probe-") as tmp:
        backend.prepare(model, tmp)
        backend.activate()
        try:
            ref = _generate(backend, model, sources, batch_size)
            scored = score_own_output(backend, model, sources, ref, batch_size)
            top2, offsets = top2_margins(scored), scored["offsets"]
            groups = weight_groups(backend.torch_module())
            rows = []
            for probe in probes:
                if progress:
                    progress(probe)
                restore = apply_probe(groups, probe)
                try:
                    out = _generate(backend, model, sources, batch_size)
                finally:
                    restore()
                identical = float(np.mean([a == b for a, b in zip(out, ref)]))
                rows.append({"probe": probe, "group": PROBES[probe][0], "granule": PROBES[probe][1],
                             "tensors": sum(len(groups[g]) for g, _ in probe_plan(probe)),
                             "identical": identical, "noise_scale": noise_scale_for(top2, offsets, identical)})
        finally:
            backend.deactivate()
    return {"model": str(model_dir), "sentences": len(sources), "max_source_length": max_source_length,
            "max_new_tokens": max_new_tokens, "threads": threads, "method": "symmetric int8, round to nearest",
            "probes": rows, "seconds": round(time.time() - started, 1)}


def removal_effect(backend_scale: float, probe_scale: float) -> float:
    """A backend's noise scale with one independent source of ``probe_scale`` removed (quadrature)."""
    return float(np.sqrt(max(0.0, backend_scale ** 2 - probe_scale ** 2)))


def format_results(res: dict[str, Any], backend_scale: float | None = None) -> str:
    lines = [f"weight probe: {res['model']}, {res['sentences']} sentences, greedy, {res['method']} "
             f"({res['seconds']} s)",
             f"{'probe':<18} {'tensors':>7} {'identical':>9} {'noise (nats)':>12}"
             + (f" {'backend without it':>19}" if backend_scale else "")]
    for r in res["probes"]:
        s = r["noise_scale"]
        noise = "-" if s is None else f"{s:.3f}"
        line = f"{r['probe']:<18} {r['tensors']:>7} {r['identical']:>9.1%} {noise:>12}"
        if backend_scale and s is not None:
            line += f" {removal_effect(backend_scale, s):>19.3f}"
        lines.append(line)
    if backend_scale:
        lines.append(f"(backend without it: a noise scale of {backend_scale:.3f} nats with that source removed, "
                     f"in quadrature)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from orchestrator import data as data_mod

    ap = argparse.ArgumentParser(prog="python -m orchestrator.weight_probe",
                                 description="What int8 rounding of one weight group costs greedy outputs "
                                             "(PyTorch reference, activations float).")
    ap.add_argument("--model", default=str(data_mod.DEFAULT_MODEL), help="checkpoint directory (default: embedded)")
    ap.add_argument("--src", default=str(data_mod.DEFAULT_SRC), help="source sentences (default: Multi30k test)")
    ap.add_argument("--limit", type=int, default=0, help="first N sentences (0 = all)")
    ap.add_argument("--probes", default=",".join(PROBES), help=f"comma-separated, of {','.join(PROBES)}")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--max-source-length", type=int, default=64)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--source-prefix", default=None, help="task prefix prepended to every source (e.g. for T5)")
    ap.add_argument("--backend-noise", type=float, default=None,
                    help="a backend's fitted noise scale (nats): also print it with each probe's source removed")
    ap.add_argument("--json", action="store_true", help="print the results as JSON")
    args = ap.parse_args(argv)
    try:
        if args.limit < 0 or args.threads < 1 or args.batch_size < 1:
            raise InvalidInputError("--limit must be >= 0, --threads and --batch-size >= 1")
        if args.backend_noise is not None and not args.backend_noise > 0:
            raise InvalidInputError(f"--backend-noise must be > 0, got {args.backend_noise}")
        sources = [s for s in data_mod.read_lines(args.src, "probe source") if s.strip()]
        if args.limit:
            sources = sources[:args.limit]
        probes = [p.strip() for p in args.probes.split(",") if p.strip()]
        res = run_probes(args.model, sources, probes, args.threads, args.batch_size, args.max_source_length,
                         args.max_new_tokens, args.source_prefix, progress=None if args.json else
                         (lambda p: print(f"probing {p} ...", file=sys.stderr, flush=True)))
    except SeqquantError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(res, indent=1) if args.json else format_results(res, args.backend_noise))
    return 0


if __name__ == "__main__":
    sys.exit(main())
