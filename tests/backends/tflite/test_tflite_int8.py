"""Quantized TFLite variants on tiny random models: strict INT8, boundary matrix, shippable output."""
from __future__ import annotations

import json

import numpy as np
import pytest

from backends.base import BOUNDARY_MODES
from backends.errors import InvalidInputError
from backends.registry import get_backend
from backends.tflite.runtime import TensorInfo, dequantize, quantize, requantize, to_domain
from tests.backends.tflite.conftest import CALIBRATION, OPTS, SOURCES, translate, valid_ids

INT8 = {"calibration_sources": 8}


@pytest.mark.parametrize("family", ["marian", "bart", "t5"])
def test_int8_is_strict_and_runs(prepared, family):
    bundle, be = prepared(family, "tflite-int8", **INT8)
    extra = be.artifacts.extra
    assert extra["full_int8"] is True, {k: v["float_op_counts"] for k, v in extra["ops"].items()}
    for role in ("encoder", "decoder"):
        audit = extra["ops"][role]
        assert audit["float_compute_ops"] == 0
        assert set(audit["io"]["inputs"].values()) <= {"int8", "int32"}
        assert any(o["op"] == "FULLY_CONNECTED" and o["outputs"] == ["int8"] for o in audit["ops"])
    assert extra["size_ratio_vs_fp32"] < 0.6  # int8 weights; tiny models carry relatively more overhead
    out = translate(bundle, be)
    assert len(out) == len(SOURCES) and valid_ids(out, bundle.normalized.vocab_size)


def test_int8_beam_and_boundary_matrix(prepared):
    bundle, be = prepared("marian", "tflite-int8", **INT8)
    assert be.boundary_modes() == BOUNDARY_MODES
    enc = bundle.encode_sources(SOURCES, be.max_source_length)
    results = {}
    with be:
        beam = be.generate(enc.input_ids, enc.attention_mask, num_beams=3)
        assert valid_ids(beam, bundle.normalized.vocab_size)
        for mode in BOUNDARY_MODES:
            be.set_boundary_mode(mode)
            results[mode] = be.first_step_logits(enc.input_ids, enc.attention_mask)
        be.set_boundary_mode(None)
        with pytest.raises(InvalidInputError):
            be.set_boundary_mode("int4enc-int4dec")
    fp32 = results["fp32enc-fp32dec"]
    for mode, logits in results.items():
        assert logits.shape == fp32.shape and np.isfinite(logits).all()
    # the fp32 pair really is float: it differs from the fully quantized path
    assert not np.array_equal(results["int8enc-requant-int8dec"], fp32)


def test_generation_json_describes_the_loop(prepared):
    bundle, be = prepared("marian", "tflite-int8", **INT8)
    gen = json.loads(open(be.artifacts.files["generation"]).read())
    assert gen["precision"] == "int8"
    assert gen["static"]["source_length"] == OPTS["max_source_length"]
    assert gen["special_tokens"]["decoder_start_token_id"] == bundle.conventions.decoder_start_token_id
    names = {t["name"] for t in gen["decoder_step"]["inputs"]}
    assert {"input_ids", "position", "encoder_attention_mask"} <= names
    for b in gen["boundary"]:
        assert b["encoder_output"]["dtype"] == "int8" and "scale" in b["decoder_input"]
    assert gen["cache"]["tensors"] and all(c["input"]["dtype"] == "int8" for c in gen["cache"]["tensors"])
    assert set(be.artifacts.files) >= {"encoder", "decoder", "generation"}
    assert be.artifacts.files["encoder"].endswith("encoder_int8.tflite")


def test_int8_needs_calibration(tiny_model, tmp_path):
    from backends.model import ModelBundle

    be = get_backend("tflite-int8", **OPTS)
    with pytest.raises(InvalidInputError, match="calibration"):
        be.prepare(ModelBundle.load(tiny_model("marian")), tmp_path, None)


def test_naive_calibration_differs_from_real(prepared):
    """The naive recipe yields a different decoder (its cross-attention ranges come from zeros)."""
    _, real = prepared("marian", "tflite-int8", **INT8)
    _, naive = prepared("marian", "tflite-int8-naive", **INT8)
    assert naive.options["boundary"] == "raw" and naive.options["calibration_recipe"] == "naive"
    r = json.loads(open(real.artifacts.files["generation"]).read())
    n = json.loads(open(naive.artifacts.files["generation"]).read())
    assert [b["name"] for b in n["boundary"]] == ["encoder_hidden_states"]
    assert r["decoder_step"] != n["decoder_step"]


def test_requantize_math():
    src = TensorInfo("e", 0, np.dtype("int8"), (), 0.05, -3)
    dst = TensorInfo("d", 1, np.dtype("int8"), (), 0.1, 4)
    x = np.linspace(-5, 5, 41, dtype=np.float32)
    q = quantize(x, src)
    r = requantize(q, src, dst)
    np.testing.assert_allclose(dequantize(r, dst), np.clip(dequantize(q, src), -13.2, 12.3), atol=0.051)
    assert r.dtype == np.int8 and r.min() >= -128 and r.max() <= 127
    np.testing.assert_array_equal(to_domain(q, src, src), q)
    assert not np.array_equal(to_domain(q, src, dst, raw=True), r)  # raw bytes != requantized


def test_percentile_calibration_changes_ranges(prepared):
    bundle, minmax = prepared("marian", "tflite-int8", **INT8)
    _, pct = prepared("marian", "tflite-int8", calibration_method="percentile", percentile=99.0, **INT8)
    assert pct.artifacts.extra["full_int8"] is True
    a = json.loads(open(minmax.artifacts.files["generation"]).read())
    b = json.loads(open(pct.artifacts.files["generation"]).read())
    scales = lambda g: [c["output"]["scale"] for c in g["cache"]["tensors"]]  # noqa: E731
    assert scales(a) != scales(b)  # same calibration data, different ranges
    assert valid_ids(translate(bundle, pct), bundle.normalized.vocab_size)


@pytest.mark.parametrize("name,strict", [("tflite-dynamic", False), ("tflite-int8-selective", False),
                                         ("tflite-int16x8", False)])
def test_other_precisions_run(prepared, name, strict):
    bundle, be = prepared("marian", name, **({} if name == "tflite-dynamic" else INT8))
    assert be.artifacts.extra["full_int8"] is strict
    ops = be.artifacts.extra["ops"]["decoder"]
    if name == "tflite-int8-selective":
        assert ops["float_op_counts"].get("SOFTMAX", 0) > 0  # the named region really is float
    if name == "tflite-int16x8":
        assert any("int16" in o["outputs"] for o in ops["ops"])
    out = translate(bundle, be)
    assert len(out) == len(SOURCES) and valid_ids(out, bundle.normalized.vocab_size)


def test_fine_logits_head(prepared):
    """The optional fine LM head: a second int8 logits output with a narrow range above a floor."""
    bundle, be = prepared("marian", "tflite-int8", fine_logits=True, **INT8)
    gen = json.loads(open(be.artifacts.files["generation"]).read())
    outs = {o["name"]: o for o in gen["decoder_step"]["outputs"]}
    assert "logits_top" in outs and outs["logits_top"]["scale"] < outs["logits"]["scale"]
    assert gen["logits"]["logits_floor"] == be.artifacts.extra["logits_floor"]
    assert valid_ids(translate(bundle, be), bundle.normalized.vocab_size)


#: where each region's float ops must show up (op types of the float ops left by the region)
_REGION_FLOAT_OPS = {"layer_norm": {"MEAN", "RSQRT", "FULLY_CONNECTED"},  # balanced norms take the mean by matmul
                     "attention_softmax": {"SOFTMAX"},
                     "cross_attention": {"SOFTMAX", "BATCH_MATMUL"}, "lm_head": {"FULLY_CONNECTED", "BATCH_MATMUL"},
                     "ffn": {"FULLY_CONNECTED"}}


@pytest.mark.parametrize("family,region", [("marian", "layer_norm"), ("marian", "cross_attention"),
                                           ("marian", "lm_head"), ("t5", "layer_norm"), ("bart", "ffn")])
def test_float_regions_leave_exactly_that_region_float(prepared, family, region):
    """Selective float by region: the region's ops run in float, everything else stays int8."""
    bundle, strict = prepared(family, "tflite-int8", **INT8)
    _, be = prepared(family, "tflite-int8", float_regions=[region], **INT8)
    extra = be.artifacts.extra
    assert extra["full_int8"] is False and be.precision_label == "int8-mixed"
    assert be.quantization_settings()["float_regions"] == [region]
    found = extra["float_regions"]
    assert found["encoder"].get(region, 0) + found["decoder"].get(region, 0) > 0
    if region in ("cross_attention", "lm_head"):  # decoder-only regions
        assert not found["encoder"].get(region) and extra["ops"]["encoder"]["float_compute_ops"] == 0
    float_types = set()
    for role in ("encoder", "decoder"):
        float_types |= set(extra["ops"][role]["float_op_counts"])
        # the int8 rest of the graph: still int8 FULLY_CONNECTED outside the region
        assert any(o["op"] == "FULLY_CONNECTED" and o["outputs"] == ["int8"] for o in extra["ops"][role]["ops"])
    assert float_types & _REGION_FLOAT_OPS[region], float_types
    # float outside the region would show as other float op types
    assert float_types <= _REGION_FLOAT_OPS[region] | {"MUL", "ADD", "SUB", "SQUARED_DIFFERENCE", "DEQUANTIZE",
                                                        "QUANTIZE", "RESHAPE", "TRANSPOSE", "CONCATENATION",
                                                        "SELECT_V2", "REDUCE_MAX", "LOGISTIC", "GELU", "RELU"}, float_types
    # the audit locates each float op in the network: inside the region's blocks
    block = {"layer_norm": "/norm/", "cross_attention": "/cross_attn/", "ffn": "/ffn/"}.get(region)
    located = [f for role in ("encoder", "decoder") for f in extra["ops"][role]["float_ops"]
               if f.split()[0] not in ("QUANTIZE", "DEQUANTIZE")]
    assert located and (block is None or all(block in f for f in located)), located
    out = translate(bundle, be)
    assert len(out) == len(SOURCES) and valid_ids(out, bundle.normalized.vocab_size)
    assert strict.artifacts.extra["full_int8"] is True


def test_float_regions_reject_bad_names(prepared):
    with pytest.raises(InvalidInputError, match="unknown; choose from"):
        prepared("marian", "tflite-int8", float_regions=["softmax_everything"], **INT8)
    with pytest.raises(InvalidInputError, match="unknown; choose from"):
        prepared("marian", "tflite-int8", float_regions=["encoder.cross_attention"], **INT8)
    with pytest.raises(InvalidInputError, match="list of region names"):
        prepared("marian", "tflite-int8", float_regions="layer_norm", **INT8)
    with pytest.raises(InvalidInputError, match="needs quantization 'int8'"):
        prepared("marian", "tflite-int16x8", float_regions=["layer_norm"], **INT8)


def test_a_region_can_be_left_float_in_one_graph(prepared):
    """decoder.layer_norm: the decoder's layer norms float, the encoder the strict build's, range for range;
    layer_norm alone is both graphs' and the same build as the pair of scoped names."""
    bundle, strict = prepared("marian", "tflite-int8", **INT8)
    _, dec = prepared("marian", "tflite-int8", float_regions=["decoder.layer_norm"], **INT8)
    extra = dec.artifacts.extra
    assert extra["ops"]["encoder"]["float_compute_ops"] == 0 and extra["ops"]["encoder"]["full_int8"] is True
    located = [f for f in extra["ops"]["decoder"]["float_ops"] if f.split()[0] not in ("QUANTIZE", "DEQUANTIZE")]
    assert located and all("/norm/" in f for f in located), located
    assert extra["float_regions"]["decoder"]["layer_norm"] > 0 and not extra["float_regions"]["encoder"]
    assert extra["full_int8"] is False and dec.precision_label == "int8-mixed"
    assert _quant_params(dec.artifacts.files["encoder"]) == _quant_params(strict.artifacts.files["encoder"])
    assert len(translate(bundle, dec)) == len(SOURCES)
    _, both = prepared("marian", "tflite-int8", float_regions=["layer_norm"], **INT8)
    _, pair = prepared("marian", "tflite-int8", float_regions=["decoder.layer_norm", "encoder.layer_norm"], **INT8)
    assert both.settings()["float_regions"] == ["encoder.layer_norm", "decoder.layer_norm"]
    assert pair.artifacts.cache_key == both.artifacts.cache_key
    assert pair.artifacts.files == both.artifacts.files
    assert pair.artifacts.reused
    assert both.artifacts.extra["float_regions"]["encoder"]["layer_norm"] > 0
    assert both.quantization_settings()["float_regions"] == ["layer_norm"]  # as asked


def test_float_fallback_names_each_graphs_regions(prepared):
    """What rescue searches: one graph's region per part, a region alone standing for it in every graph."""
    from backends.tflite.graphs import SCOPED_REGIONS

    fb = get_backend("tflite-int8", float_regions=["lm_head"]).float_fallback()
    assert fb.option == "float_regions" and list(fb.parts) == list(SCOPED_REGIONS)
    assert "encoder.lm_head" not in fb.parts and "encoder.cross_attention" not in fb.parts
    assert fb.current == ("decoder.lm_head",)
    assert fb.canonical(["ffn", "decoder.layer_norm"]) == ("encoder.ffn", "decoder.layer_norm", "decoder.ffn")
    assert fb.named(["decoder.ffn", "encoder.ffn", "decoder.lm_head", "encoder.layer_norm"]) == (
        "encoder.layer_norm", "ffn", "lm_head")
    assert fb.units()[0] == ("encoder.layer_norm", "decoder.layer_norm") and len(fb.units()) == 6  # the regions
    assert fb.units()[-1] == ("decoder.lm_head",)
    assert fb.units(["decoder.ffn", "layer_norm"]) == (("encoder.layer_norm", "decoder.layer_norm"), ("decoder.ffn",))
    with pytest.raises(InvalidInputError, match=r"unknown float part\(s\) \['encoder.lm_head'\]"):
        fb.canonical(["encoder.lm_head"])


def _quant_params(path) -> list:
    """Every tensor's (shape, dtype, quantization), sorted: the build's ranges, whatever the tensor order."""
    from ai_edge_litert.interpreter import Interpreter

    details = Interpreter(model_path=str(path)).get_tensor_details()
    return sorted((tuple(d["shape"]), str(d["dtype"]), d["quantization"]) for d in details)


def test_range_pass_does_not_depend_on_op_names(tiny_model, tmp_path, monkeypatch):
    """The mse/percentile range pass subsamples each tensor's values. Op names (the region name scopes)
    reorder the converter's tensors; the subsample, hence every range, must not change with them."""
    import dataclasses

    from backends.model import ModelBundle
    from backends.tflite import backend as tb
    from backends.tflite import convert as tconv

    monkeypatch.setattr(tconv, "RANGE_SAMPLE_CAP", 300)  # force subsampling on the tiny model
    bundle = ModelBundle.load(tiny_model("marian"))
    built = {}
    plain_graphs = tb.TFLiteSplitBackend._graphs
    for scoped in (False, True):
        def graphs(self, model, scoped=scoped):
            g = plain_graphs(self, model)
            return type(g)(g.w, g.cfg, dataclasses.replace(g.spec, region_scopes=scoped))

        monkeypatch.setattr(tb.TFLiteSplitBackend, "_graphs", graphs)
        be = get_backend("tflite-int8", **OPTS, **INT8)
        assert be.options["calibration_method"] in ("mse", "percentile")
        be.prepare(bundle, tmp_path / str(scoped), CALIBRATION)
        built[scoped] = be.artifacts.files
    for role in ("encoder", "decoder"):
        assert _quant_params(built[False][role]) == _quant_params(built[True][role]), role
