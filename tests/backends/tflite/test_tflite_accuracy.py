"""Accuracy tools of the int8 TFLite path: exact rewrites (stream and FFN balancing) leave the
FP32 function unchanged; the new calibration options stay strict INT8."""
from __future__ import annotations

import json

import numpy as np
import pytest

from backends.errors import InvalidInputError, UnsupportedModelError
from backends.model import ModelBundle
from backends.registry import get_backend
from tests.backends.tflite.conftest import CALIBRATION, OPTS, SOURCES, translate

INT8 = {"calibration_sources": 8}


def _graphs(tiny_model, family, **spec):
    from dataclasses import replace

    bundle = ModelBundle.load(tiny_model(family))
    be = get_backend("tflite-int8", **OPTS)
    g = be._graphs(bundle)
    if spec:
        g = type(g)(g.w, g.cfg, replace(g.spec, **spec))
    return bundle, be, g


def _samples(bundle, be, g, n=4):
    from backends.tflite.calibration import CalibrationRecorder

    rec = CalibrationRecorder(bundle, g, g.encoder_function(), g.decoder_function(), batch=2)
    return rec.encoder_samples(CALIBRATION, n), list(rec.decoder_samples(CALIBRATION, n, "real", 2))[:3]


def _run(g, enc, dec):
    tf = g.tf
    e = g.encoder_body({k: tf.constant(v) for k, v in enc.items()})
    d = g.decoder_body({k: tf.constant(v) for k, v in dec.items()})
    return {k: v.numpy() for k, v in e.items()}, {k: v.numpy() for k, v in d.items()}


def _assert_same_function(g, rewritten, enc, dec):
    """The rewritten graphs give the original encoder and decoder outputs (FP32, two batches)."""
    for e, d in zip(enc[:2], dec[:2]):
        a_enc, a_dec = _run(g, e, d)
        b_enc, b_dec = _run(rewritten, e, d)
        for k in a_enc:
            np.testing.assert_allclose(b_enc[k], a_enc[k], rtol=1e-4, atol=1e-4)
        for k in a_dec:
            np.testing.assert_allclose(b_dec[k], a_dec[k], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("family", ["marian", "bart"])
def test_stream_balancing_is_exact_in_fp32(tiny_model, family):
    """Post-LN stream balancing (basis, folded gamma/beta) computes the same function."""
    from backends.tflite.balance import BalancedNorm, balance_weights, record_stream_absmax, stream_basis

    bundle, be, g = _graphs(tiny_model, family)
    enc, dec = _samples(bundle, be, g)
    absmax = record_stream_absmax(g, enc, dec)
    assert len(absmax) == 2 * len(g.w.enc_layers) + 3 * len(g.w.dec_layers) + (
        (g.w.enc_ln_emb is not None) + (g.w.dec_ln_emb is not None))
    basis = stream_basis(absmax, 0.5)
    assert basis.min() >= 1.0 and basis.max() > 1.0  # some channels really are scaled
    w = balance_weights(g.w, g.cfg, basis)
    assert all(isinstance(layer["ln_ffn"], BalancedNorm) for layer in w.enc_layers + w.dec_layers)
    _assert_same_function(g, type(g)(w, g.cfg, g.spec), enc, dec)


def test_stream_balancing_rejects_pre_ln(tiny_model):
    from backends.tflite.balance import balance_weights

    bundle = ModelBundle.load(tiny_model("mbart"))
    g = get_backend("tflite-int8", **OPTS)._graphs(bundle)
    with pytest.raises(UnsupportedModelError):
        balance_weights(g.w, g.cfg, np.ones(g.D, np.float32))


def test_ffn_balancing_is_exact_in_fp32(tiny_model):
    """FFN intermediates carried divided by per-channel scales (swish as zs * sigmoid(zs * s))."""
    from backends.tflite.balance import balance_ffn, ffn_scales, record_ffn_absmax

    bundle, be, g = _graphs(tiny_model, "marian")
    assert g.cfg.activation.lower() in ("swish", "silu")
    enc, dec = _samples(bundle, be, g)
    absmax = record_ffn_absmax(g, enc, dec)
    assert len(absmax) == len(g.w.enc_layers) + len(g.w.dec_layers)
    w = balance_ffn(g.w, g.cfg, absmax)
    assert all("ffn_scale" in layer for layer in w.enc_layers + w.dec_layers)
    assert all("ffn_scale" not in layer for layer in g.w.enc_layers)  # the input weights are untouched
    _assert_same_function(g, type(g)(w, g.cfg, g.spec), enc, dec)
    s = ffn_scales(np.array([4.0, 1.0, 0.001, 2.0]))
    np.testing.assert_allclose(s * 255, np.round(s * 255), atol=1e-4)  # on the int8 constant grid
    assert s.max() == 1.0 and s.min() == pytest.approx(1 / 255)


def test_mse_range_is_the_least_error_range():
    """mse_range never loses to min-max and matches a brute-force search over shrunk ranges."""
    from backends.tflite.convert import _int8_mse, mse_range

    v = np.random.default_rng(0).standard_t(3, 20000).astype(np.float32)
    lo, hi = float(v.min()), float(v.max())
    mlo, mhi = mse_range(v, lo, hi)
    assert lo <= mlo <= 0.0 <= mhi <= hi
    best = _int8_mse(v, mlo, mhi)
    grid = np.linspace(0.2, 1.0, 33)
    brute = min(_int8_mse(v, lo * a, hi * b) for a in grid for b in grid)
    assert best <= _int8_mse(v, lo, hi) and best <= 1.02 * brute


def test_valid_part_shapes():
    from backends.tflite.convert import _valid_part

    mask = np.array([[1, 1, 0], [1, 0, 0]], bool)
    assert _valid_part(np.zeros((6, 4)), mask).shape == (3, 4)
    assert _valid_part(np.zeros((2, 3, 4)), mask).shape == (3, 4)
    assert _valid_part(np.zeros((2, 5, 3, 7)), mask).shape == (3, 5, 7)
    assert _valid_part(np.zeros((2, 4)), mask).shape == (2, 4)  # not row-shaped: unchanged
    assert _valid_part(np.zeros((6, 4)), None).shape == (6, 4)


def test_accuracy_options_stay_strict(prepared):
    """Balanced streams and FFNs, mse ranges and valid-row encoder ranges: still strict INT8."""
    opts = dict(stream_balance=0.9, ffn_balance=True, calibration_method="mse",
                encoder_calibration_method="percentile", encoder_percentile=99.99, encoder_valid_rows=True,
                **INT8)
    bundle, be = prepared("marian", "tflite-int8", **opts)
    extra = be.artifacts.extra
    assert extra["full_int8"] is True, {k: v["float_op_counts"] for k, v in extra["ops"].items()}
    assert extra["balance"]["stream"]["channels_scaled"] >= 0 and extra["balance"]["ffn"]["layers"] > 0
    out = translate(bundle, be)
    assert len(out) == len(SOURCES) and all(0 <= t < bundle.normalized.vocab_size for r in out for t in r)


@pytest.mark.parametrize("family", ["mbart", "bart"])
def test_balancing_skips_what_it_cannot_rewrite(prepared, family):
    """Pre-LN stacks keep their streams, gelu FFNs keep their intermediates; still strict and running."""
    bundle, be = prepared(family, "tflite-int8", stream_balance=0.9, ffn_balance=True, **INT8)
    info = be.artifacts.extra["balance"]
    if family == "mbart":
        assert "skipped" in info["stream"]
    else:
        assert "channels_scaled" in info["stream"]
    assert "skipped" in info["ffn"]  # both tiny models use gelu
    assert be.artifacts.extra["full_int8"] is True
    assert len(translate(bundle, be)) == len(SOURCES)


def test_stream_balance_quantile_is_validated_before_any_work():
    with pytest.raises(InvalidInputError, match="stream_balance"):
        get_backend("tflite-int8", stream_balance=1.5)._check_options()
