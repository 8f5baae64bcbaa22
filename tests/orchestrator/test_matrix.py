"""Matrix files: the shipped ones parse; invalid ones name the file, line or key and the valid keys."""
import re

import pytest

from orchestrator.config import resolve_config
from orchestrator.errors import MatrixError, SettingsError
from orchestrator.matrix import DEFAULT_MATRIX, MATRICES_DIR, load_constraints, load_matrix, load_table


def test_shipped_matrices_parse():
    default = load_matrix(DEFAULT_MATRIX)
    assert {"torch-fp32", "torch-fp32-split", "tflite-int8", "ct2-int8"} <= set(default.backends)
    assert "tflite-int16x8" not in default.backends and default.overrides["tflite-int16x8"]["limit"] <= 100
    assert default.suites == ["quality", "split-generation", "source-sensitivity", "speed", "numerics"]
    assert default.missing_backends == "skip" and default.reference == "torch-fp32"
    smoke = load_matrix(MATRICES_DIR / "smoke.toml")
    assert smoke.settings["limit"] == 20 and "torch-fp32" in smoke.backends
    rescue = load_matrix(MATRICES_DIR / "rescue.toml")  # one variant per region (+ combinations), all run
    from backends.tflite.graphs import REGIONS

    assert set(rescue.variants) <= set(rescue.backends)
    assert {v["base"] for v in rescue.variants.values()} == {"tflite-int8"}
    singles = [v["options"]["float_regions"] for v in rescue.variants.values() if len(v["options"]["float_regions"]) == 1]
    assert sorted(r for regions in singles for r in regions) == sorted(REGIONS)
    kernels = load_matrix(MATRICES_DIR / "kernels.toml")  # every LiteRT kernel choice, on int8 and fp32
    from backends.tflite.runtime import KERNELS

    assert set(kernels.variants) <= set(kernels.backends)
    ran = {(v["base"], v["options"]["kernels"]) for v in kernels.variants.values()}
    assert {k for _, k in ran} | {"xnnpack"} == set(KERNELS)
    assert {"tflite-int8", "tflite-fp32-split"} <= set(kernels.backends)


def test_toml_syntax_error_names_file_and_line(tmp_path):
    m = tmp_path / "bad.toml"
    m.write_text('[run]\nbackends = ["torch-fp32"\nsuites = ["quality"]\n')
    with pytest.raises(MatrixError) as e:
        load_matrix(m)
    assert str(m) in str(e.value) and "line 3" in str(e.value)


def test_unknown_key_lists_valid_keys(tmp_path):
    m = tmp_path / "bad.toml"
    m.write_text('[settings]\nnum_beam = 4\n')
    with pytest.raises(MatrixError) as e:
        load_matrix(m)
    msg = str(e.value)
    assert "'num_beam'" in msg and "num_beams" in msg and "[settings]" in msg and str(m) in msg


def test_unknown_top_level_table_and_override_key(tmp_path):
    m = tmp_path / "bad.toml"
    m.write_text('[runn]\nbackends = []\n')
    with pytest.raises(MatrixError, match="'runn'.*valid keys"):
        load_matrix(m)
    m.write_text('[overrides."ct2-int8"]\nlimitt = 3\n')
    with pytest.raises(MatrixError, match=r'overrides\."ct2-int8".*limitt'):
        load_matrix(m)


@pytest.mark.parametrize("body,needle", [
    ('[settings]\nnum_beams = 0\n', "out of range"),
    ('[settings]\nnum_beams = "4"\n', "must be int"),
    ('[settings]\nstrict_length = 1\n', "must be bool"),
    ('[settings]\nlimit = -1\n', "out of range"),
    ('[run]\nmissing_backends = "ignore"\n', "missing_backends"),
    ('[run]\nbackends = [1, 2]\n', "list of names"),
    ('schema = 2\n', "schema"),
    ('[variants."v"]\noptions = {}\n', "'base' must name a registered backend"),
    ('[variants."v"]\nbase = "torch-fp32"\noptions = 3\n', "'options' must be a table"),
    ('[variants."v"]\nbase = "torch-fp32"\nopts = {}\n', "unknown key(s) 'opts'"),
    ('[variants]\nv = 1\n', "must be a table with 'base'"),
])
def test_bad_values(tmp_path, body, needle):
    m = tmp_path / "bad.toml"
    m.write_text(body)
    with pytest.raises(MatrixError, match=re.escape(needle)):
        load_matrix(m)


def test_missing_matrix_file(tmp_path):
    with pytest.raises(MatrixError, match="does not exist"):
        load_matrix(tmp_path / "nope.toml")


def test_paths_relative_to_matrix_and_cli_overrides(tmp_path):
    m = tmp_path / "m.toml"
    m.write_text('[run]\nbackends = ["torch-fp32"]\n[data]\nsrc = "s.en"\nref = "r.de"\n'
                 '[settings]\nlimit = 5\nnum_beams = 2\n[overrides.torch-fp32]\nlimit = 3\nthreads = 1\n')
    cfg = resolve_config({"matrix": str(m), "num_beams": 4})
    assert cfg.src == tmp_path / "s.en" and cfg.ref == tmp_path / "r.de"
    assert cfg.settings["num_beams"] == 4 and cfg.settings["limit"] == 5
    assert cfg.backend_settings("torch-fp32")["limit"] == 3
    assert cfg.backend_options("torch-fp32")["threads"] == 1
    assert cfg.backends == ["torch-fp32"] and not cfg.backends_from_cli


@pytest.mark.parametrize("key,value,flag", [("limit", -1, "--limit"), ("num_beams", 0, "--num-beams"),
                                            ("num_beams", 17, "--num-beams"), ("batch_size", 0, "--batch-size"),
                                            ("max_new_tokens", 0, "--max-new-tokens"), ("timeout", 0.0, "--timeout")])
def test_cli_settings_out_of_range(key, value, flag):
    with pytest.raises(SettingsError) as e:
        resolve_config({key: value})
    assert flag in str(e.value) and "out of range" in str(e.value)


def test_src_without_ref_is_an_error():
    with pytest.raises(SettingsError, match="--src and --ref"):
        resolve_config({"src": "a.en"})


def test_constraints_file_table_or_top_level(tmp_path):
    a = tmp_path / "a.toml"
    a.write_text('[constraints]\nruntimes = ["tflite"]\n')
    b = tmp_path / "b.toml"
    b.write_text('runtimes = ["tflite"]\nmax_bytes = 1000\n')
    assert load_constraints(a) == {"runtimes": ["tflite"]}
    assert load_constraints(b)["max_bytes"] == 1000
    c = tmp_path / "c.toml"
    c.write_text('runtimes = ["tflite"]\nmax_bytes = = 3\n')
    with pytest.raises(MatrixError, match="line"):
        load_constraints(c)
    # a matrix file without the table: the defaults ({}), not its other tables taken for constraint keys
    m = tmp_path / "m.toml"
    m.write_text('schema = 1\n[run]\nbackends = ["torch-fp32"]\n')
    assert load_constraints(m) == {} and load_table(m, "bar") == {}
    assert load_table(DEFAULT_MATRIX, "bar") == {"max_bleu_drop": 1.0}
    d = tmp_path / "d.toml"
    d.write_text('[bar]\nmin_int8_agreement = 0.8\n[constraints]\nruntimes = ["tflite"]\n')
    assert load_table(d, "bar") == {"min_int8_agreement": 0.8} and load_constraints(d) == {"runtimes": ["tflite"]}


def test_per_backend_suite_options(tmp_path):
    m = tmp_path / "m.toml"
    m.write_text('[suites.speed]\nlatency_n = 6\nwarmup = 1\n'
                 '[overrides."torch-fp32-split"]\nlimit = 4\n[overrides."torch-fp32-split".suites.speed]\nlatency_n = 5\n')
    cfg = resolve_config({"matrix": str(m)})
    assert cfg.suite_options("torch-fp32-split", "speed") == {"latency_n": 5, "warmup": 1}
    assert cfg.suite_options("torch-fp32", "speed") == {"latency_n": 6, "warmup": 1}
    assert cfg.suite_options("torch-fp32-split", "quality") == {}
    assert "suites" not in cfg.backend_settings("torch-fp32-split")  # not a run setting
    assert cfg.backend_settings("torch-fp32-split")["limit"] == 4
    m.write_text('[overrides."torch-fp32-split"]\nsuites = { speed = 5 }\n')
    with pytest.raises(MatrixError, match=r"one table of suite options per suite"):
        load_matrix(m)


def test_per_backend_suite_options_reach_that_backend_only(tiny_model, tmp_path):
    """Through the engine: the override changes what that backend's suite measures, nobody else's."""
    import json

    from orchestrator.cli_app import main

    m = tmp_path / "m.toml"
    m.write_text('[suites.speed]\nlatency_n = 6\nwarmup = 1\nthroughput_n = 4\nthroughput_batch = 2\n'
                 '[overrides."torch-fp32-split".suites.speed]\nlatency_n = 5\n')
    out = tmp_path / "run"
    argv = ["compare", "--matrix", str(m), "--model", str(tiny_model("marian")), "--backends",
            "torch-fp32,torch-fp32-split", "--limit", "8", "--max-new-tokens", "6", "--suites", "speed",
            "--timeout", "240", "--out", str(out), "--cache-dir", str(tmp_path / "cache"), "--quiet"]
    assert main(argv) in (0, 3)
    report = json.loads((out / "report.json").read_text())
    speed = {n: report["backends"][n]["suites"]["speed"] for n in ("torch-fp32", "torch-fp32-split")}
    assert speed["torch-fp32"]["latency_n"] == 6 and speed["torch-fp32-split"]["latency_n"] == 5


def test_variants_parse_and_register(tmp_path):
    from backends import registry
    from orchestrator.matrix import register_variants

    m = tmp_path / "m.toml"
    m.write_text('[variants."torch-split-v"]\nbase = "torch-fp32-split"\noptions = { batch_hint = 3 }\n')
    matrix = load_matrix(m)
    assert matrix.variants == {"torch-split-v": {"base": "torch-fp32-split", "options": {"batch_hint": 3},
                                                 "description": ""}}
    register_variants(matrix)
    register_variants(matrix)  # the same variant again: a no-op
    entry, base = registry.get_entry("torch-split-v"), registry.get_entry("torch-fp32-split")
    assert entry.target == base.target and entry.requires == base.requires
    assert entry.options == {**base.options, "batch_hint": 3} and "torch-fp32-split" in entry.description
    # a registered name with other options, or an unknown base: clear errors naming the table
    m.write_text('[variants."tflite-int8"]\nbase = "torch-fp32"\n')
    with pytest.raises(MatrixError, match=r'\[variants."tflite-int8"\].*already registered'):
        register_variants(load_matrix(m))
    m.write_text('[variants."x-v"]\nbase = "no-such-backend"\n')
    with pytest.raises(MatrixError, match=r'\[variants."x-v"\]: base: Unknown backend'):
        register_variants(load_matrix(m))


def test_variant_runs_through_the_engine(tiny_model, tmp_path):
    """A matrix-defined variant (tflite-int8 with its layer norms in float) runs like a registered backend."""
    import json

    from orchestrator.cli_app import main

    m = tmp_path / "m.toml"
    m.write_text('[run]\nbackends = ["torch-fp32", "tflite-int8-lnfloat"]\nsuites = ["quality"]\n'
                 '[variants."tflite-int8-lnfloat"]\nbase = "tflite-int8"\ndescription = "layer norms in float"\n'
                 'options = { float_regions = ["layer_norm"], calibration_sources = 8 }\n')
    out = tmp_path / "run"
    argv = ["compare", "--matrix", str(m), "--model", str(tiny_model("marian")), "--limit", "4",
            "--max-new-tokens", "6", "--max-source-length", "24", "--timeout", "600", "--out", str(out),
            "--cache-dir", str(tmp_path / "cache"), "--quiet"]
    assert main(argv) in (0, 3)
    report = json.loads((out / "report.json").read_text())
    rec = report["backends"]["tflite-int8-lnfloat"]
    assert rec["status"] == "ok", rec.get("reason")
    assert rec["signature"]["quantization"]["float_regions"] == ["layer_norm"]
    assert rec["signature"]["precision"] == "int8-mixed"
    assert rec["artifacts"]["full_int8"] is False
    assert rec["artifacts"]["float_regions"]["encoder"]["layer_norm"] > 0
