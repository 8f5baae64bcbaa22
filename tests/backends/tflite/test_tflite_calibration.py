"""Decoder calibration samples (backends/tflite/calibration.py) on a tiny Marian model."""
from __future__ import annotations

import numpy as np

from backends.model import ModelBundle
from backends.registry import get_backend
from tests.backends.tflite.conftest import CALIBRATION, OPTS


def _recorder(tiny_model, **kw):
    from backends.tflite.calibration import CalibrationRecorder

    bundle = ModelBundle.load(tiny_model("marian"))
    g = get_backend("tflite-int8", **OPTS)._graphs(bundle)
    return CalibrationRecorder(bundle, g, g.encoder_function(), g.decoder_function(), batch=2, **kw)


def _flat(batches):
    return [(k, b[k]) for b in batches for k in sorted(b)]


def test_every_pass_sees_the_same_decoder_samples(tiny_model):
    """The converter's min-max calibration and the percentile/mse range pass each iterate the
    samples once: both must get the same states, in the same order (random positions included)."""
    rec = _recorder(tiny_model)
    first = list(rec.decoder_samples(CALIBRATION, 8, "real", 8))
    second = list(rec.decoder_samples(CALIBRATION, 8, "real", 8))
    assert len(first) == len(second) > 1
    for (ka, a), (kb, b) in zip(_flat(first), _flat(second)):
        assert ka == kb
        np.testing.assert_array_equal(a, b)


def test_the_seed_chooses_the_positions(tiny_model):
    """Another seed draws other positions/order (the samples are not fixed by accident)."""
    a = list(_recorder(tiny_model, seed=0).decoder_samples(CALIBRATION, 8, "real", 8))
    b = list(_recorder(tiny_model, seed=1).decoder_samples(CALIBRATION, 8, "real", 8))
    assert any(not np.array_equal(x, y) for (_, x), (_, y) in zip(_flat(a), _flat(b)))
