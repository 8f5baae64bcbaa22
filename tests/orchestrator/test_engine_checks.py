"""What ``compare`` checks before any backend process starts (``engine.check_inputs``, ``config``): every
mistake a worker would otherwise find late — or not at all — is exit code 2 with every reason at once, and
``--dry-run`` checks the same things."""
import json
from pathlib import Path

import pytest

from orchestrator.cli_app import main
from orchestrator.config import resolve_config
from orchestrator.isolation import Outcome


def err_of(capsys) -> str:
    out = capsys.readouterr()
    return " ".join((out.err + out.out).split())  # rich wraps long lines


@pytest.fixture
def dry(tiny_model, tmp_path):
    """``compare --dry-run`` on the tiny Marian model (no backend process), with a matrix body."""
    def run(*args, matrix: str | None = None) -> int:
        argv = ["compare", "--model", str(tiny_model("marian")), "--backends", "torch-fp32,onnx-fp32",
                "--suites", "quality", "--limit", "3", "--dry-run", "--quiet", *args]
        if matrix is not None:
            m = tmp_path / "m.toml"
            m.write_text(matrix)
            argv += ["--matrix", str(m)]
        return main(argv)
    return run


def test_the_fixture_itself_is_accepted(dry, capsys):
    assert dry() == 0, err_of(capsys)


def test_suite_option_tables_are_checked_all_at_once(dry, capsys):
    matrix = ('[suites.quality]\nbogus_option = 1\nalpha = "x"\n[suites.qualityy]\nx = 1\n'
              '[overrides."torch-fp32".suites.quality]\nbootstrap_metrics = ["ter"]\n')
    assert dry(matrix=matrix) == 2
    msg = err_of(capsys)
    assert "[suites.quality]" in msg and "bogus_option" in msg and "alpha must be a finite number" in msg
    assert "no suite 'qualityy'" in msg
    assert '[overrides."torch-fp32".suites.quality]' in msg and "bootstrap_metrics" in msg


def test_suite_options_of_a_suite_not_in_this_run_are_not_judged(dry, capsys):
    # the matrix may configure a suite this run leaves out (--suites quality): its name must exist, no more
    assert dry(matrix="[suites.speed]\nwarmup = 1\n") == 0, err_of(capsys)


def test_bad_backend_options_are_bad_input_not_a_backend_failure(dry, capsys):
    matrix = ('[overrides."torch-fp32".options]\nbogus_opt = 1\n'
              '[overrides."onnx-fp32".options]\ngraph_optimization = "fastest"\n')
    assert dry(matrix=matrix) == 2
    msg = err_of(capsys)
    assert "torch-fp32" in msg and "bogus_opt" in msg and "graph_optimization" in msg


def test_a_variant_with_a_bad_option_is_rejected(tiny_model, tmp_path, capsys):
    m = tmp_path / "v.toml"
    m.write_text('[run]\nbackends = ["onnx-x"]\n[variants."onnx-x"]\nbase = "onnx-fp32"\noptions = { bogus = 1 }\n')
    assert main(["compare", "--model", str(tiny_model("marian")), "--matrix", str(m), "--suites", "quality",
                 "--dry-run", "--quiet"]) == 2
    assert "onnx-x" in err_of(capsys)


def test_overrides_of_an_unregistered_backend(dry, capsys):
    assert dry(matrix='[overrides."torch-fp32x"]\nlimit = 3\n') == 2
    assert '[overrides."torch-fp32x"]: no backend of that name' in err_of(capsys)


def test_unknown_reference_is_an_error(dry, capsys):
    assert dry("--reference", "torch-fp3") == 2
    assert "reference backend 'torch-fp3' is not a registered backend" in err_of(capsys)


def test_static_lengths_beyond_the_position_table(dry, capsys):
    assert dry("--max-source-length", "200", "--max-new-tokens", "300") == 2  # the tiny model has 128
    msg = err_of(capsys)
    assert "max_source_length = 200 exceeds the model's 128 source positions" in msg
    assert "max_new_tokens = 300 exceeds the model's 128 target positions" in msg


def test_tolerance_and_rank_metrics_must_exist(dry, capsys):
    assert dry(matrix="[tolerances]\nbleuu = 1\n") == 2
    assert "[tolerances] bleuu: not a metric" in err_of(capsys)
    assert dry(matrix='[constraints]\nrank_by = ["latncy_p50"]\n') == 2
    assert "latncy_p50" in err_of(capsys)


def test_dry_run_checks_source_lengths(dry, tmp_path, capsys):
    src, ref = tmp_path / "s.en", tmp_path / "r.de"
    src.write_text("A dog runs.\n" + "A very long sentence " * 10 + "\n")
    ref.write_text("Ein Hund rennt.\nEin langer Satz.\n")
    args = ("--src", str(src), "--ref", str(ref), "--max-source-length", "8")
    assert dry(*args) == 0  # truncation is a counted warning in a run
    assert dry(*args, "--strict-length") == 2
    assert "1 source(s) exceed the static source length 8" in err_of(capsys)


def test_strict_length_covers_a_backend_specific_source_length(dry, tmp_path, capsys):
    src, ref = tmp_path / "s.en", tmp_path / "r.de"
    src.write_text("A dog runs in the park with a ball.\n")
    ref.write_text("Ein Hund rennt.\n")
    matrix = '[overrides."onnx-fp32".options]\nmax_source_length = 4\n'
    assert dry("--src", str(src), "--ref", str(ref), "--strict-length", matrix=matrix) == 2
    assert "static source length of onnx-fp32 4" in err_of(capsys)


@pytest.mark.parametrize("args,needle", [
    (["--calibration-src", "x.en"], "--calibration-src and --calibration-ref go together"),
    (["--ref", "x.de"], "--src and --ref go together"),
    (["--timeout", "nan"], "'timeout' must be a finite number"),
    (["--timeout", "inf"], "'timeout' must be a finite number"),
    (["--suites", ","], "--suites is empty"),
    (["--backends", ""], "--backends is empty"),
])
def test_flag_mistakes(args, needle, capsys):
    assert main(["compare", "--dry-run", "--quiet", *args]) == 2
    assert needle in err_of(capsys)


def test_out_must_not_be_a_file(tmp_path, capsys):
    f = tmp_path / "f"
    f.write_text("")
    assert main(["compare", "--dry-run", "--quiet", "--out", str(f)]) == 2
    assert "is a file" in err_of(capsys)


def test_the_timeout_message_names_where_the_timeout_came_from(tmp_path):
    m = tmp_path / "m.toml"
    m.write_text('[settings]\ntimeout = 100\n[overrides."onnx-fp32"]\ntimeout = 3\n')
    cfg = resolve_config({"matrix": str(m), "limit": 5})
    assert cfg.setting_source("onnx-fp32", "timeout") == '[overrides."onnx-fp32"] timeout'
    assert cfg.setting_source("torch-fp32", "timeout") == "[settings] timeout"
    assert cfg.setting_source("torch-fp32", "limit") == "--limit"
    assert cfg.setting_source("torch-fp32", "threads").startswith("the default threads")
    msg = Outcome(ok=False, exitcode=None, timed_out=True).describe(3, cfg.setting_source("onnx-fp32", "timeout"))
    assert "timed out after 3 s" in msg and '[overrides."onnx-fp32"] timeout' in msg


def test_a_failed_compare_step_fails_the_run(tiny_model, tmp_path, capsys):
    """A suite's comparison that raises (here: a corrupt stored hypotheses file) keeps every result and the
    report, says so, and exits 1 instead of 0."""
    from tests.fixtures.faulty_backends import register_faulty_backends

    register_faulty_backends()
    out = tmp_path / "run"
    argv = ["compare", "--model", str(tiny_model("marian")), "--backends", "test-counting,test-nan", "--limit", "3",
            "--max-new-tokens", "4", "--suites", "quality", "--reference", "test-counting", "--out", str(out),
            "--quiet"]
    assert main(argv) in (0, 3), err_of(capsys)
    tokens = next((out / "backends" / "test-counting").rglob("hypotheses.tokens.json"))
    tokens.write_text("{not json")
    for f in (out / "compare").glob("*.json"):
        f.unlink()
    assert main(argv) == 1
    report = json.loads((out / "report.json").read_text())
    assert "quality" in report["compare_errors"]
    assert report["backends"]["test-counting"]["status"] == "ok"  # results kept


def test_dry_run_says_which_suites_do_not_apply(tiny_model, tmp_path):
    """A suite whose supports() is false for a backend (numerics on a float backend) is planned as
    'does not apply', not 'run' (the worker would record it as skipped)."""
    from orchestrator.engine import run_compare

    cfg = resolve_config({"model": str(tiny_model("marian")), "backends": "torch-fp32,tflite-int8",
                          "suites": "quality,numerics", "limit": 3, "out": str(tmp_path / "run")})
    plan, code, _ = run_compare(cfg, dry_run=True)
    assert code == 0
    assert plan["backends"]["torch-fp32"]["suites"] == {"quality": "run", "numerics": "does not apply"}
    assert plan["backends"]["tflite-int8"]["suites"] == {"quality": "run", "numerics": "run"}


def test_only_the_reference_role_changes_the_split_generation_fingerprint(tiny_model, tmp_path):
    """split-generation measures more on the reference backend (its margins), so which backend is the
    reference is part of that suite's fingerprint, and of no other suite's."""
    from orchestrator.engine import run_compare

    def prints(reference):
        cfg = resolve_config({"model": str(tiny_model("marian")), "backends": "torch-fp32,torch-fp32-split",
                              "suites": "quality,split-generation", "limit": 3, "reference": reference,
                              "out": str(tmp_path / "run")})
        plan, code, _ = run_compare(cfg, dry_run=True)
        assert code == 0
        return {n: b["fingerprints"] for n, b in plan["backends"].items()}

    a, b = prints("torch-fp32"), prints("torch-fp32-split")
    for name in a:
        assert a[name]["quality"] == b[name]["quality"]
        assert a[name]["split-generation"] != b[name]["split-generation"]
    assert prints("torch-fp32") == a  # deterministic


def test_another_matrix_gets_its_own_default_run_directory(tiny_model, tmp_path):
    """A matrix other than the default writes into runs/<model>-<matrix stem>-<hash>, so its report does not
    replace the default run's; the default matrix, named or not, keeps runs/<model>-<hash>."""
    from orchestrator.engine import run_compare
    from orchestrator.matrix import DEFAULT_MATRIX

    def run_dir(**extra):
        cfg = resolve_config({"model": str(tiny_model("marian")), "backends": "torch-fp32", "suites": "quality",
                              "limit": 3, **extra})
        plan, code, _ = run_compare(cfg, dry_run=True)
        assert code == 0
        return Path(plan["run_dir"])

    peers = tmp_path / "peers.toml"
    peers.write_text('schema = 1\n[run]\nbackends = ["torch-fp32"]\n')
    default, named, other = run_dir(), run_dir(matrix=str(DEFAULT_MATRIX)), run_dir(matrix=str(peers))
    assert default == named and default.parent == other.parent
    assert other.name.startswith(f"{tiny_model('marian').name}-peers-") and other != default
    assert run_dir(matrix=str(peers)) == other  # stable
