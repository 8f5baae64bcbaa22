"""Weight-quantization probe: what does int8 rounding of one weight group cost greedy outputs?

``python -m orchestrator.weight_probe [--model DIR] [--src FILE] [--limit N] [--probes a,b]``

Per probe, one group of weights of the PyTorch reference is rounded to symmetric int8 (round to
nearest, scale = max |w| / 127 over the group's granule), everything else float, and the shared probe
runner (:mod:`orchestrator.probe_runner`) prints the share of greedy outputs identical to the
unmodified model and the logistic noise scale that predicts that share. Noise scales of independent
sources add in quadrature, so the printout says how much of a backend's fitted noise scale
(split-generation's ``flip_noise_scale``) one weight group can explain: what removing it alone would
buy. :mod:`orchestrator.activation_probe` does the same for activations.

Probes (``PROBES``): the token-embedding tables per tensor (as an int8 GATHER quantizes them) and
per row, the LM head per output row, every other linear layer per output channel, and all of them
as a full-INT8 TFLite build stores them. With tied embeddings the LM head is untied first, so the
embedding and head probes are separable.

This is a diagnostic of the weights alone (activations stay float); it is not a backend and
selects nothing. ``--json`` prints the numbers as JSON. Bad input exits 2 with one message.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Callable

from backends.errors import InvalidInputError
from orchestrator import probe_runner

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
    """The (group, granule) pairs a probe rounds; an unknown name is an InvalidInputError."""
    if probe not in PROBES:
        raise InvalidInputError(f"unknown probe {probe!r}; choose from {', '.join(PROBES)}")
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


def tensor_count(groups: dict[str, list[Any]], probe: str) -> int:
    """How many weight tensors ``probe`` rounds."""
    return sum(len(groups[g]) for g, _ in probe_plan(probe))


def _perturb(session, probe: str):
    groups = session.state["groups"]
    what, granule = PROBES[probe]
    fields = {"group": what, "granule": granule, "tensors": tensor_count(groups, probe)}
    return fields, apply_probe(groups, probe)


def _setup(session) -> None:
    session.state["groups"] = weight_groups(session.net)  # untie the head before the reference run


def run_probes(model_dir: str | Path, sources: list[str], probes: list[str], threads: int = 2,
               batch_size: int = 32, max_source_length: int = 64, max_new_tokens: int = 64,
               source_prefix: str | None = None,
               progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """The probe results as a JSON-ready dict (see the module docstring)."""
    return probe_runner.run_probe_set(
        model_dir, sources, probes, probe_plan, _perturb, setup=_setup, kind="weight probe",
        method="symmetric int8, round to nearest", threads=threads, batch_size=batch_size,
        max_source_length=max_source_length, max_new_tokens=max_new_tokens, source_prefix=source_prefix,
        progress=progress)


def main(argv: list[str] | None = None) -> int:
    ap = probe_runner.argument_parser(
        "python -m orchestrator.weight_probe",
        "What int8 rounding of one weight group costs greedy outputs (PyTorch reference, activations float).",
        list(PROBES))
    args = ap.parse_args(argv)
    return probe_runner.run_cli(args, lambda sources, probes, progress: run_probes(
        args.model, sources, probes, args.threads, args.batch_size, args.max_source_length,
        args.max_new_tokens, args.source_prefix, progress=progress))


if __name__ == "__main__":
    sys.exit(main())
