"""Verdicts: *why* a backend fails, from rules over the measured rows of a report.

``attribute(report, bar) -> dict`` sets ``report["backends"][name]["verdict"] =
{kind, summary, evidence: [...]}`` for every backend with ``status == "ok"`` and returns the
per-model summary (stored by the engine as ``report["verdict"]``). Every evidence item is a
measured row: ``{"backend", "metric", "value", "threshold"?, "reference"?, "passes"?, "note"?}``.

Kinds (first matching rule wins, in this order):

* ``pass`` — the backend meets the bar (BLEU drop vs the reference backend <= ``max_bleu_drop``,
  not source-blind when ``fail_source_blind``; an FP32 backend must also agree with the
  reference on >= ``min_fp32_agreement`` of the outputs);
* ``export-convention`` — an FP32 backend that disagrees with the original model, or a quantized
  backend whose runtime's FP32 variant does (its INT8 numbers say nothing about quantization);
* ``boundary`` — the split-generation boundary matrix: the raw INT8 boundary row fails the bar
  (vs the backend's own FP32 row) while the requantized row passes;
* ``mask`` — the backend masks attention with an unbounded additive mask (``quantization.mask ==
  "hf"``, Hugging Face's -1e9) and a same-runtime INT8 variant with a bounded or select mask
  passes: the mask's huge values own the attention-score quantization range;
* ``kernel`` — a same-runtime INT8 variant that differs only in the int8 kernel library
  (``quantization.gemm_library``, e.g. CTranslate2 on oneDNN vs MKL) passes: the same quantization
  scheme, computed by another GEMM, keeps the quality;
* ``calibration`` — a quantized variant of the *same runtime* that differs in its calibration
  settings passes (e.g. ``tflite-int8-naive`` fails, decoder-calibrated ``tflite-int8`` passes); a
  variant whose activation ranges are computed per call is another scheme, not another calibration;
* ``precision`` — no same-precision variant passes, but a same-runtime variant with wider integer
  activations does (e.g. ``tflite-int8`` fails an agreement bar that ``tflite-int16x8`` meets) and the
  failing decoder is not source-blind (a source-blind one is a calibration failure whatever the width);
* ``activation-ranges`` — a backend with static (calibrated) INT8 activation ranges misses only the
  ``min_int8_agreement`` bar (BLEU kept, not source-blind), every INT8 backend that passes computes
  its activation ranges per call (ORT dynamic, CTranslate2), and another runtime's INT8 with static
  ranges misses the same way (e.g. an 80% agreement bar on the default model: tflite-int8 and
  onnx-static-int8 miss it, onnx-dynamic-int8 and ct2-int8-mkl meet it): the static per-tensor scheme
  loses the accuracy in more than one runtime, so it is not the runtime's fault. Also when, instead of
  that peer, a same-runtime variant with per-call ranges passes (ORT static vs ORT dynamic);
* ``tflite-specific`` — a TFLite INT8 backend fails while a peer INT8 runtime (CTranslate2,
  ONNX Runtime) passes; ``runtime-specific`` is the same rule for a non-TFLite runtime;
* ``calibration`` (again) — a same-runtime INT8 variant with other quantization settings passes
  (the settings that differ are named in the summary);
* ``model-inherent`` — every INT8 backend fails the bar (and an FP32 split backend passes).

The same-runtime peers of the ``mask``, ``kernel`` and ``calibration`` rules are the variants that pass
and, for a backend that fails more than the agreement bar (BLEU, source-blind), also those that miss
only ``min_int8_agreement``: at an 80% bar no TFLite INT8 passes, yet ``tflite-int8`` (71% identical,
BLEU kept) still shows that ``tflite-int8-naive``'s collapse is its calibration. Settings compared are
the quantization keys that differ, less a requested one whose effective value is the same
(:data:`RESOLVED_BY`: CTranslate2's compute_type int8_float32 runs as int8 on CPU).

A failing verdict also cites the numerics suite when it ran on that backend: the ops whose local
error marks a kernel or quantization-parameter defect, or else that every checked op sits at the
rounding floor (the loss is the bit width, not a broken op), and the most saturated tensor.

The bar (``[bar]`` in the matrix; defaults)::

    max_bleu_drop = 1.0          # BLEU points below the reference backend
    min_fp32_agreement = 0.95    # exact match vs reference required of an FP32 variant
    fail_source_blind = true     # a source-blind backend (source-sensitivity suite) fails the bar
    min_first_step_cosine = 0.0  # optional: first-step cosine to the reference (0 = off)
    min_int8_agreement = 0.0     # optional: exact match vs reference required of an INT8 variant
                                 # (0 = off; e.g. 0.8 for "80% of greedy outputs identical to FP32")

A backend counts as INT8 when its signature's precision or quantization settings name an 8-bit
integer scheme (int8, int8-dynamic, int16x8 = int8 weights, tflite dynamic-range); as FP32 when
its precision is fp32 and it has no quantization settings.
"""
from __future__ import annotations

import re
from typing import Any

from backends.errors import InvalidInputError
from orchestrator.report_tables import nats, op_label, share

#: below this share of clipped values (the numerics suite's most saturated op) the ranges fit the data
SATURATION_FITS = 0.05
#: at or above this flip rate at steps the reference was sure of, a backend does more than round
DECISIVE_FLIPS_BROKEN = 0.05
BAR_DEFAULTS: dict[str, Any] = {"max_bleu_drop": 1.0, "min_fp32_agreement": 0.95, "fail_source_blind": True,
                                "min_first_step_cosine": 0.0, "min_int8_agreement": 0.0}
KINDS = ("pass", "calibration", "mask", "kernel", "precision", "boundary", "activation-ranges", "tflite-specific",
         "runtime-specific", "model-inherent",
         "export-convention")
CALIBRATION_KEYS = ("recipe", "calib", "method", "sources", "positions")
UNBOUNDED_MASKS = ("hf",)
#: quantization settings that choose how int8 is computed, not what is quantized (the "kernel" rule)
KERNEL_KEYS = ("gemm_library",)
# requested settings that say nothing once the effective one they resolve to is the same (CTranslate2 on
# CPU runs compute_type int8 as int8_float32)
RESOLVED_BY = {"compute_type": "effective_compute_type", "weights_stored_as": "effective_compute_type"}
RAW_MODE, REQUANT_MODE, FP32_MODE = "int8enc-raw-int8dec", "int8enc-requant-int8dec", "fp32enc-fp32dec"


# ---------------------------------------------------------------------------------------
# Row helpers (also used by selection / report_html / benchmark)
# ---------------------------------------------------------------------------------------
def effective_bar(bar: dict[str, Any] | None) -> dict[str, Any]:
    bar = dict(bar or {})
    unknown = sorted(set(bar) - set(BAR_DEFAULTS))
    if unknown:
        raise InvalidInputError(f"[bar]: unknown key(s) {unknown}; accepted: {sorted(BAR_DEFAULTS)}")
    out = dict(BAR_DEFAULTS)
    for k, v in bar.items():
        if isinstance(BAR_DEFAULTS[k], bool):
            if not isinstance(v, bool):
                raise InvalidInputError(f"[bar] {k} must be true or false, got {v!r}")
        elif isinstance(v, bool) or not isinstance(v, (int, float)):
            raise InvalidInputError(f"[bar] {k} must be a number, got {v!r}")
        out[k] = v
    return out


def requested_bar(bar: dict[str, Any], where: str, bar_file: str | None = None,
                  bar_set: list[tuple[str, Any]] | None = None) -> dict[str, Any]:
    """The bar a command was asked for: ``bar`` (read from ``where``), or ``bar_file``'s ``[bar]`` in its
    place (``--bar``), with the ``bar_set`` pairs over it (``--set KEY=VALUE``); checked, a SettingsError
    naming where a bad key came from."""
    from backends.errors import SeqquantError
    from orchestrator.errors import SettingsError
    from orchestrator.matrix import load_table

    if bar_file:
        bar, where = load_table(bar_file, "bar"), bar_file
    bar = {**bar, **dict(bar_set or [])}
    try:
        effective_bar(bar)
    except SeqquantError as exc:
        raise SettingsError(f"bar from {where}{' and --set' if bar_set else ''}: {exc}") from exc
    return bar


def run_bar(report: dict[str, Any]) -> dict[str, Any]:
    """The bar a stored run was last judged by (its verdict's), else its matrix's ``[bar]``."""
    verdict = report.get("verdict") if isinstance(report.get("verdict"), dict) else {}
    return dict(verdict.get("bar") or ((report.get("settings") or {}).get("matrix") or {}).get("bar") or {})


def signature(report: dict[str, Any], name: str) -> dict[str, Any]:
    return (report["backends"].get(name) or {}).get("signature") or {}


def metrics(report: dict[str, Any], name: str) -> dict[str, Any]:
    return (report["backends"].get(name) or {}).get("metrics") or {}


def suite(report: dict[str, Any], name: str, suite_name: str) -> dict[str, Any]:
    return ((report["backends"].get(name) or {}).get("suites") or {}).get(suite_name) or {}


def noise_scale_needed(report: dict[str, Any], target: float) -> float | None:
    """The largest noise scale at which the reference's margins predict ``target`` identical outputs
    (split-generation's noise budget; None unless ``target`` is one of its ``identity_targets``)."""
    ref = report.get("reference_backend")
    if ref not in (report.get("backends") or {}):
        return None
    budget = (suite(report, ref, "split-generation").get("margins") or {}).get("noise_scale_for_identity") or {}
    return budget.get(f"{float(target):g}")


def runtime_of(report: dict[str, Any], name: str) -> str:
    return str(signature(report, name).get("runtime") or "unknown")


def precision_class(sig: dict[str, Any]) -> str:
    """"int8" (8-bit integer weights or activations), "fp32", or "other" (fp16, int16, ...)."""
    q = sig.get("quantization") or {}
    prec = str(sig.get("precision") or "").lower()
    modes = [str(q.get(k) or "").lower() for k in ("mode", "compute_type")]
    labels = [prec] + modes
    if any("int8" in s or s in ("int16x8", "dynamic") for s in labels):
        return "int8"
    if prec in ("fp32", "float32", "") and all(m in ("", "none", "fp32", "float32") for m in modes):
        return "fp32"
    return "other"


def is_int8(report: dict[str, Any], name: str) -> bool:
    return precision_class(signature(report, name)) == "int8"


def is_fp32(report: dict[str, Any], name: str) -> bool:
    return precision_class(signature(report, name)) == "fp32"


def ok_backends(report: dict[str, Any]) -> list[str]:
    return [n for n, b in report["backends"].items() if b.get("status") == "ok"]


def size_bytes(report: dict[str, Any], name: str) -> int | float | None:
    """Bytes on disk: the speed suite's ``bytes`` metric, else the artifacts' bytes (or the checkpoint
    weights for a backend whose artifact only points at the checkpoint, e.g. torch)."""
    b = report["backends"].get(name) or {}
    m = b.get("metrics") or {}
    if isinstance(m.get("bytes"), (int, float)) and not isinstance(m.get("bytes"), bool):
        return m["bytes"]
    art = b.get("artifacts") or {}
    sizes = [v for v in (art.get("bytes"), art.get("weights_bytes"))
             if isinstance(v, (int, float)) and not isinstance(v, bool)]
    return max(sizes) if sizes else None


def bleu_drop(report: dict[str, Any], name: str) -> float | None:
    m = metrics(report, name)
    if isinstance(m.get("bleu_delta_vs_reference"), (int, float)):
        return round(-float(m["bleu_delta_vs_reference"]), 2)
    ref = report.get("reference_backend")
    rb = metrics(report, ref).get("bleu") if ref in report["backends"] else None
    if isinstance(m.get("bleu"), (int, float)) and isinstance(rb, (int, float)):
        return round(float(rb) - float(m["bleu"]), 2)
    return None


def is_source_blind(report: dict[str, Any], name: str) -> bool:
    return bool(metrics(report, name).get("source_blind") or suite(report, name, "source-sensitivity").get(
        "source_blind"))


def _ev(backend: str, metric: str, value: Any, **kw: Any) -> dict[str, Any]:
    return {"backend": backend, "metric": metric, "value": value, **{k: v for k, v in kw.items() if v is not None}}


def bar_check(report: dict[str, Any], name: str, bar: dict[str, Any]) -> tuple[bool, list[dict[str, Any]]]:
    """(meets the quality bar, evidence rows)."""
    m = metrics(report, name)
    ref = report.get("reference_backend")
    ev = []
    ok = True
    drop = bleu_drop(report, name)
    if drop is None:
        ok = False
        ev.append(_ev(name, "bleu", m.get("bleu"), note="no BLEU vs the reference backend: cannot check the bar"))
    else:
        p = drop <= float(bar["max_bleu_drop"])
        ok &= p
        ev.append(_ev(name, "bleu_drop_vs_reference", drop, threshold=bar["max_bleu_drop"], passes=p,
                      reference=ref, bleu=m.get("bleu"), reference_bleu=metrics(report, ref).get("bleu")))
    if bar["fail_source_blind"] and is_source_blind(report, name):
        ok = False
        ss = suite(report, name, "source-sensitivity")
        ev.append(_ev(name, "cross_source_cosine", ss.get("cross_cosine_mean", m.get("cross_source_cosine")),
                      passes=False, reference_value=(ss.get("source_blind_rule") or {}).get(
                          "reference_cross_cosine_mean"), note="source-blind: first-step logits barely depend on "
                                                              "the source"))
    if float(bar["min_first_step_cosine"]) > 0 and isinstance(m.get("first_step_cosine_to_reference"), (int, float)):
        p = m["first_step_cosine_to_reference"] >= float(bar["min_first_step_cosine"])
        ok &= p
        ev.append(_ev(name, "first_step_cosine_to_reference", m["first_step_cosine_to_reference"],
                      threshold=bar["min_first_step_cosine"], passes=p))
    if float(bar["min_int8_agreement"]) > 0 and is_int8(report, name):
        em = m.get("exact_match_vs_reference")
        if isinstance(em, (int, float)) and not isinstance(em, bool):
            target = float(bar["min_int8_agreement"])
            p = em >= target
            ok &= p
            scale = (suite(report, name, "split-generation").get("margins") or {}).get("noise_scale")
            need = noise_scale_needed(report, target)
            note = (f"its noise scale is {scale:.3f} nats; {target:.0%} identical needs {need:.3f} or less "
                    f"(split-generation's noise budget)" if not p and isinstance(scale, (int, float))
                    and isinstance(need, (int, float)) else None)
            ev.append(_ev(name, "exact_match_vs_reference", em, threshold=bar["min_int8_agreement"], passes=p,
                          reference=ref, noise_scale=scale, noise_scale_needed=need, note=note))
        else:
            ok = False
            ev.append(_ev(name, "exact_match_vs_reference", None, threshold=bar["min_int8_agreement"],
                          passes=False, note="not measured (quality suite): cannot check min_int8_agreement"))
    return bool(ok), ev


def fp32_agreement_check(report: dict[str, Any], name: str, bar: dict[str, Any]) -> tuple[bool, list]:
    """Does an FP32 backend agree with the original model (the reference)?"""
    m = metrics(report, name)
    if name == report.get("reference_backend"):
        return True, [_ev(name, "reference_backend", True, note="the reference itself")]
    em = m.get("exact_match_vs_reference")
    if not isinstance(em, (int, float)):
        return True, [_ev(name, "exact_match_vs_reference", None, note="not measured")]
    ok = em >= float(bar["min_fp32_agreement"])
    ev = [_ev(name, "exact_match_vs_reference", em, threshold=bar["min_fp32_agreement"], passes=ok)]
    for key in ("tf_max_abs_logit_diff", "tf_argmax_agreement", "first_step_cosine_to_reference"):
        if m.get(key) is not None:
            ev.append(_ev(name, key, m[key]))
    return bool(ok), ev


def _boundary_rule(report: dict[str, Any], name: str, bar: dict[str, Any]) -> list[dict[str, Any]] | None:
    if _quant(report, name).get("boundary") == "requant":
        return None  # it already requantizes: the boundary is not why it fails
    b = suite(report, name, "split-generation").get("boundary") or {}
    rows = b.get("rows") or {}
    if FP32_MODE not in rows or RAW_MODE not in rows or REQUANT_MODE not in rows:
        return None
    base = rows[FP32_MODE]["bleu"]
    lim = float(bar["max_bleu_drop"])
    raw_drop = round(base - rows[RAW_MODE]["bleu"], 2)
    req_drop = round(base - rows[REQUANT_MODE]["bleu"], 2)
    if raw_drop > lim and req_drop <= lim:
        return [_ev(name, f"boundary[{RAW_MODE}].bleu_drop_vs_fp32_row", raw_drop, threshold=lim, passes=False,
                    n=b.get("n")),
                _ev(name, f"boundary[{REQUANT_MODE}].bleu_drop_vs_fp32_row", req_drop, threshold=lim, passes=True,
                    n=b.get("n"))]
    return None


def _decoder_rows(report: dict[str, Any], name: str, bar: dict[str, Any]):
    """From the boundary matrix: which side breaks (INT8 encoder + FP32 decoder vs FP32 encoder + INT8
    decoder). Returns (sentence, evidence) or None."""
    rows = (suite(report, name, "split-generation").get("boundary") or {}).get("rows") or {}
    enc, dec = rows.get("int8enc-dequant-fp32dec"), rows.get("fp32enc-quant-int8dec")
    if FP32_MODE not in rows or not enc or not dec:
        return None
    base, lim = rows[FP32_MODE]["bleu"], float(bar["max_bleu_drop"])
    enc_drop, dec_drop = round(base - enc["bleu"], 2), round(base - dec["bleu"], 2)
    ev = [_ev(name, "boundary[int8enc-dequant-fp32dec].bleu_drop_vs_fp32_row", enc_drop, threshold=lim,
              passes=enc_drop <= lim),
          _ev(name, "boundary[fp32enc-quant-int8dec].bleu_drop_vs_fp32_row", dec_drop, threshold=lim,
              passes=dec_drop <= lim)]
    if dec_drop > lim >= enc_drop:
        return "the INT8 decoder breaks (INT8 encoder + FP32 decoder is fine)", ev
    if enc_drop > lim >= dec_drop:
        return "the INT8 encoder breaks (FP32 encoder + INT8 decoder is fine)", ev
    return None


def _quant(report: dict[str, Any], name: str) -> dict[str, Any]:
    return signature(report, name).get("quantization") or {}


def _differing_quant_keys(report: dict[str, Any], a: str, b: str) -> list[str]:
    """Quantization keys whose values differ, leaving out a requested setting whose effective value is
    the same on both (:data:`RESOLVED_BY`)."""
    qa, qb = _quant(report, a), _quant(report, b)
    same = {k for k, eff in RESOLVED_BY.items() if qa.get(eff) is not None and qa.get(eff) == qb.get(eff)}
    return sorted(k for k in set(qa) | set(qb) if qa.get(k) != qb.get(k) and k not in same)


def activation_bits(report: dict[str, Any], name: str) -> int:
    """The widest integer activation type in ``quantization.activations`` ("int8" -> 8, "int16" -> 16,
    "int8+int16" -> 16); 0 when not recorded."""
    bits = [int(b) for b in re.findall(r"int(\d+)", str(_quant(report, name).get("activations") or ""))]
    return max(bits, default=0)


def activation_ranges(report: dict[str, Any], name: str) -> str | None:
    """"dynamic" when the INT8 activation ranges are computed per call (ORT dynamic, TFLite
    dynamic-range, CTranslate2's per-row a8-dynamic), "static" when they are calibrated once (TFLite
    int8/int16x8, ORT static), None when the signature does not say."""
    q = _quant(report, name)
    mode, scheme = str(q.get("mode") or ""), str(q.get("scheme") or "")
    if mode == "dynamic" or "a8-dynamic" in scheme or str(signature(report, name).get("precision")).endswith("-dynamic"):
        return "dynamic"
    if mode in ("static", "int8", "int16x8"):
        return "static"
    return None


def misses_only_agreement(evidence: list[dict[str, Any]]) -> bool:
    """A bar check whose only failing row is ``min_int8_agreement`` (BLEU kept, not source-blind): a
    near miss, not a broken backend."""
    failing = [e for e in evidence if e.get("passes") is False]
    return bool(failing) and all(e.get("metric") == "exact_match_vs_reference" for e in failing)


# ---------------------------------------------------------------------------------------
# The rules
# ---------------------------------------------------------------------------------------
def attribute(report: dict[str, Any], bar: dict[str, Any] | None = None) -> dict[str, Any]:
    bar = effective_bar(bar)
    names = ok_backends(report)
    ref = report.get("reference_backend")
    if ref not in names or not isinstance(metrics(report, ref).get("bleu"), (int, float)):
        why = (f"the reference backend '{ref}' is not in this run or did not succeed" if ref not in names
               else f"the reference backend '{ref}' has no BLEU (the quality suite did not run)")
        return {"model": (report.get("model") or {}).get("path"), "headline": f"no verdicts: {why}",
                "bar": bar, "kinds": {}, "int8_passing": [], "int8_failing": [],
                "not_evaluated": {n: b.get("status") for n, b in report["backends"].items()}, "backends": {}}
    passes: dict[str, tuple[bool, list]] = {n: bar_check(report, n, bar) for n in names}
    fp32_ok: dict[str, tuple[bool, list]] = {n: fp32_agreement_check(report, n, bar)
                                            for n in names if is_fp32(report, n)}
    int8 = [n for n in names if is_int8(report, n)]
    int8_pass = [n for n in int8 if passes[n][0]]
    fp32_split_pass = [n for n in fp32_ok if n != ref and fp32_ok[n][0] and passes[n][0]]
    verdicts: dict[str, dict[str, Any]] = {}

    def runtime_fp32_broken(name: str) -> list[str]:
        rt = runtime_of(report, name)
        return [f for f, (ok, _) in fp32_ok.items() if not ok and runtime_of(report, f) == rt]

    for n in names:
        ok, ev = passes[n]
        rt = runtime_of(report, n)
        if n in fp32_ok:
            agree, aev = fp32_ok[n]
            if agree and ok:
                measured = n == ref or isinstance(metrics(report, n).get("exact_match_vs_reference"), (int, float))
                verdicts[n] = _v("pass", f"{n} (FP32) matches the reference and meets the bar" if measured else
                                 f"{n} (FP32) meets the bar; its agreement with the reference was not measured "
                                 f"(the quality suite's comparison did not run)", ev + aev)
            else:
                verdicts[n] = _v("export-convention",
                                 f"{n}: the FP32 variant of {rt} disagrees with the original model "
                                 f"(exact match {metrics(report, n).get('exact_match_vs_reference')}); a split-graph "
                                 f"or convention error (e.g. decoder start token) — its INT8 numbers say nothing "
                                 f"about quantization", aev + ev)
            continue
        if ok:
            verdicts[n] = _v("pass", f"{n} meets the bar", ev + _margins_ev(report, n))
            continue
        broken = runtime_fp32_broken(n)
        if broken:
            f = broken[0]
            verdicts[n] = _v("export-convention",
                             f"{n} fails, but {rt}'s FP32 variant {f} already disagrees with the original model: "
                             f"fix the export/conventions before judging quantization", ev + fp32_ok[f][1])
            continue
        bev = _boundary_rule(report, n, bar)
        if bev:
            verdicts[n] = _v("boundary", f"{n}: the raw INT8 encoder->decoder boundary fails while the requantized "
                                         f"boundary passes — requantize at the boundary", ev + bev)
            continue
        same_rt = [p for p in int8_pass if runtime_of(report, p) == rt]
        other_rt = [p for p in int8_pass if runtime_of(report, p) != rt]
        # peers that show what repairs a broken backend: same-runtime variants that pass, and, when this one
        # fails more than the agreement bar (BLEU, source-blind), those that miss only that bar
        near = [] if misses_only_agreement(ev) else [
            p for p in int8 if p != n and p not in int8_pass and runtime_of(report, p) == rt
            and misses_only_agreement(passes[p][1])]
        fixing = same_rt + near
        diffs = {p: _differing_quant_keys(report, n, p) for p in fixing}  # quantization keys that differ

        def fares(p: str) -> str:
            return "passes" if p in int8_pass else "misses only min_int8_agreement (BLEU and the source kept)"

        mask = _quant(report, n).get("mask")
        mask_peer = [p for p in fixing if mask in UNBOUNDED_MASKS
                     and _quant(report, p).get("mask") not in (None, *UNBOUNDED_MASKS)]
        if mask_peer:
            p = mask_peer[0]
            diff = diffs[p]
            others = [k for k in diff if k != "mask"]
            verdicts[n] = _v("mask",
                             f"{n} fails while {p} (same runtime, attention mask '{_quant(report, p)['mask']}' "
                             f"instead of the additive {mask!r} mask) {fares(p)}: the mask's huge negative values own "
                             f"the attention-score quantization range"
                             + (f" (other settings differ too: {', '.join(others)})" if others else ""),
                             ev + _peer_ev(report, p, passes, n, diff))
            continue
        kernel_peer = [p for p in fixing if diffs[p] and set(diffs[p]) <= set(KERNEL_KEYS)]
        if kernel_peer:
            p = kernel_peer[0]
            diff = diffs[p]
            qa, qb = _quant(report, n), _quant(report, p)
            what = ", ".join(f"{k} {qb.get(k)!r} instead of {qa.get(k)!r}" for k in diff)
            verdicts[n] = _v("kernel", f"{n} fails while {p} (same runtime and quantization scheme, {what}) {fares(p)}: "
                                       f"the int8 kernel, not the quantization, loses the accuracy",
                             ev + _peer_ev(report, p, passes, n, diff))
            continue
        # a peer whose activation ranges are computed per call is another scheme, not another calibration
        calib_peer = [p for p in fixing if any(c in k for k in diffs[p] for c in CALIBRATION_KEYS)
                      and activation_ranges(report, p) == activation_ranges(report, n)]
        wider = [p for p in same_rt if activation_bits(report, p) > activation_bits(report, n) > 0]
        if calib_peer and (not wider or is_source_blind(report, n)
                           or any("activations" not in diffs[p] for p in calib_peer)):
            # the closest peer: one with the same activation precision first, then the fewest differences
            p = min(calib_peer, key=lambda q: ("activations" in diffs[q], len(diffs[q])))
            diff = diffs[p]
            where = _decoder_rows(report, n, bar)
            note = ""
            if "activations" in diff:
                note = (f"; {p} also runs {_quant(report, p).get('activations')} activations (vs "
                        f"{_quant(report, n).get('activations')})"
                        + (f", but {n}'s decoder is source-blind: calibration, not bit width"
                           if is_source_blind(report, n) else ""))
            verdicts[n] = _v("calibration",
                             f"{n} fails while {p} (same runtime, different calibration: {', '.join(diff)}) {fares(p)}"
                             + (f"; {where[0]}" if where else "") + note,
                             ev + _peer_ev(report, p, passes, n, diff) + (where[1] if where else []))
            continue
        if wider:
            p = min(wider, key=lambda q: len(diffs[q]))
            qa, qb = _quant(report, n), _quant(report, p)
            verdicts[n] = _v("precision",
                             f"{n} fails while {p} (same runtime, {qb.get('activations')} activations instead of "
                             f"{qa.get('activations')}) passes: {qa.get('activations')} activations lose the accuracy"
                             + (f"; peer runtime(s) {', '.join(other_rt)} pass too" if other_rt else ""),
                             ev + _peer_ev(report, p, passes, n, diffs[p])
                             + [e for q in other_rt for e in passes[q][1][:1]])
            continue
        static_peers = [q for q in int8 if q not in int8_pass and runtime_of(report, q) != rt
                        and activation_ranges(report, q) == "static" and misses_only_agreement(passes[q][1])]
        # the INT8 backends that pass with 8-bit activations (a wider-activation pass is the precision rule's)
        pass8 = [p for p in int8_pass if activation_bits(report, p) <= 8]
        per_call_same = [p for p in same_rt if p in pass8 and activation_ranges(report, p) == "dynamic"]
        # the scheme, not the runtime: static ranges miss in another runtime too, or this runtime's per-call pass
        scheme_shown = bool([p for p in pass8 if runtime_of(report, p) != rt] and static_peers) or bool(per_call_same)
        if scheme_shown and activation_ranges(report, n) == "static" and misses_only_agreement(ev) \
                and all(activation_ranges(report, p) == "dynamic" for p in pass8):
            passing = (f"the INT8 backends that pass with 8-bit activations ({', '.join(pass8)}) compute their "
                       f"activation ranges per call")
            if static_peers:
                q = static_peers[0]
                summary = (f"{n} fails, and so does {q} ({runtime_of(report, q)}, static activation ranges too), "
                           f"while {passing}: static per-tensor INT8 activations lose the accuracy, not {rt}")
                peer_ev = [e for e in passes[q][1] if e.get("passes") is False][:1]
            else:
                q = per_call_same[0]
                summary = (f"{n} fails while {q} (same runtime, activation ranges computed per call) passes, and "
                           f"{passing}: static per-tensor INT8 activations lose the accuracy")
                peer_ev = _peer_ev(report, q, passes, n, diffs[q])
            verdicts[n] = _v("activation-ranges", summary,
                             ev + peer_ev + [e for p in pass8 if p != q for e in passes[p][1][:1]])
            continue
        if other_rt:
            kind = "tflite-specific" if rt == "tflite" else "runtime-specific"
            note = ""
            if same_rt:
                note = (f"; a {rt} INT8 variant with other settings ({', '.join(diffs[same_rt[0]])}) "
                        f"passes too: {same_rt[0]}")
            peers_ev = [e for p in other_rt for e in passes[p][1][:1]]
            verdicts[n] = _v(kind, f"{n} ({rt}) fails while peer INT8 runtime(s) {', '.join(other_rt)} pass{note}",
                             ev + peers_ev + (passes[same_rt[0]][1][:1] if same_rt else []))
            continue
        if same_rt:
            p = same_rt[0]
            diff = diffs[p]
            verdicts[n] = _v("calibration", f"{n} fails while {p} ({rt}, settings differ: {', '.join(diff) or 'none'}) "
                                            f"passes", ev + _peer_ev(report, p, passes, n, diff))
            continue
        # no INT8 backend passes
        split_ev = [e for f in fp32_split_pass for e in fp32_ok[f][1][:1]]
        others = [e for o in int8 if o != n for e in passes[o][1][:1]]
        note = (f"FP32 split {', '.join(fp32_split_pass)} passes" if fp32_split_pass
                else "no FP32 split backend was measured passing (weaker evidence)")
        verdicts[n] = _v("model-inherent", f"every INT8 backend ({len(int8)}) fails the bar; {note}: the model "
                                           f"itself does not survive INT8", ev + others + split_ev)
    for n, v in verdicts.items():
        if v["kind"] not in ("pass", "export-convention"):
            v["evidence"] = v["evidence"] + _margins_ev(report, n) + _numerics_ev(report, n)
        report["backends"][n]["verdict"] = v
    return summarize(report, verdicts, bar, int8, int8_pass)


def _margins_ev(report: dict[str, Any], name: str) -> list[dict[str, Any]]:
    """How sure the reference was where the backend's greedy output left it (split-generation's
    divergence margins; none if they were not measured or the outputs never diverge)."""
    mg = suite(report, name, "split-generation").get("margins")
    if not isinstance(mg, dict) or not mg.get("diverged") or mg.get("decisive_flip_rate") is None:
        return []
    near, rate = mg.get("near_tie_nats"), float(mg["decisive_flip_rate"])
    if rate >= DECISIVE_FLIPS_BROKEN:
        note = f"it changes tokens the reference was sure of (margin >= {nats(near)}): more than rounding noise"
    else:
        note = (f"its outputs leave the reference's where the reference itself nearly tied "
                f"({share(mg.get('near_tie_share'))} of {mg['diverged']} divergences under {nats(near)})")
    return [_ev(name, "decisive_flip_rate", mg["decisive_flip_rate"], steps=mg.get("decisive_steps"),
                near_tie_divergences=mg.get("near_tie_share"), ref_margin_median=mg.get("ref_margin_median"),
                noise_scale=mg.get("noise_scale"), note=note)]


def _numerics_ev(report: dict[str, Any], name: str) -> list[dict[str, Any]]:
    """What the numerics suite saw inside the failing backend's graphs (none if it did not run)."""
    graphs = suite(report, name, "numerics").get("graphs")
    if not isinstance(graphs, dict) or not graphs:
        return []
    sat = [(role, r) for role, g in graphs.items() for r in (g.get("most_saturated") or [])[:1]]
    top = max(sat, key=lambda x: x[1].get("saturated") or 0) if sat else None
    clipped = float((top[1].get("saturated") or 0) if top else 0)
    rows = [(role, r) for role, g in graphs.items() for r in (g.get("defects") or [])]
    if rows:
        role, r = max(rows, key=lambda x: x[1].get("rms_lsb") or 0)
        out = [_ev(name, "numerics_defects", len(rows), worst=f"{role} {op_label(r)}",
                   rms_lsb=r.get("rms_lsb"), bias_lsb=r.get("bias_lsb"),
                   note="an op computes something other than its float counterpart on the same inputs "
                        "(a kernel or quantization-parameter defect)")]
    else:
        worst = max((g.get("rms_lsb_max") or 0 for g in graphs.values()), default=0)
        note = "every checked quantized op computes its float counterpart to within rounding (no broken op)"
        if clipped < SATURATION_FITS:
            note += " and little is clipped: the loss is the grid's resolution accumulating"
        out = [_ev(name, "numerics_rms_lsb_max", worst, note=note)]
    if top:
        role, r = top
        out.append(_ev(name, "numerics_saturated_max", r.get("saturated"), tensor=f"{role} {op_label(r)}",
                       by_lsb=r.get("saturated_by_lsb"),
                       note="share of that op's values beyond its calibrated range (live rows)"
                       + ("; the range does not fit the values it meets at run time" if clipped >= 0.5 else "")))
    return out


def _peer_ev(report, p, passes, n, diff) -> list[dict[str, Any]]:
    qa, qb = _quant(report, n), _quant(report, p)
    return passes[p][1][:1] + [_ev(p, f"quantization.{k}", qb.get(k), failing_backend=n, failing_value=qa.get(k))
                               for k in diff]


def _v(kind: str, summary: str, evidence: list[dict[str, Any]]) -> dict[str, Any]:
    return {"kind": kind, "summary": summary, "evidence": evidence}


def summarize(report, verdicts, bar, int8, int8_pass) -> dict[str, Any]:
    kinds: dict[str, list[str]] = {}
    for n, v in verdicts.items():
        kinds.setdefault(v["kind"], []).append(n)
    not_eval = {n: b.get("status") for n, b in report["backends"].items() if n not in verdicts}
    model = report.get("model") or {}
    if not int8:
        headline = "no INT8 backend was measured"
    elif int8_pass:
        failing = [f"{n} ({verdicts[n]['kind']})" for n in int8 if n not in int8_pass]
        headline = (f"INT8 ships: {', '.join(int8_pass)} meet the bar"
                    + (f"; failing: {', '.join(failing)}" if failing else ""))
    elif "model-inherent" in kinds:
        headline = "model-inherent: no INT8 backend meets the bar"
    else:
        headline = "no INT8 backend meets the bar: " + ", ".join(f"{n} ({verdicts[n]['kind']})" for n in int8)
    return {"model": model.get("path"), "model_hash": model.get("content_hash"), "headline": headline,
            "bar": bar, "kinds": kinds, "int8_passing": int8_pass,
            "int8_failing": [n for n in int8 if n not in int8_pass], "not_evaluated": not_eval,
            "backends": {n: v["kind"] for n, v in verdicts.items()}}
