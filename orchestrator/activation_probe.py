"""Activation-quantization probe: what do static int8 activation ranges cost greedy outputs, by group?

``python -m orchestrator.activation_probe [--model DIR] [--src FILE] [--limit N] [--probes a,b]
[--calibration FILE] [--calibration-size N] [--norm-split F [--split-groups g,h]] [--backend-noise S] [--json]``

The counterpart of :mod:`orchestrator.weight_probe` for activations. Forward hooks put a fake int8
quantizer (asymmetric, one static range per tensor, round to nearest: what a full-INT8 build does to
an activation) at every activation site of the PyTorch reference. The ranges are the min-max of each
site over greedy translation of calibration sources (validation, one at a time, so no padding reaches
them; attention scores over their unmasked entries). Then, per probe, one group of sites quantizes
while the rest stays float, and the shared probe runner (:mod:`orchestrator.probe_runner`) prints the
share of greedy outputs identical to the unmodified model and the noise scale that predicts it.

Groups (``GROUPS``), on both the encoder and the decoder side:

* ``embeddings``: the token-embedding lookups;
* ``attention-proj``: the query/key/value/output projections;
* ``attention-scores``: the softmax inputs (masked entries stay as they are, as with select masking);
* ``attention-probs``: the softmax outputs, on int8 softmax's fixed 1/256 grid;
* ``norm-in``: the layer-norm inputs (in a post-LN model the residual sums);
* ``norm-out``: the layer-norm outputs;
* ``ffn``: the feed-forward linear layers and their activation functions;
* ``logits``: the LM head's output.

Probes: each group, ``all``, ``all-encoder``, ``all-decoder``, and ``all+weights`` (every site plus
every int8 weight group of :data:`orchestrator.weight_probe.ALL_INT8`: a PyTorch stand-in for a
full-INT8 build, to set beside a backend's own identity rate); on request ``all-but-<group>[+<group>...]``
(every site but those groups': what leaving them in float would buy); any probe as ``<probe>+weights``
(the int8 weights too). ``--norm-split F`` carries the layer norms' inputs and outputs as two int8
tensors instead of one (:func:`fake_quant_split`): the residual stream at nearly twice the bits, still
all int8, an upper bound for that rewrite (the consumers' second matmul and the add that joins them are
not rounded here); ``--split-groups`` splits other groups too (any but ``attention-probs``, whose grid
is fixed; masked scores stay as they are). The stand-in quantizes at module boundaries with min-max
ranges; a converted graph quantizes more tensors (every op's output) with tuned ranges, so the groups'
shares are the point, not an exact match of a backend. Attention runs eagerly
(``attn_implementation="eager"``) for the reference and every probe alike, so the softmax is an explicit
call the probe can reach.
"""
from __future__ import annotations

import sys
from typing import Any, Callable, Iterable

from backends.errors import InvalidInputError
from orchestrator import probe_runner, weight_probe

GROUPS = ("embeddings", "attention-proj", "attention-scores", "attention-probs", "norm-in", "norm-out", "ffn",
          "logits")
SIDES = ("encoder", "decoder")

#: probe name -> (groups, sides, int8 weights too)
PROBES: dict[str, tuple[tuple[str, ...], tuple[str, ...], bool]] = {
    **{g: ((g,), SIDES, False) for g in GROUPS},
    "all": (GROUPS, SIDES, False),
    "all-encoder": (GROUPS, ("encoder",), False),
    "all-decoder": (GROUPS, ("decoder",), False),
    "all+weights": (GROUPS, SIDES, True),
}
#: every site but these groups': ``all-but-<group>[+<group>...]`` (what leaving them in float would buy)
ALL_BUT = "all-but-"
#: ``<probe>+weights``: any probe with the int8 weights of :data:`orchestrator.weight_probe.ALL_INT8` too
WITH_WEIGHTS = "+weights"


def probe_spec(name: str) -> tuple[tuple[str, ...], tuple[str, ...], bool]:
    """(groups, sides, int8 weights too) of a probe name; an unknown name is an InvalidInputError."""
    if name in PROBES:
        return PROBES[name]
    if name.endswith(WITH_WEIGHTS) and len(name) > len(WITH_WEIGHTS):
        groups, sides, _ = probe_spec(name[:-len(WITH_WEIGHTS)])
        return groups, sides, True
    if name.startswith(ALL_BUT):
        left_out = name[len(ALL_BUT):].split("+")
        if all(g in GROUPS for g in left_out):
            return tuple(g for g in GROUPS if g not in left_out), SIDES, False
    raise InvalidInputError(f"unknown probe {name!r}; choose from {', '.join(PROBES)} or "
                            f"{ALL_BUT}<group>[+<group>...] with groups from {', '.join(GROUPS)}, "
                            f"each also as <probe>{WITH_WEIGHTS}")

#: softmax outputs in int8 sit on this fixed grid (TFLite's int8 SOFTMAX: scale 1/256, zero point -128)
PROBS_LEVELS = 256


def fake_quant_act(x, lo: float, hi: float):
    """``x`` rounded to the asymmetric int8 grid of the range ``[lo, hi]`` (widened to hold 0, which
    stays exact) and back; values outside the range clip to its ends."""
    import torch

    lo, hi = min(float(lo), 0.0), max(float(hi), 0.0)
    if hi - lo <= 0.0:
        return torch.zeros_like(x)
    scale = (hi - lo) / 255.0
    zero_point = round(-128.0 - lo / scale)
    q = torch.clamp(torch.round(x / scale) + zero_point, -128, 127)
    return (q - zero_point) * scale


def fake_quant_split(x, lo: float, hi: float, fraction: float):
    """``x`` carried as two int8 tensors: the op's output again at a finer scale, clipped to ``fraction`` of
    the range ``[lo, hi]`` (clip points on the coarse grid), plus the coarse tensor's excess beyond that clip
    (int8 MINIMUM/MAXIMUM and SUB on one grid: exact). Inside the clip the error is the fine grid's, outside
    it the coarse grid's. What a strict-INT8 graph could carry for a tensor whose consumers then run twice."""
    import torch

    lo, hi = min(float(lo), 0.0), max(float(hi), 0.0)
    if hi - lo <= 0.0:
        return torch.zeros_like(x)
    step = (hi - lo) / 255.0
    lo_c, hi_c = round(lo * fraction / step) * step, round(hi * fraction / step) * step
    coarse = fake_quant_act(x, lo, hi)
    if hi_c - lo_c <= 0.0:
        return coarse
    fine = fake_quant_act(torch.clamp(x, lo_c, hi_c), lo_c, hi_c)
    return fine + (coarse - torch.clamp(coarse, lo_c, hi_c))


#: the groups ``norm_split`` applies to by default: the residual stream around the layer norms
SPLIT_GROUPS = ("norm-in", "norm-out")
#: groups that cannot be split: int8 softmax writes its outputs on a fixed grid
UNSPLITTABLE = ("attention-probs",)


def split_groups_spec(groups: Iterable[str]) -> tuple[str, ...]:
    """The groups a split applies to, checked: known groups, none of :data:`UNSPLITTABLE`, at least one."""
    groups = tuple(dict.fromkeys(g.strip() for g in groups if g.strip()))
    bad = [g for g in groups if g not in GROUPS or g in UNSPLITTABLE]
    if bad or not groups:
        raise InvalidInputError(f"cannot split {', '.join(map(repr, bad)) or 'no group'}; split groups come from "
                                f"{', '.join(g for g in GROUPS if g not in UNSPLITTABLE)}")
    return groups


def fake_quant_probs(p):
    """Softmax outputs on int8 softmax's fixed grid (k / 256, k = 0..255)."""
    import torch

    return torch.clamp(torch.round(p * PROBS_LEVELS), 0, PROBS_LEVELS - 1) / PROBS_LEVELS


def masked_entries(scores):
    """Where an additive mask has put an attention score (at or near the dtype's minimum, or -inf)."""
    import torch

    return scores <= torch.finfo(scores.dtype).min / 2


def _is_attention(m) -> bool:
    return type(m).__name__.endswith("Attention")


def _is_norm(m) -> bool:
    import torch

    return isinstance(m, torch.nn.LayerNorm) or type(m).__name__.endswith(("LayerNorm", "RMSNorm"))


def _is_activation(m) -> bool:
    return type(m).__module__ in ("transformers.activations", "torch.nn.modules.activation")


class ActivationSites:
    """Fake int8 quantizers at every activation site of a transformers seq2seq model.

    ``mode`` is ``"off"`` (the model computes as if unhooked), ``"calibrate"`` (each site's min-max is
    recorded) or ``"quantize"`` (the sites of ``active`` groups and sides quantize with their ranges; with
    ``norm_split`` set, those of ``split_groups`` as two int8 tensors, :func:`fake_quant_split`).
    A site is named ``<side>/<module path>[.scores|.probs]``; a table shared by encoder and decoder is
    two sites. :meth:`remove` takes every hook off and puts ``torch.nn.functional.softmax`` back.
    """

    def __init__(self, net):
        import torch

        self.net = net
        self.mode = "off"
        self.active: tuple[set[str], set[str]] = (set(), set())
        self.norm_split: float | None = None
        self.split_groups: tuple[str, ...] = SPLIT_GROUPS
        self.ranges: dict[str, list[float]] = {}
        self.sites: dict[str, tuple[str, str]] = {}  # site -> (group, side), as seen in calibration
        self._side: str | None = None
        self._attn: list[str] = []
        self._handles: list[Any] = []
        self._F = torch.nn.functional
        self._softmax = self._F.softmax
        self._install()

    # -- wiring ---------------------------------------------------------------------------------
    def _install(self) -> None:
        import torch

        net = self.net
        head = net.get_output_embeddings()
        vocab = int(net.config.vocab_size)
        for side, stack in (("encoder", net.get_encoder()), ("decoder", net.get_decoder())):
            self._handles.append(stack.register_forward_pre_hook(self._enter(side)))
            self._handles.append(stack.register_forward_hook(self._leave))
        attention: list[str] = []
        for name, m in net.named_modules():
            inside_attention = any(name.startswith(a + ".") for a in attention)
            if m is head:
                self._out(m, "logits", name, side="decoder")
            elif isinstance(m, torch.nn.Embedding) and m.num_embeddings == vocab:
                self._out(m, "embeddings", name)
            elif _is_attention(m):
                attention.append(name)
                self._handles.append(m.register_forward_pre_hook(self._attn_enter(name)))
                self._handles.append(m.register_forward_hook(self._attn_leave))
            elif isinstance(m, torch.nn.Linear):
                self._out(m, "attention-proj" if inside_attention else "ffn", name)
            elif _is_norm(m):
                self._handles.append(m.register_forward_pre_hook(self._norm_in(name)))
                self._out(m, "norm-out", name)
            elif _is_activation(m):
                self._out(m, "ffn", name)
        self._F.softmax = self._wrapped_softmax

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []
        self._F.softmax = self._softmax

    def _enter(self, side: str):
        def hook(module, args):
            self._side = side
        return hook

    def _leave(self, module, args, output):
        self._side = None

    def _attn_enter(self, name: str):
        def hook(module, args):
            self._attn.append(name)
        return hook

    def _attn_leave(self, module, args, output):
        self._attn.pop()

    def _out(self, module, group: str, name: str, side: str | None = None) -> None:
        def hook(mod, args, output):
            return self.apply(group, name, output, side)
        self._handles.append(module.register_forward_hook(hook))

    def _norm_in(self, name: str):
        def hook(module, args):
            if not args:
                return None
            return (self.apply("norm-in", name + ".input", args[0]),) + tuple(args[1:])
        return hook

    def _wrapped_softmax(self, input, dim=None, _stacklevel=3, dtype=None):
        if self.mode == "off" or not self._attn:
            return self._softmax(input, dim=dim, _stacklevel=_stacklevel, dtype=dtype)
        name = self._attn[-1]
        scores = self.apply("attention-scores", name + ".scores", input)
        probs = self._softmax(scores, dim=dim, _stacklevel=_stacklevel, dtype=dtype)
        return self.apply("attention-probs", name + ".probs", probs)

    # -- the quantizer ----------------------------------------------------------------------------
    def apply(self, group: str, name: str, x, side: str | None = None):
        """What a site does to the tensor ``x`` passing through it in the current mode."""
        import torch

        if self.mode == "off" or not isinstance(x, torch.Tensor) or not x.is_floating_point():
            return x
        side = side or self._side or "other"
        key = f"{side}/{name}"
        if self.mode == "calibrate":
            self.sites[key] = (group, side)
            if group != "attention-probs":
                masked = masked_entries(x) if group == "attention-scores" else None
                vals = x if masked is None else x[~masked]
                if vals.numel():
                    lo, hi = float(vals.min()), float(vals.max())
                    r = self.ranges.setdefault(key, [lo, hi])
                    r[0], r[1] = min(r[0], lo), max(r[1], hi)
            return x
        groups, sides = self.active
        if group not in groups or side not in sides or key not in self.sites:
            return x
        if group == "attention-probs":
            return fake_quant_probs(x)
        if key not in self.ranges:  # calibration never saw a value here (all masked): leave it
            return x
        if self.norm_split is not None and group in self.split_groups:
            q = fake_quant_split(x, *self.ranges[key], self.norm_split)
        else:
            q = fake_quant_act(x, *self.ranges[key])
        return torch.where(masked_entries(x), x, q) if group == "attention-scores" else q

    def calibrate(self, generate: Callable[[list[str]], Any], sources: list[str]) -> None:
        """Record every site's range over ``generate(sources)`` (the model's own greedy outputs)."""
        self.mode = "calibrate"
        try:
            generate(sources)
        finally:
            self.mode = "off"
        if not self.sites:
            raise InvalidInputError("calibration reached no activation site; is this a transformers "
                                    "encoder-decoder model?")

    def count(self, groups, sides) -> int:
        return sum(g in groups and s in sides for g, s in self.sites.values())

    def summary(self) -> dict[str, dict[str, int]]:
        """Sites per group and side, as calibration found them."""
        return {g: {s: self.count((g,), (s,)) for s in SIDES} for g in GROUPS}


def _setup(calibration: list[str], norm_split: float | None = None,
           split_groups: tuple[str, ...] = SPLIT_GROUPS):
    def setup(session: probe_runner.ProbeSession):
        net = session.net
        if hasattr(net, "set_attn_implementation"):
            net.set_attn_implementation("eager")
        session.state["weights"] = weight_probe.weight_groups(net)  # untie the head before the reference run
        sites = ActivationSites(net)
        try:
            sites.calibrate(lambda src: session.generate(src, batch_size=1), calibration)
        except BaseException:
            sites.remove()
            raise
        sites.norm_split, sites.split_groups = norm_split, split_groups
        session.state["sites"] = sites
        session.extra.update({"calibration_sentences": len(calibration), "ranges": "min-max",
                              "norm_split": norm_split,
                              "split_groups": list(split_groups) if norm_split is not None else [],
                              "sites": sites.summary()})
        return sites.remove
    return setup


def _perturb(session: probe_runner.ProbeSession, probe: str):
    sites: ActivationSites = session.state["sites"]
    groups, sides, weights = probe_spec(probe)
    restore_weights = (weight_probe.apply_probe(session.state["weights"], "all-int8") if weights
                       else (lambda: None))
    sites.active = (set(groups), set(sides))
    sites.mode = "quantize"
    tensors = sites.count(groups, sides)
    if weights:
        tensors += weight_probe.tensor_count(session.state["weights"], "all-int8")

    def restore() -> None:
        sites.mode = "off"
        sites.active = (set(), set())
        restore_weights()
    return {"groups": list(groups), "sides": list(sides), "int8_weights": weights, "tensors": tensors}, restore


def run_probes(model_dir, sources: list[str], probes: list[str], calibration: list[str], threads: int = 2,
               batch_size: int = 32, max_source_length: int = 64, max_new_tokens: int = 64,
               source_prefix: str | None = None, norm_split: float | None = None,
               split_groups: Iterable[str] = SPLIT_GROUPS,
               progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """The probe results as a JSON-ready dict (see the module docstring)."""
    if norm_split is not None and not 0.0 < norm_split < 1.0:
        raise InvalidInputError(f"norm_split must be between 0 and 1 (a fraction of the range), got {norm_split}")
    split_groups = split_groups_spec(split_groups)
    if not calibration:
        raise InvalidInputError("no calibration sentences: the activation ranges come from them")
    return probe_runner.run_probe_set(
        model_dir, sources, probes, probe_spec, _perturb, setup=_setup(calibration, norm_split, split_groups),
        kind="activation probe", method="asymmetric int8 activations, static min-max ranges per tensor, round to "
        "nearest" + (f"; {', '.join(split_groups)} as two int8 tensors (fine part clipped to {norm_split:g} "
                     f"of the range)" if norm_split is not None else ""),
        threads=threads, batch_size=batch_size, max_source_length=max_source_length,
        max_new_tokens=max_new_tokens, source_prefix=source_prefix, progress=progress)


def main(argv: list[str] | None = None) -> int:
    from orchestrator import data as data_mod

    ap = probe_runner.argument_parser(
        "python -m orchestrator.activation_probe",
        "What static int8 ranges on one group of activations cost greedy outputs (PyTorch reference, "
        "everything else float).", list(PROBES),
        list(PROBES) + [ALL_BUT + "<group>[+<group>...]", "<probe>" + WITH_WEIGHTS])
    ap.add_argument("--calibration", default=str(data_mod.DEFAULT_CAL_SRC),
                    help="calibration sources for the ranges (default: Multi30k val)")
    ap.add_argument("--calibration-size", type=int, default=200, help="first N calibration sentences")
    ap.add_argument("--norm-split", type=float, default=None, metavar="FRACTION",
                    help="carry the layer norms' inputs and outputs (or --split-groups) as two int8 tensors: a "
                         "fine part clipped to FRACTION of the range plus the coarse excess (what strict INT8 could "
                         "do at the cost of running their consumers twice)")
    ap.add_argument("--split-groups", metavar="GROUPS",
                    help=f"comma-separated groups --norm-split splits (default: {','.join(SPLIT_GROUPS)}; any group "
                         "but attention-probs)")
    args = ap.parse_args(argv)

    def run(sources, probes, progress):
        if args.calibration_size < 1:
            raise InvalidInputError(f"--calibration-size must be >= 1, got {args.calibration_size}")
        if args.split_groups is not None and args.norm_split is None:
            raise InvalidInputError("--split-groups needs --norm-split (the fraction of the range the fine part "
                                    "covers)")
        split_groups = SPLIT_GROUPS if args.split_groups is None else args.split_groups.split(",")
        cal = [s for s in data_mod.read_lines(args.calibration, "calibration source") if s.strip()]
        return run_probes(args.model, sources, probes, cal[:args.calibration_size], args.threads,
                          args.batch_size, args.max_source_length, args.max_new_tokens, args.source_prefix,
                          norm_split=args.norm_split, split_groups=split_groups, progress=progress)
    return probe_runner.run_cli(args, run)


if __name__ == "__main__":
    sys.exit(main())
