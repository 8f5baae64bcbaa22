"""Verdict rules over real measured rows (tiny Marian, in-process torch runs; see
tests/orchestrator/suites/conftest.py), plus the planted-outlier model -> model-inherent (slow)."""
from __future__ import annotations

import copy

import pytest

from backends.errors import InvalidInputError
from orchestrator.attribution import _differing_quant_keys, attribute, effective_bar, precision_class, runtime_of
from tests.orchestrator.suites.conftest import measured_report


@pytest.fixture(scope="module")
def report(tiny_model, tmp_path_factory):
    rep, _, _ = measured_report(tiny_model, tmp_path_factory)
    return copy.deepcopy(rep)


def _kind(rep, name):
    return rep["backends"][name]["verdict"]["kind"]


def test_verdicts_on_measured_rows(report):
    summary = attribute(report, {})
    assert _kind(report, "torch-fp32") == "pass"
    assert _kind(report, "torch-fp32-split") == "pass"
    assert _kind(report, "sim-int8") == "pass"
    # raw boundary fails, requantized boundary row passes
    assert _kind(report, "sim-int8-raw") == "boundary"
    # boundary calibrated on zeros: source-blind; same runtime with real calibration passes
    assert _kind(report, "sim-int8-naive") == "calibration"
    assert "sim-int8" in summary["int8_passing"]
    assert set(summary["int8_failing"]) == {"sim-int8-raw", "sim-int8-naive"}
    assert summary["headline"].startswith("INT8 ships")


def test_verdicts_cite_how_sure_the_reference_was_where_outputs_diverge(report):
    """An INT8 pass and a failure both cite split-generation's divergence margins: near-tie flips for the
    one that passes, flips of steps the reference was sure of for the broken one. FP32 passes do not."""
    rep = copy.deepcopy(report)

    def margins(name, **kw):
        sg = rep["backends"][name]["suites"]["split-generation"]
        sg["margins"] = {**sg["margins"], "near_tie_nats": 1.0, "decisive_steps": 100, **kw}

    margins("sim-int8", diverged=3, decisive_flip_rate=0.0, near_tie_share=1.0, ref_margin_median=0.1)
    margins("sim-int8-naive", diverged=8, decisive_flip_rate=0.4, near_tie_share=0.1, ref_margin_median=3.0)
    attribute(rep, {})

    def rows(name):
        return [e for e in rep["backends"][name]["verdict"]["evidence"] if e["metric"] == "decisive_flip_rate"]

    (ok,) = rows("sim-int8")
    assert ok["value"] == 0.0 and ok["near_tie_divergences"] == 1.0 and "nearly tied (100.0% of 3" in ok["note"]
    (bad,) = rows("sim-int8-naive")
    assert bad["value"] == 0.4 and "sure of" in bad["note"] and rep["backends"]["sim-int8-naive"]["verdict"][
        "kind"] == "calibration"
    assert rows("torch-fp32-split") == []
    margins("sim-int8", diverged=0)  # identical outputs: nothing to explain
    attribute(rep, {})
    assert rows("sim-int8") == []


def test_every_verdict_cites_measured_rows(report):
    attribute(report, {})
    for name, b in report["backends"].items():
        v = b["verdict"]
        assert v["summary"] and v["evidence"]
        for e in v["evidence"]:
            assert e["backend"] in report["backends"] and e["metric"]
    ev = report["backends"]["sim-int8-raw"]["verdict"]["evidence"]
    metrics = {e["metric"]: e["value"] for e in ev}
    rows = report["backends"]["sim-int8-raw"]["suites"]["split-generation"]["boundary"]["rows"]
    assert metrics["boundary[int8enc-raw-int8dec].bleu_drop_vs_fp32_row"] == pytest.approx(
        rows["fp32enc-fp32dec"]["bleu"] - rows["int8enc-raw-int8dec"]["bleu"], abs=0.01)
    naive = report["backends"]["sim-int8-naive"]["verdict"]
    assert any(e["metric"] == "cross_source_cosine" for e in naive["evidence"])
    assert any(e["backend"] == "sim-int8" for e in naive["evidence"])


def test_bar_changes_the_verdict(report):
    # with an absurdly loose bar and source-blindness allowed, everything passes
    attribute(report, {"max_bleu_drop": 1000.0, "fail_source_blind": False})
    assert all(b["verdict"]["kind"] == "pass" for b in report["backends"].values())


def test_model_inherent_when_every_int8_fails(report):
    rep = copy.deepcopy(report)
    del rep["backends"]["sim-int8"]  # only failing INT8 rows left, none has a passing peer
    rep["backends"]["sim-int8-raw"]["suites"]["split-generation"].pop("boundary")
    attribute(rep, {})
    assert _kind(rep, "sim-int8-raw") == "model-inherent"
    assert _kind(rep, "sim-int8-naive") == "model-inherent"
    assert _kind(rep, "torch-fp32-split") == "pass"


def test_export_convention_when_fp32_variant_disagrees(report):
    rep = copy.deepcopy(report)
    # the raw-boundary backend's rows relabelled as an FP32 export of a runtime: it disagrees with
    # the original model, so that runtime's INT8 failure says nothing about quantization
    fp32 = rep["backends"]["sim-int8-raw"]
    fp32["signature"] = {**fp32["signature"], "runtime": "rt-x", "precision": "fp32", "quantization": {}}
    int8 = rep["backends"]["sim-int8-naive"]
    int8["signature"] = {**int8["signature"], "runtime": "rt-x"}
    attribute(rep, {})
    assert _kind(rep, "sim-int8-raw") == "export-convention"
    assert _kind(rep, "sim-int8-naive") == "export-convention"
    assert "sim-int8-raw" in rep["backends"]["sim-int8-naive"]["verdict"]["summary"]


@pytest.mark.parametrize("runtime,kind", [("tflite", "tflite-specific"), ("onnxruntime", "runtime-specific")])
def test_peer_runtime_passes(report, runtime, kind):
    rep = copy.deepcopy(report)
    # the zero-calibrated rows under another runtime's label: a peer INT8 runtime (sim-int8) passes
    naive = rep["backends"]["sim-int8-naive"]
    naive["signature"] = {**naive["signature"], "runtime": runtime}
    attribute(rep, {})
    v = rep["backends"]["sim-int8-naive"]["verdict"]
    assert v["kind"] == kind and "sim-int8" in v["summary"]
    assert any(e["backend"] == "sim-int8" for e in v["evidence"])


def _int8_variant(report, runtime: str, quantization: dict, agreement: float) -> dict:
    """sim-int8's measurements under another runtime's INT8 signature, with its own agreement rate."""
    b = copy.deepcopy(report["backends"]["sim-int8"])
    b["signature"] = {**b["signature"], "runtime": runtime, "quantization": quantization}
    b["metrics"]["exact_match_vs_reference"] = agreement
    b["suites"]["split-generation"].pop("boundary", None)  # no boundary matrix: the boundary rule stays out
    return b


def test_activation_ranges_when_only_per_call_peers_pass(report):
    """An agreement bar that static-range INT8 misses in two runtimes while per-call ranges meet it:
    the scheme, not TFLite."""
    rep = copy.deepcopy(report)
    rep["backends"].update({
        "tfl-int8": _int8_variant(rep, "tflite", {"mode": "int8", "activations": "int8"}, 0.70),
        "ort-static": _int8_variant(rep, "onnxruntime", {"mode": "static"}, 0.72),
        "ort-dynamic": _int8_variant(rep, "onnxruntime", {"mode": "dynamic"}, 0.86),
        "ct2-mkl": _int8_variant(rep, "ctranslate2", {"scheme": "w8-per-row-sym+a8-dynamic"}, 0.91)})
    rep["backends"]["sim-int8"]["metrics"]["exact_match_vs_reference"] = 0.5  # only the four above pass or not
    attribute(rep, {"min_int8_agreement": 0.8})
    v = rep["backends"]["tfl-int8"]["verdict"]
    assert v["kind"] == "activation-ranges", v
    assert "so does ort-static" in v["summary"] and "ort-dynamic" in v["summary"] and "not tflite" in v["summary"]
    assert any(e["backend"] == "ort-static" and e["passes"] is False for e in v["evidence"])
    assert {"ort-dynamic", "ct2-mkl"} <= {e["backend"] for e in v["evidence"]}
    # the same reading for ORT static, whose same-runtime peer passes only with dynamic ranges
    v = rep["backends"]["ort-static"]["verdict"]
    assert v["kind"] == "activation-ranges" and "so does tfl-int8" in v["summary"]
    # a wider-activation pass is the precision rule's for its own runtime, and no counter-example for others
    both = copy.deepcopy(rep)
    both["backends"]["tfl-int16x8"] = _int8_variant(both, "tflite", {"mode": "int16x8", "activations": "int16"}, 0.93)
    attribute(both, {"min_int8_agreement": 0.8})
    assert _kind(both, "tfl-int8") == "precision" and _kind(both, "ort-static") == "activation-ranges"
    assert "pass with 8-bit activations (ort-dynamic, ct2-mkl)" in both["backends"]["ort-static"]["verdict"]["summary"]
    # a backend that also loses BLEU is broken, not a near miss of the scheme
    rep["backends"]["tfl-int8"]["metrics"]["bleu_delta_vs_reference"] = -30.0
    attribute(rep, {"min_int8_agreement": 0.8})
    assert _kind(rep, "tfl-int8") == "tflite-specific"
    rep["backends"]["tfl-int8"]["metrics"]["bleu_delta_vs_reference"] = 0.0
    # with a static-range peer of another runtime passing, it is TFLite's alone again
    rep["backends"]["ort-static"]["metrics"]["exact_match_vs_reference"] = 0.85
    attribute(rep, {"min_int8_agreement": 0.8})
    assert _kind(rep, "tfl-int8") == "tflite-specific"


def test_a_near_miss_peer_still_explains_a_broken_backend(report):
    """At an agreement bar no INT8 backend meets, a same-runtime variant that misses only that bar (BLEU and
    the source kept) still shows what repairs a broken one: calibration, or the mask."""
    rep = copy.deepcopy(report)
    rep["backends"]["sim-int8"]["metrics"]["exact_match_vs_reference"] = 0.7
    assert attribute(rep, {"min_int8_agreement": 0.8})["int8_passing"] == []
    v = rep["backends"]["sim-int8-naive"]["verdict"]
    assert v["kind"] == "calibration", v
    assert "sim-int8 (same runtime" in v["summary"] and "misses only min_int8_agreement" in v["summary"]
    rep["backends"]["sim-int8-naive"]["signature"]["quantization"]["mask"] = "hf"
    rep["backends"]["sim-int8"]["signature"]["quantization"]["mask"] = "select"
    attribute(rep, {"min_int8_agreement": 0.8})
    v = rep["backends"]["sim-int8-naive"]["verdict"]
    assert v["kind"] == "mask" and "misses only min_int8_agreement" in v["summary"], v
    # a peer that also misses only the agreement bar explains nothing about another near miss
    rep["backends"]["sim-int8-naive"] = _int8_variant(rep, "simulated", {"mode": "int8", "recipe": "other"}, 0.6)
    rep["backends"]["sim-int8-naive"]["signature"]["runtime"] = runtime_of(rep, "sim-int8")
    attribute(rep, {"min_int8_agreement": 0.8})
    assert _kind(rep, "sim-int8-naive") == "model-inherent"


def test_a_requested_compute_type_resolved_to_the_same_one_is_no_difference(report):
    """CTranslate2 runs compute_type int8_float32 as int8 on CPU: only the GEMM library differs -> kernel."""
    rep = copy.deepcopy(report)
    scheme = {"effective_compute_type": "int8_float32", "scheme": "w8-per-row-sym+a8-dynamic"}
    rep["backends"].update({
        "ct2-int8-float32": _int8_variant(rep, "ctranslate2", {**scheme, "compute_type": "int8_float32",
                                                               "weights_stored_as": "int8_float32",
                                                               "gemm_library": "dnnl"}, 0.7),
        "ct2-int8-mkl": _int8_variant(rep, "ctranslate2", {**scheme, "compute_type": "int8",
                                                           "weights_stored_as": "int8", "gemm_library": "mkl"}, 0.9)})
    assert _differing_quant_keys(rep, "ct2-int8-float32", "ct2-int8-mkl") == ["gemm_library"]
    attribute(rep, {"min_int8_agreement": 0.8})
    v = rep["backends"]["ct2-int8-float32"]["verdict"]
    assert v["kind"] == "kernel" and "gemm_library 'mkl' instead of 'dnnl'" in v["summary"], v
    # a different effective compute type is a different scheme: the requested keys count again
    rep["backends"]["ct2-int8-mkl"]["signature"]["quantization"]["effective_compute_type"] = "int8"
    assert "compute_type" in _differing_quant_keys(rep, "ct2-int8-float32", "ct2-int8-mkl")


def test_static_ranges_against_a_same_runtime_per_call_peer_are_not_calibration(report):
    """ORT static vs ORT dynamic differ in calibration keys too, but the passing peer computes its ranges
    per call: that is the scheme, even with no other runtime in the run."""
    rep = copy.deepcopy(report)
    rep["backends"].update({
        "ort-static": _int8_variant(rep, "onnxruntime", {"mode": "static", "calibration_method": "MinMax"}, 0.72),
        "ort-dynamic": _int8_variant(rep, "onnxruntime", {"mode": "dynamic"}, 0.86)})
    rep["backends"]["sim-int8"]["metrics"]["exact_match_vs_reference"] = 0.5
    attribute(rep, {"min_int8_agreement": 0.8})
    v = rep["backends"]["ort-static"]["verdict"]
    assert v["kind"] == "activation-ranges", v
    assert "ort-dynamic (same runtime, activation ranges computed per call) passes" in v["summary"]
    assert any(e["metric"] == "quantization.mode" and e["value"] == "dynamic" for e in v["evidence"])
    # a static-range peer that passes is a calibration to copy, not a scheme to leave
    rep["backends"]["ort-static-pct"] = _int8_variant(rep, "onnxruntime", {"mode": "static",
                                                                            "calibration_method": "Percentile"}, 0.85)
    attribute(rep, {"min_int8_agreement": 0.8})
    v = rep["backends"]["ort-static"]["verdict"]
    assert v["kind"] == "calibration" and "ort-static-pct" in v["summary"], v


def test_failed_backends_get_no_verdict(report):
    rep = copy.deepcopy(report)
    rep["backends"]["broken"] = {"status": "failed", "reason": "exit code 1", "metrics": {}, "suites": {}}
    s = attribute(rep, {})
    assert "verdict" not in rep["backends"]["broken"]
    assert s["not_evaluated"] == {"broken": "failed"}


def test_bar_validation():
    assert effective_bar({})["max_bleu_drop"] == 1.0
    with pytest.raises(InvalidInputError, match="unknown"):
        effective_bar({"max_bleu": 1})
    with pytest.raises(InvalidInputError, match="number"):
        effective_bar({"max_bleu_drop": "x"})


def test_precision_classes():
    assert precision_class({"precision": "fp32", "quantization": {}}) == "fp32"
    assert precision_class({"precision": "fp32", "quantization": {"mode": "int8"}}) == "int8"  # tflite label
    assert precision_class({"precision": "int8-dynamic", "quantization": {"x": 1}}) == "int8"
    assert precision_class({"precision": "int16", "quantization": {"compute_type": "int16"}}) == "other"
    # CTranslate2 FP32 records its compute type
    assert precision_class({"precision": "fp32", "quantization": {"compute_type": "float32",
                                                                  "weights_stored_as": "float32"}}) == "fp32"
    assert precision_class({"precision": "fp16", "quantization": {"compute_type": "float16"}}) == "other"


# ---------------------------------------------------------------------------------------
# planted outliers: every real INT8 runtime breaks, FP32 split does not -> model-inherent
# ---------------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.e2e
def test_planted_outliers_are_model_inherent(tiny_model, tmp_path):
    from backends.registry import available_backends, get_backend
    from tests.orchestrator.suites.helpers import load_test_data, plant_outliers, run_suites, translate_reference

    int8 = [n for n in ("onnx-dynamic-int8", "ct2-int8") if n in available_backends(installed_only=True)]
    if not int8:
        pytest.skip("no INT8 runtime installed (onnxruntime / ctranslate2)")
    model = plant_outliers(tiny_model("marian"), tmp_path / "outlier", alpha=1000.0, channels=2)
    sources, _ = load_test_data(12)
    refs = translate_reference(model, sources, max_new_tokens=16)
    names = ["torch-fp32", "torch-fp32-split"] + int8
    backends = {n: get_backend(n, max_new_tokens=16) for n in names}
    rep = run_suites(model, backends, ["quality", "source-sensitivity"], sources, refs, tmp_path / "run",
                     suite_options={"source-sensitivity": {"pairs": 4}, "quality": {"bootstrap_samples": 100}})
    m = {n: rep["backends"][n]["metrics"] for n in names}
    assert m["torch-fp32-split"]["exact_match_vs_reference"] == 1.0  # the edit preserves FP32 function
    for n in int8:
        assert m[n]["bleu_delta_vs_reference"] < -20, (n, m[n])
    summary = attribute(rep, {})
    for n in int8:
        assert _kind(rep, n) == "model-inherent", rep["backends"][n]["verdict"]
    assert summary["headline"].startswith("model-inherent")


def test_no_verdicts_without_a_reference(report):
    rep = copy.deepcopy(report)
    for b in rep["backends"].values():
        b.pop("verdict", None)
    rep["backends"]["torch-fp32"]["status"] = "failed"
    s = attribute(rep, {})
    assert s["headline"].startswith("no verdicts") and "torch-fp32" in s["headline"]
    assert all("verdict" not in b for n, b in rep["backends"].items())


def test_mask_verdict_when_only_the_additive_mask_variant_fails(report):
    """A failing INT8 backend with Hugging Face's -1e9 additive mask, next to a passing same-runtime
    variant with the select mask, is a mask failure, not a calibration one."""
    rep = copy.deepcopy(report)
    for name, mask in (("sim-int8-naive", "hf"), ("sim-int8", "select")):
        sig = rep["backends"][name]["signature"]
        sig["quantization"] = {**(sig.get("quantization") or {}), "mask": mask}
    attribute(rep, {})
    v = rep["backends"]["sim-int8-naive"]["verdict"]
    assert v["kind"] == "mask"
    assert "'select'" in v["summary"] and "'hf'" in v["summary"]
    assert any(e["metric"] == "quantization.mask" and e["value"] == "select" and e["failing_value"] == "hf"
               for e in v["evidence"])
    # the same pair with both masks bounded is a calibration difference again
    rep["backends"]["sim-int8-naive"]["signature"]["quantization"]["mask"] = "bounded"
    attribute(rep, {})
    assert _kind(rep, "sim-int8-naive") == "calibration"


def test_int8_agreement_bar_applies_to_int8_only(report):
    """``min_int8_agreement``: an INT8 backend must also reproduce the reference's greedy outputs."""
    rep = copy.deepcopy(report)
    em = rep["backends"]["sim-int8"]["metrics"]["exact_match_vs_reference"]
    assert 0 < em <= 1
    attribute(rep, {"min_int8_agreement": em})
    assert _kind(rep, "sim-int8") == "pass"
    attribute(rep, {"min_int8_agreement": em + 1e-6})
    v = rep["backends"]["sim-int8"]["verdict"]
    assert v["kind"] != "pass"
    assert any(e["metric"] == "exact_match_vs_reference" and e["value"] == em and e["passes"] is False
               for e in v["evidence"])
    assert _kind(rep, "torch-fp32-split") == "pass"  # FP32 variants keep their own agreement rule
    # at one of split-generation's identity_targets the evidence says how far the noise is from the budget
    sg = rep["backends"]["sim-int8"]["suites"]["split-generation"]
    sg["margins"]["noise_scale"] = 0.1512
    rep["backends"]["sim-int8"]["metrics"]["exact_match_vs_reference"] = 0.5
    rep["backends"][rep["reference_backend"]]["suites"]["split-generation"]["margins"][
        "noise_scale_for_identity"] = {"0.8": 0.0861, "0.9": 0.0382}
    attribute(rep, {"min_int8_agreement": 0.9})
    ev = next(e for e in rep["backends"]["sim-int8"]["verdict"]["evidence"]
              if e["metric"] == "exact_match_vs_reference")
    assert (ev["noise_scale"], ev["noise_scale_needed"]) == (0.1512, 0.0382)
    assert ev["note"] == "its noise scale is 0.151 nats; 90% identical needs 0.038 or less (split-generation's noise budget)"
    attribute(rep, {"min_int8_agreement": 0.85})  # not a target the budget was computed for: no note
    ev = next(e for e in rep["backends"]["sim-int8"]["verdict"]["evidence"]
              if e["metric"] == "exact_match_vs_reference")
    assert "noise_scale_needed" not in ev and "note" not in ev and ev["noise_scale"] == 0.1512
    rep["backends"]["sim-int8"]["metrics"].pop("exact_match_vs_reference")
    attribute(rep, {"min_int8_agreement": 0.5})
    assert _kind(rep, "sim-int8") != "pass"  # not measured -> cannot pass a bar that asks for it


def test_kernel_verdict_when_only_the_gemm_library_differs(report):
    """Same runtime, same quantization scheme, another int8 GEMM passes: the kernel, not calibration."""
    rep = copy.deepcopy(report)
    good = rep["backends"]["sim-int8"]["signature"]
    bad = rep["backends"]["sim-int8-naive"]["signature"]
    bad["quantization"] = {**(good.get("quantization") or {}), "gemm_library": "dnnl"}
    good["quantization"] = {**(good.get("quantization") or {}), "gemm_library": "mkl"}
    attribute(rep, {})
    v = rep["backends"]["sim-int8-naive"]["verdict"]
    assert v["kind"] == "kernel" and "'mkl' instead of 'dnnl'" in v["summary"]
    assert any(e["metric"] == "quantization.gemm_library" and e["value"] == "mkl" and e["failing_value"] == "dnnl"
               for e in v["evidence"])


def test_boundary_rule_only_for_a_backend_that_does_not_requantize(report):
    rep = copy.deepcopy(report)
    attribute(rep, {})
    assert _kind(rep, "sim-int8-raw") == "boundary"
    sig = rep["backends"]["sim-int8-raw"]["signature"]
    sig["quantization"] = {**(sig.get("quantization") or {}), "boundary": "requant"}
    attribute(rep, {})
    assert _kind(rep, "sim-int8-raw") != "boundary"  # it already requantizes: another cause


def test_precision_verdict_when_only_a_wider_activation_variant_passes(report):
    """No same-precision variant passes but a 16-bit-activation one does: the bit width, not calibration
    (unless the failing decoder is source-blind, which stays a calibration failure)."""
    rep = copy.deepcopy(report)
    q = lambda name: rep["backends"][name]["signature"].setdefault("quantization", {})  # noqa: E731
    q("sim-int8").update(activations="int16", method="percentile")
    q("sim-int8-raw").update(activations="int8", method="mse", boundary="requant")
    q("sim-int8-naive").update(activations="int8", method="minmax")
    attribute(rep, {})
    v = rep["backends"]["sim-int8-raw"]["verdict"]
    assert v["kind"] == "precision", v["summary"]
    assert "int16 activations instead of int8" in v["summary"]
    assert any(e["metric"] == "quantization.activations" and e["value"] == "int16" for e in v["evidence"])
    naive = rep["backends"]["sim-int8-naive"]["verdict"]
    assert naive["kind"] == "calibration" and "source-blind" in naive["summary"]
    # a passing peer with the same activation width: calibration again
    q("sim-int8").update(activations="int8")
    attribute(rep, {})
    assert _kind(rep, "sim-int8-raw") == "calibration"


def test_fp32_pass_never_claims_an_unmeasured_agreement(report):
    rep = copy.deepcopy(report)
    rep["backends"]["torch-fp32-split"]["metrics"].pop("exact_match_vs_reference")
    attribute(rep, {})
    v = rep["backends"]["torch-fp32-split"]["verdict"]
    assert v["kind"] == "pass" and "matches the reference" not in v["summary"]
    assert "not measured" in v["summary"]
    assert "matches the reference" in rep["backends"]["torch-fp32"]["verdict"]["summary"]  # the reference itself
