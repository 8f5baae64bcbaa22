"""INT8 graphs that XNNPACK can run: zero-point-0 right-hand operands for the attention matmuls
(``symmetric_matmul_rhs``). Correctness only (which ops, which quantization), never timing."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from backends.errors import InvalidInputError
from backends.registry import get_backend
from tests.backends.tflite.conftest import OPTS, SOURCES, translate

INT8 = {"calibration_sources": 8}


def _matmul_rhs_zero_points(path) -> list[int]:
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_path=str(path))
    quant = {t["index"]: t["quantization"] for t in interp.get_tensor_details()}
    return [int(quant[op["inputs"][1]][1]) for op in interp._get_ops_details()  # noqa: SLF001
            if op["op_name"] == "BATCH_MATMUL"]


def _delegate_partitions(path) -> int:
    """Delegate kernels the default (XNNPACK) delegate adds: one per run of ops it took."""
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_path=str(path), num_threads=2)
    before = interp._interpreter.NumNodes()  # noqa: SLF001 - nodes only; delegation happens at allocation
    interp.allocate_tensors()
    return interp._interpreter.NumNodes() - before  # noqa: SLF001


@pytest.mark.parametrize("family", ["marian", "t5"])
def test_symmetric_all_zero_points_and_no_boundary_requant(prepared, family):
    bundle, be = prepared(family, "tflite-int8", symmetric_matmul_rhs="all", **INT8)
    files, extra = be.artifacts.files, be.artifacts.extra
    assert extra["full_int8"] is True
    for role in ("encoder", "decoder"):
        zps = _matmul_rhs_zero_points(files[role])
        assert zps and set(zps) == {0}, (role, zps)
    gen = json.loads(Path(files["generation"]).read_text())
    for b in gen["boundary"]:  # cross K/V: zero point 0 on both sides, nothing to requantize
        assert b["encoder_output"]["zero_point"] == 0 == b["decoder_input"]["zero_point"]
        assert b["encoder_output"]["scale"] == pytest.approx(b["decoder_input"]["scale"], rel=1e-5)
    for c in gen["cache"]["tensors"]:  # the cache shares the new K/V's (symmetric) quantization
        assert c["input"]["zero_point"] == 0 and not c["requantize"]
    assert be.quantization_settings()["symmetric_matmul_rhs"] == "all"
    out = translate(bundle, be)
    assert len(out) == len(SOURCES) and all(0 <= t < bundle.normalized.vocab_size for r in out for t in r)


def test_symmetric_matmuls_are_delegated(prepared):
    """XNNPACK takes an int8 BATCH_MATMUL only with a zero-point-0 right-hand side: with it, the
    builtin islands between delegated runs shrink, so the delegate creates fewer partitions."""
    _, base = prepared("marian", "tflite-int8", symmetric_matmul_rhs="none", **INT8)
    _, sym = prepared("marian", "tflite-int8", symmetric_matmul_rhs="all", **INT8)
    assert set(_matmul_rhs_zero_points(base.artifacts.files["encoder"])) != {0}  # tiny model: asymmetric K/V
    for role in ("encoder", "decoder"):
        assert _delegate_partitions(sym.artifacts.files[role]) < _delegate_partitions(base.artifacts.files[role])


def test_symmetric_encoder_only_leaves_the_decoder_alone(prepared):
    _, base = prepared("marian", "tflite-int8", symmetric_matmul_rhs="none", **INT8)
    _, enc = prepared("marian", "tflite-int8", symmetric_matmul_rhs="encoder", **INT8)
    assert set(_matmul_rhs_zero_points(enc.artifacts.files["encoder"])) == {0}
    dec = Path(enc.artifacts.files["decoder"]).read_bytes()
    assert dec == Path(base.artifacts.files["decoder"]).read_bytes()


def test_tflite_int8_default_is_encoder_symmetric():
    assert get_backend("tflite-int8", **OPTS).options["symmetric_matmul_rhs"] == "encoder"


def test_symmetric_option_is_validated(tiny_model, tmp_path):
    from backends.base import CalibrationSet
    from backends.model import ModelBundle

    be = get_backend("tflite-int8", symmetric_matmul_rhs="yes", **OPTS)
    with pytest.raises(InvalidInputError, match="symmetric_matmul_rhs"):
        be.prepare(ModelBundle.load(tiny_model("marian")), tmp_path, CalibrationSet(["a b"], ["c d"], "x"))
    fp32 = get_backend("tflite-fp32-split", symmetric_matmul_rhs="all", **OPTS)
    assert "symmetric_matmul_rhs" not in fp32.settings()  # does not change FP32 artifacts
