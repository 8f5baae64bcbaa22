"""Per-op numerics of the quantized TFLite artifacts (backends/tflite/numerics.py, op_numerics):
measured on the real LiteRT kernels while the tiny models translate."""
from __future__ import annotations

import re

import numpy as np
import pytest

from backends.errors import BackendStateError, InvalidInputError
from backends.tflite.graphs import op_location
from backends.tflite.numerics import DEFECT_RMS_LSB, OpNumerics, is_defect
from backends.tflite.runtime import TFLiteModel
from tests.backends.tflite.conftest import SOURCES
from tests.fixtures.numerics import numerics_between_translations

INT8 = {"calibration_sources": 8}


def _numerics(bundle, backend):
    # the state afterwards: which kernels the backend's interpreter runs on
    return numerics_between_translations(bundle, backend, SOURCES, lambda b: b._dec.kernels)  # noqa: SLF001


@pytest.mark.parametrize("family", ["marian", "t5"])
def test_int8_ops_sit_at_the_rounding_floor(prepared, family):
    """Every checked op of tflite-int8 computes its float counterpart up to int8 rounding (~0.29 LSB
    rms, 1/sqrt(12)); the measurement leaves the backend as it was."""
    bundle, be = prepared(family, "tflite-int8", **INT8)
    res, before, after, kernels = _numerics(bundle, be)
    assert after == before and kernels == "xnnpack"
    assert res["kernels"] == "builtin" and res["mode"] == "int8enc-requant-int8dec"
    for role, g in res["graphs"].items():
        assert g["ops_checked"] > 40, role
        assert g["defects"] == [], (role, g["defects"])
        assert 0.2 < g["rms_lsb_median"] < 0.35, (role, g["rms_lsb_median"])
        assert g["rms_lsb_max"] < DEFECT_RMS_LSB
        assert set(g["ops_not_checked"]) <= {"GATHER", "STRIDED_SLICE"}
    # the batch as deployed, then each sentence alone at its own length (saturation: live rows only)
    assert res["saturation_padding_rows"] is False
    assert res["graphs"]["encoder"]["invocations"] == 1 + len(SOURCES)
    steps = max(map(len, before)) + sum(map(len, before))
    assert steps <= res["graphs"]["decoder"]["invocations"] <= (1 + len(SOURCES)) * be.max_new_tokens


def test_op_location_reads_the_structural_scopes():
    """A converted tensor's name lists the TF ops fused into it; its location is the first that carries
    the graphs' scopes, with selective-float region scopes left out."""
    assert op_location("layer_3/ffn/fc2/MatMul1;layer_3/ffn/fc2/add") == "layer_3/ffn/fc2/MatMul1"
    assert op_location("Cast;layer_0/self_attn/norm/Rsqrt") == "layer_0/self_attn/norm/Rsqrt"
    assert op_location("layer_1/cross_attn/sqr_cross_attention/sqr_attention_softmax_2/Softmax") == \
        "layer_1/cross_attn/Softmax"
    assert op_location("PartitionedCall:4") == "PartitionedCall:4"  # no scope: the name itself
    assert op_location("MatMul_541") == "MatMul_541"  # an artifact built before the scopes


@pytest.mark.parametrize("family", ["marian", "t5"])
def test_rows_say_where_the_op_sits(prepared, family):
    """Every measured op is located by layer and block (or as a named graph output), so a report row
    points at the network, not at a converter tensor id."""
    bundle, be = prepared(family, "tflite-int8", **INT8)
    res, *_ = _numerics(bundle, be)
    where = [r["where"] for g in res["graphs"].values() for r in g["worst_error"] + g["most_saturated"]]
    assert where and all(re.match(r"(layer_\d+|decoder_layer_\d+|embed|final|lm_head|score_bias)/|output \w+$", w)
                         for w in where), where
    assert any("/ffn/fc" in w or "/norm/" in w for w in where), where


def test_naive_decoder_saturates_on_real_states(prepared):
    """The first-try recipe calibrates the decoder on BOS + zero states: on a real translation some
    of its tensors spend most values outside their range (the source-blind mechanism); the decoder-
    calibrated variant does not."""
    bundle, naive = prepared("marian", "tflite-int8-naive", **INT8)
    _, good = prepared("marian", "tflite-int8", **INT8)
    sat = {}
    for name, be in (("naive", naive), ("good", good)):
        res, *_ = _numerics(bundle, be)
        top = (res["graphs"]["decoder"]["most_saturated"] or [{"saturated": 0, "saturated_by_lsb": 0}])[0]
        sat[name] = (top["saturated"], top["saturated_by_lsb"])
    assert sat["naive"][0] > 0.5 > sat["good"][0], sat
    assert sat["naive"][1] > 0.5, sat  # how far beyond the range, in steps


def test_a_wrong_op_output_is_reported_as_a_defect(prepared):
    """An int8 op whose output is 3 steps off its inputs' float result is flagged with that bias
    (the op that produced it, and the next op that read the shifted values)."""
    bundle, be = prepared("marian", "tflite-int8", **INT8)
    path = be.artifacts.files["encoder"]
    run = TFLiteModel(path, 1, "builtin", preserve=True)
    enc = bundle.encode_sources(SOURCES[:2], be.max_source_length)
    S = be.max_source_length
    ids = np.full((2, S), bundle.conventions.pad_token_id, np.int32)
    mask = np.zeros((2, S), np.int32)
    ids[:, :enc.input_ids.shape[1]] = enc.input_ids
    mask[:, :enc.input_ids.shape[1]] = enc.attention_mask
    run.run({"input_ids": ids, "attention_mask": mask})
    interp = run.interp
    clean = OpNumerics(open(path, "rb").read())
    clean.observe(interp)
    assert clean.summary()["defects"] == []
    fc = [op for op in interp._get_ops_details() if op["op_name"] == "FULLY_CONNECTED"][1]  # noqa: SLF001
    out = fc["outputs"][0]
    q = interp.get_tensor(out).astype(np.int16)
    interp.set_tensor(out, np.clip(q + 3, -128, 127).astype(np.int8))
    bad = OpNumerics(open(path, "rb").read())
    bad.observe(interp)
    defects = {d["index"]: d for d in bad.summary()["defects"]}
    assert fc["index"] in defects
    d = defects[fc["index"]]
    assert d["op"] == "FULLY_CONNECTED" and d["bits"] == 8
    assert d["bias_lsb"] == pytest.approx(3.0, abs=0.3) and d["rms_lsb"] == pytest.approx(3.0, abs=0.3)


def test_thresholds_are_in_8_bit_steps():
    row = {"rms_lsb": 2.0, "bias_lsb": 0.0}
    assert is_defect({**row, "bits": 8})
    assert not is_defect({**row, "bits": 16})  # 2 int16 steps are 1/128 of an int8 step
    assert is_defect({"rms_lsb": 300.0, "bias_lsb": 0.0, "bits": 16})
    assert is_defect({"rms_lsb": 0.3, "bias_lsb": -0.9, "bits": 8})


def test_only_quantized_active_backends(prepared):
    bundle, fp32 = prepared("marian", "tflite-fp32-split")
    _, int8 = prepared("marian", "tflite-int8", **INT8)
    enc = bundle.encode_sources(SOURCES[:1], int8.max_source_length)
    assert not fp32.supports_op_numerics() and int8.supports_op_numerics()
    with pytest.raises(BackendStateError, match="activate"):
        int8.op_numerics(enc.input_ids, enc.attention_mask)
    with fp32, pytest.raises(InvalidInputError, match="not available"):
        fp32.op_numerics(enc.input_ids, enc.attention_mask)
    with int8, pytest.raises(InvalidInputError, match="max_new_tokens"):
        int8.op_numerics(enc.input_ids, enc.attention_mask, max_new_tokens=0)


def test_preserving_tensors_needs_the_builtin_kernels(prepared):
    _, be = prepared("marian", "tflite-int8", **INT8)
    with pytest.raises(InvalidInputError, match="XNNPACK"):
        TFLiteModel(be.artifacts.files["decoder"], 1, "xnnpack", preserve=True)
