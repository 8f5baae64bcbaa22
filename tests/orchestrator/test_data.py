"""Data validation: every bad-input case gives an actionable error naming the file and line."""
import gzip

import pytest

from backends.errors import SeqquantError
from orchestrator.data import DEFAULT_SRC, load_calibration, load_parallel, read_lines
from orchestrator.errors import DataError


def write(path, lines, raw=None):
    path.write_bytes(raw if raw is not None else ("\n".join(lines) + "\n").encode("utf-8"))
    return path


def test_reads_gzip_default_test_set():
    lines = read_lines(DEFAULT_SRC)
    assert len(lines) == 1000 and all(lines)


def test_gz_and_plain_give_same_lines(tmp_path):
    plain = write(tmp_path / "a.txt", ["Ein Hund.", "Zwei Katzen."])
    gz = tmp_path / "a.txt.gz"
    gz.write_bytes(gzip.compress(plain.read_bytes()))
    assert read_lines(plain) == read_lines(gz) == ["Ein Hund.", "Zwei Katzen."]


def test_line_count_mismatch_names_both_files_and_counts(tmp_path):
    src = write(tmp_path / "s.en", ["a", "b", "c"])
    ref = write(tmp_path / "r.de", ["x", "y"])
    with pytest.raises(DataError) as e:
        load_parallel(src, ref)
    msg = str(e.value)
    assert "3 lines" in msg and "2" in msg and str(src) in msg and str(ref) in msg


def test_empty_lines_error_names_line_numbers(tmp_path):
    src = write(tmp_path / "s.en", ["a", "", "c", "d"])
    ref = write(tmp_path / "r.de", ["x", "y", "z", " "])
    with pytest.raises(DataError) as e:
        load_parallel(src, ref)
    assert "2, 4" in str(e.value) and "--skip-empty" in str(e.value)


def test_skip_empty_drops_pairs_and_counts_them(tmp_path):
    src = write(tmp_path / "s.en", ["a", "", "c", "d"])
    ref = write(tmp_path / "r.de", ["x", "y", "z", " "])
    data = load_parallel(src, ref, skip_empty=True)
    assert data.sources == ["a", "c"] and data.references == ["x", "z"]
    assert data.skipped_empty == [2, 4] and data.line_numbers == [1, 3]
    assert data.describe()["skipped_empty_lines"] == 2


def test_non_utf8_bytes_error_with_line_number(tmp_path):
    src = write(tmp_path / "s.en", None, raw="ok\nalso ok\ncaf\xe9\n".encode("latin-1"))
    ref = write(tmp_path / "r.de", ["x", "y", "z"])
    with pytest.raises(DataError) as e:
        load_parallel(src, ref)
    assert "line(s) 3" in str(e.value) and "UTF-8" in str(e.value)


def test_missing_file_and_truncated_gzip(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        read_lines(tmp_path / "nope.en")
    gz = tmp_path / "cut.en.gz"
    gz.write_bytes(gzip.compress(b"a\nb\n" * 100)[:20])
    with pytest.raises(DataError, match="gzip"):
        read_lines(gz)


def test_limit_keeps_first_pairs_and_fingerprint_changes(tmp_path):
    src = write(tmp_path / "s.en", ["a", "b", "c"])
    ref = write(tmp_path / "r.de", ["x", "y", "z"])
    full, two = load_parallel(src, ref), load_parallel(src, ref, limit=2)
    assert two.sources == ["a", "b"] and full.fingerprint != two.fingerprint


def test_calibration_pool_default_and_errors_are_user_errors(tmp_path):
    from orchestrator.data import DEFAULT_CAL_REF, DEFAULT_CAL_SRC

    cal, data = load_calibration(DEFAULT_CAL_SRC, DEFAULT_CAL_REF, 50)
    assert len(cal.sources) == 50 == len(cal.targets)
    assert issubclass(DataError, SeqquantError)
