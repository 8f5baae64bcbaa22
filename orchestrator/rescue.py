"""Accuracy-driven selective-float search: which parts of an INT8 backend must stay float to meet the [bar].

``python cli.py rescue --backend tflite-int8 --set min_int8_agreement=0.8`` answers "if INT8 misses my bar,
how much of the network must stay float to meet it?" the way Intel Neural Compressor's and AIMET's
accuracy-driven fallback does, with seqquant's own verdict rules as the criterion:

1. **base** — the backend as it is, with the reference. If it meets the bar, nothing needs to stay float.
2. **alone** — one variant per unit the backend can leave in float
   (:meth:`backends.base.Seq2SeqBackend.float_fallback`; TFLite's ``float_regions``: a region in every graph,
   ``layer_norm``, made of one graph's parts, ``encoder.layer_norm`` and ``decoder.layer_norm``; ``--parts``
   may name either). The units are ranked by what each alone buys: the share of outputs identical to the
   reference, then BLEU. A unit that alone meets the bar ends this step (the smallest such variant on disk).
3. **cumulative** — the best unit, then the best two, three, ... in that order, one build per step, until a
   set meets the bar or every unit is float. Greedy, as INC's and AIMET's are: it finds a set that meets the
   bar, not always the smallest one.
4. **refine** — coarse to fine: each part of a several-part unit in the set found is dropped in turn and stays
   dropped while the set still meets the bar, so the answer says which graph must stay float.

Each variant is also tested against the base sentence by sentence (:func:`identity_vs_base`, McNemar's exact
test): a difference within chance reads as such.

Every variant is a real build run by the ``compare`` engine (:func:`orchestrator.engine.run_compare`), all in
one run directory: results and artifacts are reused on re-run, a variant that fails to build or crashes is
recorded as such and the search goes on without it, and the directory's ``report.json``/``md``/``html`` hold
every tried variant with its verdict. The search itself is written to ``rescue.json``, and the variant found to
``rescue.toml``, a ``[variants]`` table to paste into a matrix (``compare --matrix``) so the rescued build
joins a regression run.

:func:`search` is the strategy alone, over a ``measure`` callable; :func:`run_rescue` measures with the engine.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

from backends.base import FloatFallback
from backends.errors import InvalidInputError
from orchestrator.errors import SettingsError

#: what the verdicts need: agreement and BLEU (quality), source-blindness (source-sensitivity)
DEFAULT_SUITES = ("quality", "source-sensitivity")
#: metrics a trial carries into rescue.json and the table (when the run measured them)
TRIAL_METRICS = ("exact_match_vs_reference", "bleu", "chrf", "bytes", "latency_p50_ms", "cross_source_cosine")
PHASES = ("base", "alone", "cumulative", "refine")
#: arguments that change how a search runs, not what it measures (left out of its directory's name)
RUN_ONLY_ARGS = frozenset({"command", "out", "quiet", "force", "cache_dir", "build_jobs", "timeout", "threads"})
RESCUE_JSON, RESCUE_TOML, RESCUE_MD = "rescue.json", "rescue.toml", "rescue.md"


@dataclass
class Trial:
    """One measured set of float parts."""
    parts: tuple[str, ...]
    backend: str
    phase: str
    status: str = "ok"  # the backend's run status: ok | failed | skipped | missing
    passes: bool = False
    metrics: dict[str, Any] = field(default_factory=dict)
    #: the bar checks it missed (metric: value vs threshold), or why it could not be judged
    misses: list[str] = field(default_factory=list)
    #: the paired test of its identical outputs against the base's (:func:`identity_vs_base`)
    vs_base: dict[str, Any] | None = None

    def rank_key(self) -> tuple[float, float]:
        """Higher is better: identical share, then BLEU (unmeasured ranks last)."""
        em, bleu = self.metrics.get("exact_match_vs_reference"), self.metrics.get("bleu")
        return (float(em) if isinstance(em, (int, float)) else -1.0,
                float(bleu) if isinstance(bleu, (int, float)) else -1.0)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


Measure = Callable[[list[tuple[str, ...]], str], dict[tuple[str, ...], Trial]]


def search(measure: Measure, start: tuple[str, ...], candidates: Iterable[str | tuple[str, ...]],
           canonical: Callable[[Iterable[str]], tuple[str, ...]] = tuple) -> tuple[list[Trial], Trial | None]:
    """The greedy fallback search (module docstring): every trial in order, and the one found to meet the bar
    (None if none does). ``measure(sets, phase)`` measures sets of float parts and returns a :class:`Trial`
    per set; ``start`` are the parts already float; ``candidates`` are the units tried as one step, a part or a
    tuple of parts (a region in every graph); ``canonical`` names a set the same whatever the order its parts
    were added in. A set is measured once: asked again, its first trial answers."""
    trials: list[Trial] = []
    seen: dict[tuple[str, ...], Trial] = {}

    def once(sets: list[tuple[str, ...]], phase: str) -> dict[tuple[str, ...], Trial]:
        new = [x for x in dict.fromkeys(sets) if x not in seen]
        if new:
            got = measure(new, phase)
            for x in new:
                seen[x] = got[x]
                trials.append(got[x])
        return {x: seen[x] for x in sets}

    base = once([canonical(start)], "base")[canonical(start)]
    if base.passes:
        return trials, base
    units = list(without(candidates, start))
    if not units:
        return trials, None
    singles = {u: canonical((*start, *u)) for u in units}
    measured = once(list(singles.values()), "alone")
    passing = [u for u in units if measured[singles[u]].passes]
    if passing:
        best = min(passing, key=lambda u: (_size(measured[singles[u]]), [-k for k in measured[singles[u]].rank_key()]))
        return trials, _refine(once, measured[singles[best]], [best], canonical)
    order = sorted(units, key=lambda u: measured[singles[u]].rank_key(), reverse=True)
    chosen = [order[0]]
    for u in order[1:]:
        chosen.append(u)
        parts = canonical((*start, *(p for c in chosen for p in c)))
        trial = once([parts], "cumulative")[parts]
        if trial.passes:
            return trials, _refine(once, trial, chosen, canonical)
    return trials, None


def without(units: Iterable[str | tuple[str, ...]], parts: Iterable[str]) -> tuple[tuple[str, ...], ...]:
    """``units`` (a part, or a tuple of parts) with ``parts`` taken out of each; a unit left empty is dropped,
    a repeated one kept once."""
    parts = set(parts)
    return tuple(dict.fromkeys(u for unit in units
                               if (u := tuple(p for p in ((unit,) if isinstance(unit, str) else unit)
                                              if p not in parts))))


def _refine(once, found: Trial, chosen: list[tuple[str, ...]], canonical) -> Trial:
    """Coarse to fine: each part of a several-part unit in the found set is dropped in turn, and stays dropped
    while the set still meets the bar (phase ``refine``); returns the last set that meets it."""
    for p in [p for u in chosen if len(u) > 1 for p in u]:
        parts = canonical(tuple(q for q in found.parts if q != p))
        trial = once([parts], "refine")[parts]
        if trial.passes:
            found = trial
    return found


def mcnemar_exact(gained: int, lost: int) -> float:
    """Two-sided exact McNemar p-value: the chance of a split at least this uneven between the sentences only
    one of two systems gets right (``gained``: only the new one, ``lost``: only the old one), if neither is
    better (a fair coin on each discordant sentence)."""
    n = gained + lost
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, k) for k in range(min(gained, lost) + 1))
    return min(1.0, 2 * tail / 2 ** n)


def identity_vs_base(run_dir: Path, reference: str, base: str, backend: str) -> dict[str, Any] | None:
    """Is ``backend``'s share of outputs identical to ``reference`` different from ``base``'s beyond chance?
    Paired, sentence by sentence, from the tokens the quality suite stored in the run directory: how many
    sentences only the variant reproduces (gained), only the base does (lost), and McNemar's exact p-value.
    None when a token file is missing or the two ran on different sentences."""
    from orchestrator.run_store import RunStore, read_json
    from orchestrator.suites.quality import TOKENS

    store = RunStore(run_dir)
    ref, old, new = (read_json(store.backend_dir(n) / TOKENS) for n in (reference, base, backend))
    if not (isinstance(ref, list) and isinstance(old, list) and isinstance(new, list)) or len(old) != len(new):
        return None
    n = min(len(ref), len(new))
    gained = sum(new[i] == ref[i] and old[i] != ref[i] for i in range(n))
    lost = sum(old[i] == ref[i] and new[i] != ref[i] for i in range(n))
    return {"test": "mcnemar-exact", "baseline": base, "sentences": n, "gained": gained, "lost": lost,
            "p_value": float(f"{mcnemar_exact(gained, lost):.3g}")}


def _size(t: Trial) -> float:
    b = t.metrics.get("bytes")
    return float(b) if isinstance(b, (int, float)) else float("inf")


# ---- measuring with the compare engine ------------------------------------------------------------
@dataclass
class RescuePlan:
    """Everything the engine-backed search needs, resolved and checked before anything runs."""
    base: str
    fallback: FloatFallback  # what the base can leave in float, and what it already does
    candidates: tuple[tuple[str, ...], ...]  # the units searched (FloatFallback.units), less the parts already float
    base_options: dict[str, Any]
    bar: dict[str, Any]
    reference: str
    suites: tuple[str, ...]
    matrix: Any  # orchestrator.matrix.Matrix
    args: dict[str, Any]
    out: Path
    variants: dict[str, dict[str, Any]] = field(default_factory=dict)  # the variants made so far

    def _canonical(self, parts) -> tuple[str, ...] | None:
        """A variant's float parts named as the search names them (aliases expanded), None if not valid."""
        try:
            return self.fallback.canonical(parts)
        except (InvalidInputError, TypeError):
            return None

    def name_for(self, parts: tuple[str, ...]) -> str:
        """The backend that leaves ``parts`` float: the base itself, a matrix variant with exactly those
        options, or a new variant ``<base>-float-<part>-<part>...``."""
        if parts == self.fallback.current:
            return self.base
        option = self.fallback.option
        for name, v in {**self.matrix.variants, **self.variants}.items():
            options = {**self.base_options, **v["options"]}
            if (v["base"] == self.base and self._canonical(options.pop(option, None) or ()) == parts
                    and options == {k: x for k, x in self.base_options.items() if k != option}):
                return name
        named = self.fallback.named(parts)  # the pair encoder.X + decoder.X is X
        name = f"{self.base}-float-{'-'.join(named)}"
        while name in self.matrix.variants:  # taken by a variant with other options
            name += "-rescue"
        self.variants[name] = {"base": self.base, "options": {option: list(named)},
                               "description": f"{self.base} with {', '.join(named)} left in float "
                                              f"(rescue search)"}
        return name


def plan_rescue(args: dict[str, Any], base: str, parts: list[str] | None, bar_file: str | None,
                bar_set: list[tuple[str, Any]] | None, suites: list[str] | None) -> RescuePlan:
    """Check the request (the backend can leave parts float, the parts exist, the bar is valid, the reference
    is not the base) and resolve the run directory; nothing is built."""
    from backends import registry
    from orchestrator.attribution import requested_bar
    from orchestrator.matrix import load_matrix, register_variants
    from orchestrator.run_store import digest

    matrix = load_matrix(args.get("matrix"))
    register_variants(matrix)
    entry = registry.get_entry(base)
    fallback = registry.get_backend(base).float_fallback()
    try:
        units = fallback.units(parts)
    except InvalidInputError as exc:
        raise InvalidInputError(f"--parts: {exc}") from exc
    candidates = without(units, fallback.current)
    if not candidates:
        raise InvalidInputError(f"{base} already leaves {', '.join(fallback.current)} in float: no part left to "
                                f"search; choose from {', '.join(fallback.parts)}")
    bar = requested_bar(dict(matrix.bar), "the matrix's [bar]", bar_file, bar_set)
    reference = args.get("reference") or matrix.reference
    if reference == base:
        raise SettingsError(f"--backend {base} is the reference backend; rescue an INT8 backend against it")
    suites = tuple(dict.fromkeys(suites or DEFAULT_SUITES))
    if "quality" not in suites:
        raise SettingsError("rescue needs the quality suite (agreement and BLEU decide the bar); add it to --suites")
    if args.get("out"):
        out = Path(args["out"])
    else:  # one directory per search: the request's data, settings, bar and parts
        key = {"matrix": str(matrix.path), "bar": bar, "parts": candidates, "suites": suites,
               "args": {k: v for k, v in sorted(args.items()) if k not in RUN_ONLY_ARGS}}
        model = Path(args["model"]).name if args.get("model") else "default"
        out = Path("runs") / f"{model}-rescue-{base}-{digest(key, 8)}"
        if not args.get("cache_dir") and not os.environ.get("SEQQUANT_CACHE_DIR"):
            args = {**args, "cache_dir": str(out.parent / ".artifacts")}  # compare's default cache: reuse its builds
    return RescuePlan(base=base, fallback=fallback, candidates=candidates, base_options=dict(entry.options),
                      bar=bar, reference=reference, suites=suites, matrix=matrix, args=dict(args), out=out)


def _run(plan: RescuePlan, backends: list[str], ui, force: frozenset[str] = frozenset()) -> dict[str, Any]:
    """One compare run of ``backends`` (and the reference) with the plan's variants, in the plan's run
    directory, recomputing the results (and rebuilding the artifacts) of the backends in ``force``; returns
    its report."""
    from orchestrator.config import resolve_config
    from orchestrator.engine import EXIT_INTERRUPTED, run_compare

    matrix = dataclasses.replace(plan.matrix, variants={**plan.matrix.variants, **plan.variants}, bar=plan.bar,
                                 backends=None)
    names = list(dict.fromkeys([plan.reference, *backends]))
    args = {**plan.args, "backends": ",".join(names), "suites": ",".join(plan.suites), "out": str(plan.out),
            "force": force}
    report, code, _ = run_compare(resolve_config(args, matrix=matrix), ui)
    if code == EXIT_INTERRUPTED:
        raise KeyboardInterrupt("rescue interrupted")
    return report


def trial_from_report(report: dict[str, Any], name: str, parts: tuple[str, ...], phase: str,
                      bar: dict[str, Any]) -> Trial:
    """A trial's status, metrics and bar check from a compare report (the verdict rules' own bar check)."""
    from orchestrator.attribution import bar_check, effective_bar

    rec = (report.get("backends") or {}).get(name)
    if rec is None:
        return Trial(parts, name, phase, status="missing", misses=["not in the run's report"])
    m = rec.get("metrics") or {}
    metrics = {k: m[k] for k in TRIAL_METRICS if m.get(k) is not None}
    if "bytes" not in metrics and isinstance((rec.get("artifacts") or {}).get("bytes"), (int, float)):
        metrics["bytes"] = rec["artifacts"]["bytes"]  # on disk, whether or not the speed suite ran
    if rec.get("status") != "ok":
        return Trial(parts, name, phase, status=str(rec.get("status")), metrics=metrics,
                     misses=[f"{rec.get('status')}: {rec.get('reason') or 'see its log'}"])
    ok, evidence = bar_check(report, name, effective_bar(bar))
    misses = [_miss(e) for e in evidence if e.get("passes") is False]
    if not ok and not misses:  # not judged: e.g. no BLEU against the reference
        misses = [_miss(e) for e in evidence if e.get("note")] or ["does not meet the bar"]
    return Trial(parts, name, phase, passes=ok, metrics=metrics, misses=misses)


#: how a missed bar check reads: metric -> (label, value format)
MISS_LABELS = {"exact_match_vs_reference": ("identical", ".1%"), "bleu_drop_vs_reference": ("BLEU drop", ".2f"),
               "cross_source_cosine": ("cross-source cosine", ".4f"),
               "first_step_cosine_to_reference": ("first-step cosine", ".4f")}


def _miss(e: dict[str, Any]) -> str:
    label, spec = MISS_LABELS.get(e["metric"], (e["metric"], ""))
    value, threshold = e.get("value"), e.get("threshold")
    num = lambda x: format(x, spec) if isinstance(x, (int, float)) and not isinstance(x, bool) else str(x)  # noqa: E731
    text = f"{label} {num(value)}" + (f" (bar {num(threshold)})" if threshold is not None else "")
    return text + (f": {e['note']}" if e.get("note") else "")


def run_rescue(plan: RescuePlan, ui=None, force: bool = False) -> dict[str, Any]:
    """The search on the engine; writes rescue.json (and rescue.toml when a set meets the bar) and a final
    report of every tried variant into the run directory; returns rescue.json's content."""
    from orchestrator.run_store import atomic_write_json, atomic_write_text

    started = time.time()
    forced: set[str] = set()  # with force: each backend recomputed once, the reference in the first run

    def measure(sets: list[tuple[str, ...]], phase: str) -> dict[tuple[str, ...], Trial]:
        names = {s: plan.name_for(s) for s in sets}
        if ui is not None:
            ui.info(f"rescue, {phase}: " + "; ".join(f"{n} ({', '.join(s) or 'as is'})" for s, n in names.items()))
        todo = frozenset({plan.reference, *names.values()} - forced) if force else frozenset()
        forced.update(todo)
        report = _run(plan, list(names.values()), ui, force=todo)
        return {s: trial_from_report(report, n, s, phase, plan.bar) for s, n in names.items()}

    fb = plan.fallback
    trials, found = search(measure, fb.current, plan.candidates, fb.canonical)
    _run(plan, [t.backend for t in trials], ui)  # every result reused: one report of every trial
    for t in trials[1:]:
        if t.status == "ok" and trials[0].status == "ok":
            t.vs_base = identity_vs_base(plan.out, plan.reference, trials[0].backend, t.backend)
    result = {
        "base": plan.base, "option": fb.option, "parts": fb.parts, "aliases": fb.aliases, "start": list(fb.current),
        "candidates": [list(u) for u in plan.candidates], "bar": plan.bar, "suites": list(plan.suites),
        "reference": plan.reference, "command": plan.args.get("command", ""),
        "strategy": "greedy: base; each unit alone (ranked by identical share, then BLEU); then the best units "
                    "added one at a time until a set meets the bar; then, coarse to fine, each part of a "
                    "several-part unit in that set dropped while the set still meets the bar",
        "significance": "vs base: sentences whose output only the variant (+) or only the base (-) reproduces, "
                        "McNemar's exact test",
        "trials": [t.to_dict() for t in trials],
        "found": found.to_dict() if found else None,
        "best": max(trials, key=Trial.rank_key).to_dict(),
        # the found variant's matrix table (none when nothing, or the backend as it is, meets the bar)
        "matrix_table": RESCUE_TOML if found is not None and found.backend != plan.base else None,
        "wall_seconds": round(time.time() - started, 1),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    atomic_write_json(plan.out / RESCUE_JSON, result)
    atomic_write_text(plan.out / RESCUE_MD, rescue_markdown(result))
    toml_path = plan.out / RESCUE_TOML
    if result["matrix_table"]:
        atomic_write_text(toml_path, variant_toml(found.backend, plan.base, fb.option, fb.named(found.parts),
                                                  plan.bar, result["command"]))
    elif toml_path.exists():
        toml_path.unlink()  # a stale answer from an earlier search of this directory
    return result


def variant_toml(name: str, base: str, option: str, parts: tuple[str, ...], bar: dict[str, Any],
                 command: str) -> str:
    """The found variant as a matrix ``[variants]`` table (and the bar it met), ready to paste into a matrix."""
    listed = ", ".join(parts)
    lines = [f"# The variant `{command or 'python cli.py rescue'}` found: {base} with {listed} left in float "
             f"meets this [bar].",
             "# Paste into a matrix and list it in [run] backends to keep it in a regression run.",
             "",
             f"[variants.{json.dumps(name)}]",
             f"base = {json.dumps(base)}",
             f"options = {{ {option} = [{', '.join(json.dumps(p) for p in parts)}] }}",
             f"description = {json.dumps(f'{base}, {listed} left in float (rescue search)')}",
             "",
             "[bar]"]
    lines += [f"{k} = {json.dumps(v)}" for k, v in sorted(bar.items())]
    return "\n".join(lines) + "\n"


# ---- presenting a search ---------------------------------------------------------------------------
TABLE_HEADER = ["step", "float parts", "backend", "status", "identical", "vs base", "BLEU", "size MB", "p50 ms",
                "bar", "misses"]


def trial_rows(result: dict[str, Any]) -> list[list[str]]:
    """rescue.json's trials as table rows (:data:`TABLE_HEADER`), in the order they were measured."""
    from orchestrator.report_tables import fmt, share

    rows = []
    for t in result["trials"]:
        m = t["metrics"]
        size = m["bytes"] / 1e6 if isinstance(m.get("bytes"), (int, float)) else None
        rows.append([t["phase"], named_parts(result, t["parts"]) or "(none)", t["backend"], t["status"],
                     share(m.get("exact_match_vs_reference")), _vs_base(t.get("vs_base")), fmt(m.get("bleu")),
                     fmt(size, 1),
                     fmt(m.get("latency_p50_ms"), 1), "meets" if t["passes"] else "misses", "; ".join(t["misses"])])
    return rows


def named_parts(result: dict[str, Any], parts: Iterable[str]) -> str:
    """A trial's parts as the table names them: a region float in every graph by its name alone."""
    fb = FloatFallback(result["option"], result["parts"], aliases=result.get("aliases") or {})
    return ", ".join(fb.named(parts))


def _vs_base(v: dict[str, Any] | None) -> str:
    """``+31 -12 (p 0.005)``: sentences gained and lost against the base, and the paired test's p-value."""
    return "" if not v else f"+{v['gained']} -{v['lost']} (p {v['p_value']:.2g})"


def summary_line(result: dict[str, Any]) -> str:
    found, best = result["found"], result["best"]
    if found is None:
        return (f"no set of float parts brings {result['base']} up to the bar; the closest: {best['backend']} "
                f"({named_parts(result, best['parts']) or 'no part float'}{_gain(best)}), which misses: "
                f"{'; '.join(best['misses'])}")
    if not result["matrix_table"]:  # found, and it is the backend as it is
        return f"{result['base']} meets the bar as it is: nothing needs to stay float"
    return (f"{found['backend']} meets the bar with {named_parts(result, found['parts'])} left in float{_gain(found)} "
            f"({len(result['trials'])} variants measured); its matrix table is in {result['matrix_table']}")


def _gain(t: dict[str, Any]) -> str:
    v = t.get("vs_base")
    return "" if not v else f"; vs the base +{v['gained']} -{v['lost']} sentences, p {v['p_value']:.2g}"


def rescue_markdown(result: dict[str, Any]) -> str:
    from orchestrator.report_tables import markdown

    bar = ", ".join(f"{k} = {v}" for k, v in sorted(result["bar"].items())) or "the defaults"
    lines = [f"# Selective-float rescue of {result['base']}", ""]
    if result.get("command"):
        lines += [f"`{result['command']}`", ""]
    lines += [f"Bar: {bar}. Reference: {result.get('reference')}. Suites: {', '.join(result['suites'])}. "
              f"Parts searched ({result['option']}): "
              f"{'; '.join(named_parts(result, u) for u in result['candidates'])}.", "",
              f"Strategy: {result['strategy']}.", "",
              f"Significance: {result.get('significance') or 'not computed'}; with p >= 0.05 a variant's difference "
              f"from the base is within what chance gives on these sentences.", ""]
    lines += markdown(("Variants measured", TABLE_HEADER, trial_rows(result)))
    lines += [f"**{summary_line(result)}**", "",
              f"{len(result['trials'])} variants, {result['wall_seconds']} s. Each variant's full results: "
              f"report.md in this directory."]
    return "\n".join(lines) + "\n"
