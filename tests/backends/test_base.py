import numpy as np
import pytest

from backends.base import CalibrationSet, select_batch, sha256_file
from backends.errors import BackendStateError, InvalidInputError
from backends.model import ModelBundle
from backends.registry import get_backend


@pytest.fixture()
def bundle(tiny_model):
    return ModelBundle.load(tiny_model("marian"))


def test_state_checks(bundle, tmp_path):
    be = get_backend("torch-fp32-split")
    with pytest.raises(BackendStateError):
        be.activate()
    be.prepare(bundle, tmp_path)
    with pytest.raises(BackendStateError, match="activate"):
        be.encode(np.ones((1, 3), dtype=np.int64), np.ones((1, 3), dtype=np.int64))
    with be:
        with pytest.raises(InvalidInputError):
            be.encode(np.ones((1, 3)), np.ones((1, 3)))  # float ids
        with pytest.raises(InvalidInputError):
            be.encode(np.ones((1, 3), dtype=np.int64), np.ones((1, 4), dtype=np.int64))
        with pytest.raises(InvalidInputError):
            be.generate(np.ones((1, 3), dtype=np.int64), np.ones((1, 3), dtype=np.int64), num_beams=0)


def test_artifact_cache_reuse_and_corruption(bundle, tmp_path):
    be = get_backend("torch-fp32-split")
    a1 = be.prepare(bundle, tmp_path)
    assert not a1.reused and a1.bytes > 0
    a2 = get_backend("torch-fp32-split").prepare(bundle, tmp_path)
    assert a2.reused and a2.cache_key == a1.cache_key
    # corrupt the artifact: the checksum catches it and prepare rebuilds
    path = next(iter(a2.files.values()))
    with open(path, "r+b") as fh:
        fh.write(b"X")
    a3 = get_backend("torch-fp32-split").prepare(bundle, tmp_path)
    assert not a3.reused
    # other settings -> other key
    a4 = get_backend("torch-fp32-split", max_source_length=32).prepare(bundle, tmp_path)
    assert a4.cache_key != a1.cache_key


def test_artifacts_carry_the_content_digest_of_every_file(bundle, tmp_path):
    """What a baseline compares across machines: the bytes built, not only the inputs (cache key)."""
    built = get_backend("torch-fp32-split").prepare(bundle, tmp_path)
    assert set(built.sha256) == set(built.files) and built.sha256
    for role, path in built.files.items():
        assert built.sha256[role] == sha256_file(path)
    reused = get_backend("torch-fp32-split").prepare(bundle, tmp_path)
    assert reused.reused and reused.sha256 == built.sha256
    assert reused.to_dict()["sha256"] == built.sha256


def test_signature(bundle, tmp_path):
    be = get_backend("torch-fp32", threads=1)
    be.prepare(bundle, tmp_path)
    sig = be.signature().to_dict()
    assert sig["runtime"] == "torch" and sig["threads"] == 1 and sig["precision"] == "fp32"
    assert sig["short"].startswith("be:torch-fp32|rt:torch-")


def test_select_batch_nested():
    obj = {"a": np.arange(6).reshape(3, 2), "b": [np.arange(3), (np.arange(3) * 2,)]}
    out = select_batch(obj, np.array([2, 0]))
    assert out["a"].tolist() == [[4, 5], [0, 1]] and out["b"][1][0].tolist() == [4, 0]


def test_calibration_set_validation():
    with pytest.raises(InvalidInputError):
        CalibrationSet(["a"], [])
