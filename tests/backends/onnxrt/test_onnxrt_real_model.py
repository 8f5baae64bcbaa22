"""The default Marian en->de model: ONNX Runtime against PyTorch on the 1,000 test sentences."""
from __future__ import annotations

import gzip

import numpy as np
import pytest

from backends.base import CalibrationSet
from backends.model import ModelBundle
from backends.registry import get_backend

pytestmark = pytest.mark.slow


def _lines(path):
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        return [line.rstrip("\n") for line in fh]


@pytest.fixture(scope="module")
def real(default_model_dir, default_data_dir, tmp_path_factory):
    bundle = ModelBundle.load(default_model_dir)
    data = {"src": _lines(default_data_dir / "test_2016_flickr.en.gz"),
            "ref": _lines(default_data_dir / "test_2016_flickr.de.gz"),
            "cal": CalibrationSet(_lines(default_data_dir / "val.en.gz"), _lines(default_data_dir / "val.de.gz"),
                                  name="multi30k-val")}
    workdir = tmp_path_factory.mktemp("onnxrt-real")
    outputs = {}

    def translate(name):
        if name not in outputs:
            be = get_backend(name)
            be.prepare(bundle, workdir, data["cal"])
            with be:
                out = []
                for i in range(0, len(data["src"]), 32):
                    enc = bundle.encode_sources(data["src"][i:i + 32], be.max_source_length)
                    out += be.generate(enc.input_ids, enc.attention_mask, num_beams=1)
                enc = bundle.encode_sources(data["src"][:32], be.max_source_length)
                outputs[name] = (out, be.first_step_logits(enc.input_ids, enc.attention_mask))
        return outputs[name]

    return bundle, data, translate


def test_fp32_agrees_with_torch_on_99_percent(real):
    bundle, data, translate = real
    ref, ref_logits = translate("torch-fp32")
    out, logits = translate("onnx-fp32")
    assert len(out) == len(ref) == 1000
    agreement = np.mean([a == b for a, b in zip(out, ref)])
    assert agreement >= 0.99, agreement
    np.testing.assert_allclose(logits, ref_logits, atol=1e-3, rtol=1e-3)


def test_dynamic_int8_keeps_bleu(real):
    import sacrebleu

    bundle, data, translate = real
    fp32 = sacrebleu.corpus_bleu(bundle.decode(translate("torch-fp32")[0]), [data["ref"]]).score
    int8 = sacrebleu.corpus_bleu(bundle.decode(translate("onnx-dynamic-int8")[0]), [data["ref"]]).score
    assert int8 >= fp32 - 0.5, (int8, fp32)


def test_static_int8_numerics_on_the_real_model(default_model_dir, default_data_dir, tmp_path):
    """Per-op numerics of ORT's fused static INT8 graphs on 8 test sentences: every quantized op of the
    three components at the rounding floor, nothing clipped beyond a trace."""
    bundle = ModelBundle.load(default_model_dir)
    cal = CalibrationSet(_lines(default_data_dir / "val.en.gz"), _lines(default_data_dir / "val.de.gz"),
                         name="multi30k-val")
    be = get_backend("onnx-static-int8")
    be.prepare(bundle, tmp_path, cal)
    enc = bundle.encode_sources(_lines(default_data_dir / "test_2016_flickr.en.gz")[:8], be.max_source_length)
    with be:
        res = be.op_numerics(enc.input_ids, enc.attention_mask)
    for role, g in res["graphs"].items():
        assert g["ops_checked"] > 40 and g["defects"] == [], (role, g["defects"])
        assert g["rms_lsb_max"] < 0.35, (role, g["worst_error"][:1])
        assert all(r["saturated"] < 0.01 for r in g["most_saturated"]), (role, g["most_saturated"][:1])
