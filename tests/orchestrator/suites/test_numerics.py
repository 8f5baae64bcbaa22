"""The numerics suite on a real tiny tflite-int8 run: what it records, which backends it applies to,
its options, the report table and the evidence a failing verdict gets from it."""
from __future__ import annotations

import copy

import pytest

from backends.errors import InvalidInputError
from orchestrator.attribution import _numerics_ev
from orchestrator.report_tables import numerics_table
from orchestrator.suites.base import SuiteContext, get_suite
from tests.backends.tflite.conftest import CALIBRATION, OPTS, SOURCES


@pytest.fixture(scope="module")
def int8_result(tiny_model, tmp_path_factory):
    from backends.model import ModelBundle
    from backends.registry import get_backend

    bundle = ModelBundle.load(tiny_model("marian"))
    be = get_backend("tflite-int8", **OPTS, calibration_sources=8)
    work = tmp_path_factory.mktemp("numerics")
    be.prepare(bundle, work / "artifacts", CALIBRATION)
    suite = get_suite("numerics")
    ctx = SuiteContext(model=bundle, sources=SOURCES, references=SOURCES, outdir=work / "out",
                       suite_options={"sentences": 3})
    with be:
        assert suite.supports(be)
        return suite.run(be, ctx)


def test_run_records_both_graphs(int8_result):
    r = int8_result
    assert r["sentences"] == 3 and r["kernels"] == "builtin"
    assert set(r["graphs"]) == {"encoder", "decoder"}
    m = r["metrics"]
    assert m["numerics_defects"] == 0
    assert 0.2 < m["numerics_rms_lsb_max"] < 1.0
    assert 0.0 <= m["numerics_saturated_max"] <= 1.0


def test_not_applicable_to_float_backends():
    from backends.registry import get_backend

    suite = get_suite("numerics")
    assert not suite.supports(get_backend("torch-fp32"))
    assert not suite.supports(get_backend("tflite-fp32-split"))


def test_options_are_checked():
    suite = get_suite("numerics")
    assert suite.options({}, "[suites.numerics]") == {"sentences": 8}
    with pytest.raises(InvalidInputError, match="sentences must be >= 1"):
        suite.options({"sentences": 0}, "[suites.numerics]")
    with pytest.raises(InvalidInputError, match="unknown option"):
        suite.options({"steps": 3}, "[suites.numerics]")


def _report(result):
    return {"backends": {"tflite-int8": {"status": "ok", "suites": {"numerics": result}}}}


def test_report_table_and_verdict_evidence(int8_result):
    title, header, rows = numerics_table(_report(int8_result))
    assert "rounding" in title and header[0] == "backend"
    assert [r[:2] for r in rows] == [["tflite-int8", "encoder"], ["tflite-int8", "decoder"]]
    assert all(r[-1] == "none" for r in rows)
    ev = _numerics_ev(_report(int8_result), "tflite-int8")
    assert ev[0]["metric"] == "numerics_rms_lsb_max" and "within rounding" in ev[0]["note"]

    broken = copy.deepcopy(int8_result)
    row = dict(broken["graphs"]["decoder"]["worst_error"][0], rms_lsb=4.0, bias_lsb=3.9)
    broken["graphs"]["decoder"]["defects"] = [row]
    _, _, rows = numerics_table(_report(broken))
    assert row["where"].startswith(("layer_", "output ")), row  # located by layer and block
    assert f"{row['op']} {row['where']}: 4.00 LSB" in rows[1][-1]  # located in the network, not by tensor id
    ev = _numerics_ev(_report(broken), "tflite-int8")
    assert ev[0]["metric"] == "numerics_defects" and ev[0]["value"] == 1
    assert ev[0]["worst"] == f"decoder {row['op']} {row['where']}"
    saved_before = {k: v for k, v in row.items() if k != "where"}  # a report saved before rows had "where"
    saved_before["tensor"] = "MatMul_541"
    broken["graphs"]["decoder"]["defects"] = [saved_before]
    assert f"{row['op']} MatMul_541: 4.00 LSB" in numerics_table(_report(broken))[2][1][-1]
    assert _numerics_ev({"backends": {"x": {"status": "ok", "suites": {}}}}, "x") == []


def test_small_saturation_shares_stay_visible():
    """A share under 0.1% (ONNX Runtime's min-max ranges clip ~1e-4 of values) is not printed as 0.0%."""
    from orchestrator.report_tables import _op_text

    row = {"op": "QuantizeLinear", "where": "layers.0/self_attn/MatMul_1", "saturated": 7.9e-05,
           "saturated_by_lsb": 2.26}
    assert _op_text(row, "saturated") == "QuantizeLinear layers.0/self_attn/MatMul_1: 0.008%, by 2.3 LSB"
    assert _op_text({**row, "saturated": 0.0336}, "saturated").endswith(": 3.4%, by 2.3 LSB")
    assert _op_text({**row, "saturated": 0.0}, "saturated").endswith(": 0.0%, by 2.3 LSB")
