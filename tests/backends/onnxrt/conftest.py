"""Session-scoped ONNX Runtime artifacts for the tiny models: export once, quantize once."""
from __future__ import annotations

import pytest

from backends.base import CalibrationSet
from backends.model import ModelBundle
from backends.registry import get_backend

SOURCES = ["A man is riding a bicycle down the street.", "Two dogs play in the snow.",
           "A woman in a red coat reads a book.", "Children are running on the beach at sunset.",
           "An old man sits on a bench.", "The cat sleeps."]
CALIBRATION = CalibrationSet(
    sources=["A girl jumps into the lake.", "Three people walk along a busy road.", "A dog catches a ball.",
             "A man plays guitar on a stage in front of a crowd.", "Two women talk.", "Boys kick a football."],
    targets=["Ein Mädchen springt in den See.", "Drei Menschen gehen eine belebte Straße entlang.",
             "Ein Hund fängt einen Ball.", "Ein Mann spielt Gitarre auf einer Bühne vor einer Menge.",
             "Zwei Frauen reden.", "Jungen kicken einen Fußball."],
    name="tiny-calibration")
#: small decode budget: random tiny models rarely emit EOS
OPTS = {"max_new_tokens": 10, "max_source_length": 32}
STATIC_OPTS = {"calibration_size": 6, "calibration_batch_size": 3}


@pytest.fixture(scope="session")
def onnx_workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("onnxrt-artifacts")


@pytest.fixture(scope="session")
def prepared(tiny_model, onnx_workdir):
    """``prepared(family, backend_name, **options) -> (bundle, backend)`` prepared once per session."""
    cache: dict = {}

    def get(family: str, name: str, **options):
        key = (family, name, tuple(sorted(options.items())))
        if key not in cache:
            bundle = ModelBundle.load(tiny_model(family))
            extra = dict(STATIC_OPTS) if name == "onnx-static-int8" else {}
            be = get_backend(name, **{**OPTS, **extra, **options})
            be.prepare(bundle, onnx_workdir / family, CALIBRATION)
            cache[key] = (bundle, be)
        return cache[key]

    return get
