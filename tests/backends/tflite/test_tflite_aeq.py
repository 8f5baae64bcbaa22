"""The ai-edge-quantizer path (quantizer="ai_edge_quantizer") on a tiny random Marian model."""
from __future__ import annotations

import json

import numpy as np
import pytest

from backends.errors import InvalidInputError
from backends.registry import get_backend
from tests.backends.tflite.conftest import OPTS, SOURCES, translate, valid_ids

pytest.importorskip("ai_edge_quantizer")

AEQ = {"calibration_sources": 8}


def test_aeq_int8_is_strict_and_source_sensitive(prepared):
    bundle, be = prepared("marian", "tflite-int8-aeq", **AEQ)
    extra = be.artifacts.extra
    assert extra["quantizer"] == "ai_edge_quantizer"
    assert be.signature().quantization["quantizer"] == "ai_edge_quantizer"
    for role in ("encoder", "decoder"):
        audit, report = extra["ops"][role], extra["ai_edge_quantizer"][role]
        assert report["recipe"] == "a8w8" and report["calibration_samples"] > 0
        assert report["folded_float_ops"] > 0  # AEQ left the mask's REDUCE_MAX in float; we folded it
        assert audit["float_compute_ops"] == 0, audit["float_op_counts"]
        assert audit["op_counts"].get("DEQUANTIZE", 0) == 0
        assert set(audit["io"]["inputs"].values()) <= {"int8", "int32"}
        assert set(audit["io"]["outputs"].values()) == {"int8"}
        assert any(o["op"] == "REDUCE_MAX" and o["inputs"][0] == "int8" for o in audit["ops"])
        assert any(o["op"] == "FULLY_CONNECTED" and o["outputs"] == ["int8"] for o in audit["ops"])
    assert extra["full_int8"] is True
    gen = json.loads(open(be.artifacts.files["generation"]).read())
    assert all(b["decoder_input"]["dtype"] == "int8" for b in gen["boundary"])
    out = translate(bundle, be)
    assert len(out) == len(SOURCES) and valid_ids(out, bundle.normalized.vocab_size)
    enc = bundle.encode_sources(SOURCES, be.max_source_length)
    with be:
        logits = be.first_step_logits(enc.input_ids, enc.attention_mask)
    assert np.isfinite(logits).all()
    # the decoder is not source-blind: different sources give different first-step logits
    assert np.abs(logits - logits[0]).max(axis=-1)[1:].min() > 0


def test_aeq_unfolded_audit_reports_float_islands(prepared):
    """Without the fold, AEQ's float REDUCE_MAX (between DEQUANTIZE/QUANTIZE) is float compute."""
    _, be = prepared("marian", "tflite-int8-aeq", aeq_fold_float_max=False, **AEQ)
    extra = be.artifacts.extra
    assert extra["full_int8"] is False
    for role in ("encoder", "decoder"):
        counts = extra["ops"][role]["float_op_counts"]
        assert counts.get("REDUCE_MAX", 0) > 0 and counts.get("DEQUANTIZE", 0) > 0
        assert extra["ai_edge_quantizer"][role]["folded_float_ops"] == 0


def test_fold_is_exact(prepared):
    """The folded and unfolded encoders give the same int8 outputs (max commutes with quantization)."""
    from backends.tflite.runtime import TFLiteModel

    bundle, folded = prepared("marian", "tflite-int8-aeq", **AEQ)
    _, raw = prepared("marian", "tflite-int8-aeq", aeq_fold_float_max=False, **AEQ)
    enc = bundle.encode_sources(SOURCES, OPTS["max_source_length"])
    S = OPTS["max_source_length"]
    ids = np.full((len(SOURCES), S), bundle.conventions.pad_token_id, np.int32)
    mask = np.zeros((len(SOURCES), S), np.int32)
    ids[:, :enc.input_ids.shape[1]], mask[:, :enc.input_ids.shape[1]] = enc.input_ids, enc.attention_mask
    a = TFLiteModel(folded.artifacts.files["encoder"], 1).run({"input_ids": ids, "attention_mask": mask})
    b = TFLiteModel(raw.artifacts.files["encoder"], 1).run({"input_ids": ids, "attention_mask": mask})
    for name in a:
        assert np.abs(a[name].astype(np.int32) - b[name]).max() <= 1  # at most one rounding step


def test_unknown_quantizer_is_a_clear_error(tiny_model, tmp_path):
    from backends.model import ModelBundle
    from tests.backends.tflite.conftest import CALIBRATION

    be = get_backend("tflite-int8", quantizer="tflite_lite_converter", **OPTS)
    with pytest.raises(InvalidInputError, match="quantizer 'tflite_lite_converter' unknown.*ai_edge_quantizer"):
        be.prepare(ModelBundle.load(tiny_model("marian")), tmp_path, CALIBRATION)


def test_aeq_rejects_what_it_cannot_do(tiny_model, tmp_path):
    from backends.model import ModelBundle
    from tests.backends.tflite.conftest import CALIBRATION

    bundle = ModelBundle.load(tiny_model("marian"))
    for opts, msg in (({"quantization": "dynamic"}, "supports quantization"),
                      ({"calibration_method": "kl"}, "unknown for ai_edge_quantizer"),
                      ({"aeq_algorithm": "gptq"}, "aeq_algorithm 'gptq' unknown")):
        be = get_backend("tflite-int8-aeq", **{**OPTS, **opts})
        with pytest.raises(InvalidInputError, match=msg):
            be.prepare(bundle, tmp_path, CALIBRATION)


def test_aeq_16x8_is_strict_integer(prepared):
    """AEQ's a16w8 recipe: int16 activations everywhere, no float op (unlike the converter's 16x8)."""
    bundle, be = prepared("marian", "tflite-int8-aeq", quantization="int16x8", calibration_method="ema",
                          encoder_calibration_method=None, **AEQ)
    extra = be.artifacts.extra
    for role in ("encoder", "decoder"):
        audit = extra["ops"][role]
        assert extra["ai_edge_quantizer"][role]["recipe"] == "a16w8"
        assert audit["float_compute_ops"] == 0, audit["float_op_counts"]
        assert set(audit["io"]["outputs"].values()) == {"int16"}
    assert extra["full_int8"] is False  # strict integer, but 16-bit activations: not "full INT8"
    assert valid_ids(translate(bundle, be), bundle.normalized.vocab_size)


def test_mixed_int16_norm_chain_is_integer_only_not_full_int8(prepared):
    """aeq_int16_ops: the named op types get int16 activations, the matmuls stay int8, nothing is float."""
    bundle, be = prepared("marian", "tflite-int8-mixed16", **AEQ)
    extra = be.artifacts.extra
    assert extra["integer_only"] is True and extra["full_int8"] is False
    assert be.signature().precision == "int8+int16"
    assert be.signature().quantization["int16_ops"]["decoder"] == ["ADD", "SUB", "MUL", "MEAN", "RSQRT"]
    assert be.signature().quantization["activations"] == "int8+int16"
    for role in ("encoder", "decoder"):
        audit = extra["ops"][role]
        assert audit["float_compute_ops"] == 0, audit["float_op_counts"]
        assert audit["activation_dtypes"] == ["int16", "int8"]
        assert any(o["op"] == "RSQRT" and o["outputs"] == ["int16"] for o in audit["ops"])
        assert any(o["op"] == "FULLY_CONNECTED" and o["outputs"] == ["int8"] for o in audit["ops"])
    out = translate(bundle, be)
    assert len(out) == len(SOURCES) and valid_ids(out, bundle.normalized.vocab_size)


def test_mixed_int16_per_graph_and_bad_ops(prepared, tiny_model, tmp_path):
    from backends.model import ModelBundle
    from tests.backends.tflite.conftest import CALIBRATION

    _, be = prepared("marian", "tflite-int8-mixed16", aeq_int16_ops={"encoder": ["RSQRT"]}, **AEQ)
    ops = be.artifacts.extra["ops"]
    assert ops["decoder"]["full_int8"] is True and ops["encoder"]["activation_dtypes"] == ["int16", "int8"]
    bundle = ModelBundle.load(tiny_model("marian"))
    for opts, message in (({"aeq_int16_ops": ["REDUCE_MAX", "NOPE"]}, r"cannot quantize \['NOPE', 'REDUCE_MAX'\].*RSQRT"),
                          ({"aeq_int16_ops": {"encoder": ["ADD"], "logits": ["ADD"]}}, "keys must be"),
                          ({"quantization": "int16x8"}, "needs quantization 'int8'"),
                          ({"quantizer": "tflite_converter"}, "needs quantizer 'ai_edge_quantizer'")):
        bad = get_backend("tflite-int8-mixed16", **{**OPTS, **AEQ, **opts})
        with pytest.raises(InvalidInputError, match=message):
            bad.prepare(bundle, tmp_path, CALIBRATION)
