"""Session-scoped TFLite artifacts for the tiny models: convert once, quantize once."""
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
             "A man plays guitar on a stage in front of a crowd.", "Two women talk.", "Boys kick a football.",
             "A chef cooks in a small kitchen.", "People wait for the bus in the rain."],
    targets=["Ein Mädchen springt in den See.", "Drei Menschen gehen eine belebte Straße entlang.",
             "Ein Hund fängt einen Ball.", "Ein Mann spielt Gitarre auf einer Bühne vor einer Menge.",
             "Zwei Frauen reden.", "Jungen kicken einen Fußball.", "Ein Koch kocht in einer kleinen Küche.",
             "Menschen warten im Regen auf den Bus."],
    name="tiny-calibration")
#: small static shapes: random tiny models rarely emit EOS
OPTS = {"max_new_tokens": 10, "max_source_length": 24}


@pytest.fixture(scope="session")
def tflite_workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("tflite-artifacts")


@pytest.fixture(scope="session")
def prepared(tiny_model, tflite_workdir):
    """``prepared(family, backend_name, **options) -> (bundle, backend)``, prepared once per session."""
    cache: dict = {}

    def get(family: str, name: str, **options):
        key = (family, name, repr(sorted(options.items())))
        if key not in cache:
            bundle = ModelBundle.load(tiny_model(family))
            be = get_backend(name, **{**OPTS, **options})
            be.prepare(bundle, tflite_workdir / family, CALIBRATION)
            cache[key] = (bundle, be)
        return cache[key]

    return get


def translate(bundle, backend, sources=SOURCES, num_beams=1):
    enc = bundle.encode_sources(sources, backend.max_source_length)
    with backend:
        return backend.generate(enc.input_ids, enc.attention_mask, num_beams=num_beams)


def valid_ids(outputs, vocab: int) -> bool:
    """Every generated token id is inside the vocabulary."""
    return all(0 <= t < vocab for row in outputs for t in row)
