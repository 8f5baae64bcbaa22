"""INT8 variants on tiny random models: they quantize for real, run, and emit valid ids."""
from __future__ import annotations

import numpy as np
import pytest

from backends.base import CalibrationSet
from backends.errors import InvalidInputError
from backends.model import ModelBundle
from backends.onnxrt.cpu import cpu_flags, detect_preset, resolve_preset
from backends.registry import get_backend
from tests.backends.onnxrt.conftest import OPTS, SOURCES

INT8 = ("onnx-dynamic-int8", "onnx-static-int8")
#: op types that prove a graph was quantized: integer kernels (dynamic) or Q/DQ pairs (static)
QUANT_OPS = {"onnx-dynamic-int8": {"DynamicQuantizeLinear", "MatMulInteger"},
             "onnx-static-int8": {"QuantizeLinear", "DequantizeLinear"}}


def _check_ids(out, n, vocab):
    assert len(out) == n
    for row in out:
        assert all(isinstance(t, int) and 0 <= t < vocab for t in row)


@pytest.mark.parametrize("family", ("marian", "bart", "t5"))
@pytest.mark.parametrize("name", INT8)
def test_int8_runs_and_is_quantized(prepared, family, name):
    bundle, be = prepared(family, name)
    for role, comp in be.artifacts.extra["components"].items():
        assert QUANT_OPS[name] <= set(comp["ops"]), f"{role} of {name} has no quantized ops: {comp['ops']}"
    assert be.artifacts.bytes < be.artifacts.extra["fp32_bytes"]
    enc = bundle.encode_sources(SOURCES, OPTS["max_source_length"])
    with be:
        greedy = be.generate(enc.input_ids, enc.attention_mask, num_beams=1)
        beam = be.generate(enc.input_ids, enc.attention_mask, num_beams=2)
        logits = be.first_step_logits(enc.input_ids, enc.attention_mask)
    vocab = bundle.conventions.vocab_size
    _check_ids(greedy, len(SOURCES), vocab)
    _check_ids(beam, len(SOURCES), vocab)
    assert sum(len(r) for r in greedy) > 0
    assert logits.shape == (len(SOURCES), vocab) and np.isfinite(logits).all()
    assert np.abs(logits[0] - logits[1]).max() > 0  # still source-dependent


def test_int8_first_step_logits_track_fp32(prepared):
    """Quantized logits are close to FP32's, not merely finite (cosine per row)."""
    bundle, fp32 = prepared("marian", "onnx-fp32")
    enc = bundle.encode_sources(SOURCES, OPTS["max_source_length"])
    with fp32:
        ref = fp32.first_step_logits(enc.input_ids, enc.attention_mask)
    for name in INT8:
        _, be = prepared("marian", name)
        with be:
            q = be.first_step_logits(enc.input_ids, enc.attention_mask)
        cos = (q * ref).sum(1) / (np.linalg.norm(q, axis=1) * np.linalg.norm(ref, axis=1))
        assert cos.min() > 0.9, (name, cos)
        assert not np.array_equal(q, ref)  # and they are not the FP32 graph


def test_dynamic_signature_records_preset(prepared):
    _, be = prepared("marian", "onnx-dynamic-int8")
    q = be.signature().quantization
    preset, _ = detect_preset()
    assert q["mode"] == "dynamic" and q["preset"] == preset and q["per_channel"] is True
    assert q["format"] == "QOperator" and "MatMul" in q["op_types"]
    assert be.settings()["resolved"]["preset"] == preset  # part of the cache key


def test_static_signature_records_calibration(prepared):
    _, be = prepared("bart", "onnx-static-int8")
    q = be.signature().quantization
    assert q["mode"] == "static" and q["format"] == "QDQ" and q["calibration_method"] == "MinMax"
    assert q["preset"] == detect_preset()[0] and q["op_types"] == ["MatMul", "Gather"]
    # attention-score MatMuls (both inputs activations) are kept FP32 and counted
    assert q["activation_matmuls_kept_fp32"]["encoder"] > 0
    cal = q["calibration"]
    assert cal["set"] == "tiny-calibration" and cal["sentences"] == 6
    # the decoder-with-past was calibrated on recorded generation steps, the decoder on several prefixes
    assert cal["feeds"]["encoder"] == 2 and cal["feeds"]["decoder_with_past"] >= 2
    assert len(cal["decoder_prefix_lengths"]) > 2
    assert be.uses_calibration()


@pytest.mark.parametrize("method", ("entropy", "percentile"))
def test_static_calibration_methods(prepared, method):
    bundle, be = prepared("marian", "onnx-static-int8", calibration_method=method)
    _, minmax = prepared("marian", "onnx-static-int8")
    assert be.artifacts.cache_key != minmax.artifacts.cache_key
    assert be.signature().quantization["calibration_method"] == method.capitalize()
    enc = bundle.encode_sources(SOURCES[:2], OPTS["max_source_length"])
    with be:
        _check_ids(be.generate(enc.input_ids, enc.attention_mask), 2, bundle.conventions.vocab_size)


def test_calibration_changes_the_cache_key(tiny_model, prepared, onnx_workdir):
    bundle, be = prepared("marian", "onnx-static-int8")
    other = CalibrationSet(["Hello world."] * 3, ["Hallo Welt."] * 3, name="other")
    be2 = get_backend("onnx-static-int8", **OPTS, calibration_size=3, calibration_batch_size=3)
    art = be2.prepare(bundle, onnx_workdir / "marian", other)
    assert not art.reused and art.cache_key != be.artifacts.cache_key


def test_user_errors(tiny_model, tmp_path):
    bundle = ModelBundle.load(tiny_model("marian"))
    with pytest.raises(InvalidInputError, match="calibration set"):
        get_backend("onnx-static-int8", **OPTS).prepare(bundle, tmp_path, None)
    with pytest.raises(InvalidInputError, match="calibration_method"):
        get_backend("onnx-static-int8", calibration_method="kl").quantization_settings()
    with pytest.raises(InvalidInputError, match="graph_optimization"):
        get_backend("onnx-fp32", graph_optimization="max")
    with pytest.raises(InvalidInputError, match="preset"):
        resolve_preset("avx9000")


@pytest.mark.parametrize("flags,machine,expected", [
    ({"avx2", "avx512f", "avx512_vnni"}, "x86_64", "avx512_vnni"),
    ({"avx2", "avx512f"}, "x86_64", "avx512"),
    ({"avx2", "fma"}, "x86_64", "avx2"),
    (set(), "aarch64", "arm64"),
    ({"sse4_2"}, "x86_64", "avx2"),
])
def test_preset_detection(flags, machine, expected):
    assert detect_preset(flags, machine)[0] == expected


def test_cpu_flags_parsing(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu sse avx2 avx512f avx512_vnni\n\nprocessor\t: 1\n")
    assert cpu_flags(info) == {"fpu", "sse", "avx2", "avx512f", "avx512_vnni"}
    assert cpu_flags(tmp_path / "missing") == set()


def test_package_import_is_light():
    import subprocess
    import sys

    code = ("import sys, backends.onnxrt as p; "
            "assert {b['name'] for b in p.BACKENDS} == {'onnx-fp32','onnx-dynamic-int8','onnx-static-int8'}; "
            "heavy = [m for m in ('onnxruntime','onnx','torch','optimum') if m in sys.modules]; "
            "assert not heavy, heavy")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=str(__import__("pathlib").Path(__file__).parents[3]))


@pytest.mark.parametrize("name", INT8)
def test_boundary_modes_swap_components(prepared, name):
    """fp32enc-fp32dec reproduces onnx-fp32 exactly; the default mode is the INT8 graph itself."""
    bundle, be = prepared("marian", name)
    _, fp32 = prepared("marian", "onnx-fp32")
    assert "int8enc-raw-int8dec" not in be.boundary_modes()
    enc = bundle.encode_sources(SOURCES, OPTS["max_source_length"])
    with fp32:
        ref = fp32.first_step_logits(enc.input_ids, enc.attention_mask)
    with be:
        own = be.first_step_logits(enc.input_ids, enc.attention_mask)
        rows = {}
        for mode in be.boundary_modes():
            be.set_boundary_mode(mode)
            rows[mode] = be.first_step_logits(enc.input_ids, enc.attention_mask)
        be.set_boundary_mode(None)
        assert np.array_equal(be.first_step_logits(enc.input_ids, enc.attention_mask), own)
    np.testing.assert_array_equal(rows["fp32enc-fp32dec"], ref)
    np.testing.assert_array_equal(rows["int8enc-requant-int8dec"], own)
    assert not np.array_equal(rows["int8enc-dequant-fp32dec"], ref)  # the INT8 encoder is in use
    assert not np.array_equal(rows["fp32enc-quant-int8dec"], own)  # the FP32 encoder is in use
    with pytest.raises(InvalidInputError):
        be.set_boundary_mode("int8enc-raw-int8dec")
