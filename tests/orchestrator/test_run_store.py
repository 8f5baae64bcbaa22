"""Run store: atomic writes, fingerprint-checked reads, code digests."""
import json

from orchestrator.run_store import RunStore, atomic_write_json, code_digest, digest, read_json


def test_atomic_write_leaves_no_temp_and_replaces(tmp_path):
    p = tmp_path / "x" / "r.json"
    atomic_write_json(p, {"a": 1})
    atomic_write_json(p, {"a": 2})
    assert json.loads(p.read_text()) == {"a": 2}
    assert [f.name for f in p.parent.iterdir()] == ["r.json"]


def test_unreadable_json_reads_as_missing(tmp_path):
    p = tmp_path / "r.json"
    p.write_text('{"status": "ok", "resu')  # torn write of an older tool version
    assert read_json(p) is None


def test_suite_record_reused_only_with_same_fingerprint(tmp_path):
    store = RunStore(tmp_path)
    store.write_suite("b", "quality", {"status": "ok", "fingerprint": "f1", "result": {"bleu": 1.0}})
    assert store.read_suite("b", "quality", "f1")["result"] == {"bleu": 1.0}
    assert store.read_suite("b", "quality", "f2") is None
    store.clear_backend("b")
    assert store.read_suite("b", "quality") is None


def test_digests_are_stable_and_code_sensitive():
    assert digest({"a": 1, "b": [1, 2]}) == digest({"b": [1, 2], "a": 1})
    assert code_digest("orchestrator.run_store") != code_digest("orchestrator.data")
    assert code_digest("no.such.module") == code_digest("no.such.module")


def test_log_tail_truncates_long_lines(tmp_path):
    store = RunStore(tmp_path)
    store.log_path("b").parent.mkdir(parents=True)
    store.log_path("b").write_text("first\n" + "x" * 1000 + "\nlast\n")
    tail = store.log_tail("b")
    assert tail[-1] == "last" and len(tail[-2]) < 400


def test_run_lock_excludes_a_second_writer(tmp_path):
    import pytest

    from orchestrator.errors import RunDirError
    from orchestrator.run_store import RunLock

    with RunLock(tmp_path):
        with pytest.raises(RunDirError, match="in use by pid"):
            with RunLock(tmp_path):
                pass
    with RunLock(tmp_path):  # released
        pass


def test_numpy_values_are_stored_as_numbers(tmp_path):
    import numpy as np

    p = tmp_path / "r.json"
    atomic_write_json(p, {"bleu": np.float32(25.5), "n": np.int64(3), "arr": np.arange(3), "path": tmp_path})
    back = read_json(p)
    assert back == {"bleu": 25.5, "n": 3, "arr": [0, 1, 2], "path": str(tmp_path)}
