"""Per-op numerics of ONNX Runtime's static INT8 graphs (backends/onnxrt/numerics.py): the fused graph
ORT builds, run as saved with its measured tensors exposed, while the tiny models translate."""
from __future__ import annotations

import numpy as np
import pytest

from backends.errors import InvalidInputError
from backends.numerics import DEFECT_RMS_LSB
from backends.onnxrt.numerics import CHECKED_OPS, OrtOpNumerics, _where, observed_sessions
from tests.backends.onnxrt.conftest import SOURCES
from tests.fixtures.numerics import numerics_between_translations


def _numerics(bundle, backend):
    # the state afterwards: which sessions the backend runs
    return numerics_between_translations(bundle, backend, SOURCES,
                                         lambda b: dict(b._sessions.sessions))  # noqa: SLF001


@pytest.mark.parametrize("family,options", [("marian", {}), ("t5", {}),
                                            ("marian", {"quantize_activation_matmuls": True})])
def test_static_int8_ops_sit_at_the_rounding_floor(prepared, family, options):
    """Every fused QLinearMatMul and every QuantizeLinear of the three components computes its float
    counterpart up to rounding; the backend runs its own sessions again afterwards. With the attention
    matmuls quantized too, both operands of Q.K^T and P.V are activations the graph must expose."""
    bundle, be = prepared(family, "onnx-static-int8", **options)
    res, before, after, sessions = _numerics(bundle, be)
    assert after == before
    assert all(type(s).__name__ == "InferenceSession" for s in sessions.values())
    assert set(res["graphs"]) == {"encoder", "decoder", "decoder_with_past"}
    assert res["mode"] == "int8enc-requant-int8dec" and "graph optimization 'all'" in res["kernels"]
    seen = set()
    for role, g in res["graphs"].items():
        assert g["ops_checked"] > 3, role
        assert g["defects"] == [], (role, g["defects"])
        assert 0.2 < g["rms_lsb_median"] < 0.35 and g["rms_lsb_max"] < DEFECT_RMS_LSB, (role, g)
        seen |= {r["op"] for r in g["worst_error"]}
        assert all(r["where"] and not r["where"].startswith("/") for r in g["worst_error"]), g["worst_error"]
    assert "QLinearMatMul" in seen  # the fused kernels are what is measured, not the QDQ pattern
    # the batch once, then each sentence alone: one encoder run per sentence plus the batch
    assert res["graphs"]["encoder"]["invocations"] == 1 + len(SOURCES)


def test_a_shifted_output_is_flagged(prepared, tmp_path):
    """The accounting on a real fused graph: an output off by +3 steps shows as a defect with bias 3."""
    import onnx

    bundle, be = prepared("marian", "onnx-static-int8")
    session, stats = observed_sessions(be.artifacts.files, ("encoder",), 1, "all", tmp_path)["encoder"]
    fused = onnx.load(tmp_path / "encoder.fused.onnx")
    node = next(n for n in fused.graph.node if n.op_type == "QLinearMatMul")
    real_observe = stats.observe

    def shifted(values):
        q = values[node.output[0]]
        lo, hi = np.iinfo(q.dtype).min, np.iinfo(q.dtype).max
        values[node.output[0]] = np.clip(q.astype(np.int64) + 3, lo, hi).astype(q.dtype)
        real_observe(values)

    session._observer = shifted  # noqa: SLF001
    enc = bundle.encode_sources(SOURCES[:2], be.max_source_length)
    session.run(None, {"input_ids": enc.input_ids, "attention_mask": enc.attention_mask})
    g = stats.summary()
    flagged = {r["where"]: r for r in g["defects"]}
    assert list(flagged) == [_where(node.name)], flagged
    assert flagged[_where(node.name)]["bias_lsb"] == pytest.approx(3.0, abs=0.3)


def test_checked_and_unchecked_node_types():
    """QLinearMatMul/Add/Mul and QuantizeLinear are modelled; other quantized nodes are counted as not
    checked rather than skipped silently."""
    from onnx import TensorProto, helper, numpy_helper

    inits = [numpy_helper.from_array(np.array(0.1, np.float32), "s"),
             numpy_helper.from_array(np.array(0, np.int8), "z"),
             numpy_helper.from_array(np.ones((4, 4), np.int8), "w")]
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["xq"], name="/in/q"),
             helper.make_node("QLinearMatMul", ["xq", "s", "z", "w", "s", "z", "s", "z"], ["y"], name="/mm"),
             helper.make_node("QLinearSoftmax", ["y", "s", "z", "s", "z"], ["p"], name="/sm",
                              domain="com.microsoft"),
             # an output scale computed at run time (a graph input here): not modelled
             helper.make_node("QLinearMatMul", ["xq", "s", "z", "w", "s", "z", "ys", "z"], ["y2"], name="/mm2")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("p", TensorProto.INT8, [1, 4])], inits)
    st = OrtOpNumerics(helper.make_model(graph))
    assert set(CHECKED_OPS) >= {"QLinearMatMul", "QuantizeLinear"}
    assert st.summary()["ops_not_checked"] == {"QLinearMatMul": 1, "QLinearSoftmax": 1}
    assert st.exposed == ["x", "xq", "y"]  # each checked node's output and activation input
    x = np.array([[0.1, -0.2, 0.33, 20.0]], np.float32)  # 20.0 is beyond the int8 range (12.7)
    xq = np.clip(np.round(x / 0.1), -128, 127).astype(np.int8)
    y = np.clip(np.round((xq.astype(np.float64) * 0.1) @ np.ones((4, 4)) / 0.1), -128, 127).astype(np.int8)
    st.observe({"x": x, "xq": xq, "y": y})
    rows = {r["where"]: r for r in st.summary()["worst_error"]}
    assert set(rows) == {"x", "mm"}
    assert rows["x"]["saturated"] == pytest.approx(0.25) and rows["x"]["rms_lsb"] < 0.5
    assert rows["mm"]["op"] == "QLinearMatMul" and rows["mm"]["bits"] == 8


def test_not_available_for_float_or_dynamic(prepared):
    for name in ("onnx-fp32", "onnx-dynamic-int8"):
        bundle, be = prepared("marian", name)
        assert not be.supports_op_numerics()
        enc = bundle.encode_sources(SOURCES[:1], be.max_source_length)
        with be, pytest.raises(InvalidInputError, match="not available"):
            be.op_numerics(enc.input_ids, enc.attention_mask)
