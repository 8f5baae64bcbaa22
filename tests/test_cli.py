"""The command line: help without heavy imports, every bad input -> exit 2 with an actionable message,
and the essential end-to-end `python cli.py compare` on the real default model."""
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator.cli_app import main

REPO = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "tensorflow", "onnxruntime", "ctranslate2", "transformers")


def run_cli(*args, timeout=600):
    return subprocess.run([sys.executable, "cli.py", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout)


def err_of(capsys) -> str:
    out = capsys.readouterr()
    return " ".join((out.err + out.out).split())  # rich wraps long lines


# ---------------------------------------------------------------------------------------------
# help and listing
# ---------------------------------------------------------------------------------------------
def test_help_imports_nothing_heavy():
    code = ("import sys; sys.argv = ['cli.py', 'compare', '--help']\n"
            "from orchestrator.cli_app import main\n"
            "try:\n    main()\nexcept SystemExit:\n    pass\n"
            f"heavy = [m for m in {HEAVY!r} if m in sys.modules]\n"
            "print('HEAVY', heavy)")
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert "--num-beams" in r.stdout and "--strict-length" in r.stdout
    assert "HEAVY []" in r.stdout, r.stdout


def test_top_level_help_lists_commands():
    r = run_cli("--help", timeout=120)
    assert r.returncode == 0
    for cmd in ("compare", "list-backends", "select", "judge", "rescue", "baseline"):
        assert cmd in r.stdout


def test_list_backends_shows_install_hint_for_missing_extra(capsys):
    from backends import registry

    registry.register_backend("test-needs-extra", "nonexistent_pkg_xyz.backend:Backend",
                              requires=("nonexistent_pkg_xyz",), description="needs a missing package",
                              clobber=True)
    assert main(["list-backends", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["torch-fp32"]["available"] is True
    assert rows["test-needs-extra"]["available"] is False
    assert rows["test-needs-extra"]["install"] == "pip install nonexistent_pkg_xyz"
    assert main(["list-backends"]) == 0
    assert "pip install nonexistent_pkg_xyz" in err_of(capsys)


def test_list_backends_with_a_matrix_shows_its_variants(capsys):
    from orchestrator.matrix import MATRICES_DIR

    assert main(["list-backends", "--json", "--matrix", str(MATRICES_DIR / "rescue.toml")]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["tflite-int8-float-lm_head"] == {"name": "tflite-int8-float-lm_head", "available": True,
                                                 "description": "tflite-int8, LM head in float", "install": None}
    assert main(["list-backends", "--matrix", "no-such-matrix.toml"]) == 2
    assert "does not exist" in err_of(capsys)


# ---------------------------------------------------------------------------------------------
# bad input: exit code 2 and a message that says what to do
# ---------------------------------------------------------------------------------------------
def compare(*extra):
    return main(["compare", "--backends", "torch-fp32", "--quiet", *extra])


def test_model_dir_missing(tmp_path, capsys):
    assert compare("--model", str(tmp_path / "nope")) == 2
    msg = err_of(capsys)
    assert "does not exist" in msg and "--model" in msg


def test_not_a_seq2seq_checkpoint(tmp_path, capsys):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert", "architectures": ["BertModel"]}))
    assert compare("--model", str(tmp_path)) == 2
    msg = err_of(capsys)
    assert "not a supported family" in msg and "is_encoder_decoder" in msg and "marian" in msg and "t5" in msg


def test_no_config_json(tmp_path, capsys):
    assert compare("--model", str(tmp_path)) == 2
    assert "no config.json" in err_of(capsys)


def copy_model(src: Path, dst: Path, skip=()) -> Path:
    dst.mkdir()
    for f in src.iterdir():
        if f.name not in skip:
            shutil.copy(f, dst / f.name)
    return dst


def test_tokenizer_files_missing(tiny_model, tmp_path, capsys):
    m = copy_model(tiny_model("marian"), tmp_path / "m", skip=("source.spm", "target.spm", "vocab.json"))
    assert compare("--model", str(m)) == 2
    assert "no tokenizer files" in err_of(capsys)


def test_weights_truncated(tiny_model, tmp_path, capsys):
    m = copy_model(tiny_model("marian"), tmp_path / "m")
    w = m / "model.safetensors"
    w.write_bytes(w.read_bytes()[: w.stat().st_size // 2])
    assert compare("--model", str(m)) == 2
    assert "truncated" in err_of(capsys)


def lines(path: Path, text: list[str]) -> str:
    path.write_text("\n".join(text) + "\n", encoding="utf-8")
    return str(path)


def test_src_ref_line_counts_differ(tmp_path, capsys):
    assert compare("--src", lines(tmp_path / "s.en", ["a", "b"]), "--ref", lines(tmp_path / "r.de", ["x"])) == 2
    msg = err_of(capsys)
    assert "2 lines" in msg and "line-aligned" in msg


def test_empty_lines(tmp_path, capsys):
    assert compare("--src", lines(tmp_path / "s.en", ["a", "", "c"]),
                   "--ref", lines(tmp_path / "r.de", ["x", "y", "z"])) == 2
    msg = err_of(capsys)
    assert "empty line(s) 2" in msg and "--skip-empty" in msg


def test_non_utf8(tmp_path, capsys):
    (tmp_path / "s.en").write_bytes(b"fine\nna\xefve caf\xe9\n")
    assert compare("--src", str(tmp_path / "s.en"), "--ref", lines(tmp_path / "r.de", ["x", "y"])) == 2
    assert "invalid UTF-8 on line(s) 2" in err_of(capsys)


def test_unknown_backend_lists_available(capsys):
    assert main(["compare", "--backends", "torch-fp32,tflite-int9", "--quiet"]) == 2
    msg = err_of(capsys)
    assert "tflite-int9" in msg and "Available backends" in msg and "torch-fp32-split" in msg


def test_unknown_suite_lists_available(capsys):
    assert compare("--suites", "qualty") == 2
    msg = err_of(capsys)
    assert "qualty" in msg and "quality" in msg


def test_invalid_matrix_names_line_and_key(tmp_path, capsys):
    m = tmp_path / "m.toml"
    m.write_text("[settings]\nlimit = 5\nnum_beams = \n")
    assert main(["compare", "--matrix", str(m)]) == 2
    msg = err_of(capsys)
    assert str(m) in msg and "line 3" in msg
    m.write_text("[settings]\nbeams = 4\n")
    assert main(["compare", "--matrix", str(m)]) == 2
    msg = err_of(capsys)
    assert "'beams'" in msg and "num_beams" in msg


@pytest.mark.parametrize("args,needle", [(["--limit", "-1"], "--limit"), (["--num-beams", "0"], "--num-beams"),
                                         (["--num-beams", "99"], "--num-beams"), (["--batch-size", "0"], "--batch-size")])
def test_settings_out_of_range(args, needle, capsys):
    assert compare(*args) == 2
    msg = err_of(capsys)
    assert needle in msg and "out of range" in msg


def test_limit_not_a_number(capsys):
    with pytest.raises(SystemExit) as e:
        compare("--limit", "ten")
    assert e.value.code == 2 and "--limit must be an integer" in err_of(capsys)


def test_strict_length_fails_and_default_truncates_with_count(tmp_path, capsys):
    """A source longer than S: counted warning by default, error with --strict-length. The only backend
    has a missing extra, so no backend process is started."""
    from backends import registry

    registry.register_backend("test-needs-extra", "nonexistent_pkg_xyz.backend:Backend",
                              requires=("nonexistent_pkg_xyz",), clobber=True)
    src = lines(tmp_path / "s.en", ["A dog runs.", "A very long sentence " * 10, "Two men talk."])
    ref = lines(tmp_path / "r.de", ["Ein Hund rennt.", "Ein langer Satz.", "Zwei Männer reden."])
    base = ["compare", "--backends", "test-needs-extra", "--src", src, "--ref", ref, "--max-source-length", "16",
            "--quiet"]
    assert main(base + ["--strict-length", "--out", str(tmp_path / "strict")]) == 2
    msg = err_of(capsys)
    assert "1 source(s) exceed the static source length 16" in msg and "line 2" in msg
    assert main(base + ["--out", str(tmp_path / "run")]) in (0, 3)  # 3: selection finds nothing feasible
    msg = err_of(capsys)
    assert "1 of 3 source(s) are longer than max_source_length=16" in msg
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert report["data"]["truncated_sources"] == 1 and report["data"]["longest_source_tokens"] > 16
    b = report["backends"]["test-needs-extra"]
    assert b["status"] == "skipped" and "Install with: pip install nonexistent_pkg_xyz" in b["reason"]
    assert any("pip install nonexistent_pkg_xyz" in w for w in report["warnings"])


def test_select_and_baseline_need_a_run_dir(tmp_path, capsys):
    assert main(["select", str(tmp_path)]) == 2
    assert "no report.json" in err_of(capsys)
    assert main(["baseline", "save", str(tmp_path), str(tmp_path / "b.json")]) == 2
    assert "no report.json" in err_of(capsys) and not (tmp_path / "b.json").exists()


def _bad_reports():
    from tests.orchestrator.test_console import minimal_report

    newer = minimal_report()
    newer["schema_version"] = 2
    no_data = minimal_report()
    del no_data["data"]
    bad_backend = minimal_report()
    bad_backend["backends"]["torch-fp32"] = "ok"
    return [('{"x": 1}', "no schema_version"), ("[1, 2]", "expected a JSON object"),
            ('{"schema_version": "1"}', "not an integer"), ("{not json", "not valid JSON"),
            (json.dumps(newer), "schema_version 2 (written by a newer seqquant?)"),
            (json.dumps(no_data), "missing key(s) data"),
            (json.dumps(bad_backend), "backends.torch-fp32 has no status")]


@pytest.mark.parametrize("text,why", _bad_reports())
def test_show_select_baseline_refuse_a_file_that_is_not_a_report(tmp_path, text, why):
    """Exit 2 with a message, no traceback, and nothing written: report.json is byte-identical after `select`
    and `judge` (which rewrite the reports of a real run), no report.md/html appear, no baseline file is written."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "report.json").write_text(text)
    for args in (["show", str(run)], ["select", str(run)], ["judge", str(run)],
                 ["baseline", "save", str(run), str(tmp_path / "b.json")]):
        r = run_cli(*args, timeout=120)
        err = " ".join(r.stderr.split())
        assert r.returncode == 2, (args, r.stdout, r.stderr)
        assert "Traceback" not in r.stderr and why in err and "python cli.py compare" in err, err
        assert (run / "report.json").read_text() == text
        assert sorted(f.name for f in run.iterdir()) == ["report.json"]
        assert not (tmp_path / "b.json").exists()


def test_show_and_baseline_save_accept_a_minimal_report(tmp_path, capsys):
    from tests.orchestrator.test_console import minimal_report

    (tmp_path / "report.json").write_text(json.dumps(minimal_report()))
    assert main(["show", str(tmp_path)]) == 0
    assert "torch-fp32" in capsys.readouterr().out
    assert main(["baseline", "save", str(tmp_path), str(tmp_path / "b.json")]) == 0
    assert json.loads((tmp_path / "b.json").read_text())["backends"]["torch-fp32"]["status"] == "ok"
    # FILE names an existing file that is not a baseline (here: the report itself): refused, kept
    before = (tmp_path / "report.json").read_text()
    assert main(["baseline", "save", str(tmp_path), str(tmp_path / "report.json")]) == 2
    assert "not overwriting it" in err_of(capsys) and (tmp_path / "report.json").read_text() == before


def _judgeable_run(tmp_path) -> Path:
    """A minimal report with one INT8 backend 70% identical to the reference, written to a run directory."""
    from tests.orchestrator.test_console import minimal_report

    rep = minimal_report()
    rep["backends"]["x-int8"] = {"status": "ok", "reason": None,
                                 "signature": {"runtime": "onnxruntime", "precision": "int8",
                                               "quantization": {"mode": "static"}, "short": "onnxruntime int8"},
                                 "metrics": {"bleu": 30.4, "exact_match_vs_reference": 0.7},
                                 "suites": {"quality": {"status": "ok"}}}
    (tmp_path / "report.json").write_text(json.dumps(rep))
    return tmp_path


def test_judge_re_judges_a_stored_run_under_another_bar(tmp_path, capsys):
    run = _judgeable_run(tmp_path)
    assert main(["judge", str(run)]) == 0  # the run's own bar (none stored: the defaults)
    rep = json.loads((run / "report.json").read_text())
    assert rep["backends"]["x-int8"]["verdict"]["kind"] == "pass" and rep["verdict"]["bar"]["min_int8_agreement"] == 0
    assert main(["judge", str(run), "--set", "min_int8_agreement=0.8", "--set", "fail_source_blind=false"]) == 0
    out = err_of(capsys)
    assert "min_int8_agreement=0.8" in out and "fail_source_blind=false" in out
    rep = json.loads((run / "report.json").read_text())
    assert rep["verdict"]["bar"]["min_int8_agreement"] == 0.8 and rep["verdict"]["bar"]["fail_source_blind"] is False
    assert rep["backends"]["x-int8"]["verdict"]["kind"] == "model-inherent"  # the only INT8 backend misses it
    assert rep["verdict"]["judged"]["command"] == ("python cli.py judge " + str(run)
                                                   + " --set min_int8_agreement=0.8 --set fail_source_blind=false")
    assert rep["selection"]["chosen"] == "torch-fp32"  # x-int8 fails the bar now (require_verdict_pass)
    md = (run / "report.md").read_text()
    assert "Verdicts re-judged: `python cli.py judge" in md and "min_int8_agreement=0.8)" in md
    assert "min_int8_agreement=0.8" in (run / "report.html").read_text()
    # --set is applied over the run's current bar; --bar FILE replaces it (any matrix file will do)
    assert main(["judge", str(run), "--set", "max_bleu_drop=2"]) == 0
    bar = json.loads((run / "report.json").read_text())["verdict"]["bar"]
    assert (bar["max_bleu_drop"], bar["min_int8_agreement"]) == (2, 0.8)
    (tmp_path / "bar.toml").write_text("[bar]\nmin_int8_agreement = 0.5\n")
    assert main(["judge", str(run), "--bar", str(tmp_path / "bar.toml")]) == 0
    bar = json.loads((run / "report.json").read_text())["verdict"]["bar"]
    assert (bar["max_bleu_drop"], bar["min_int8_agreement"]) == (1.0, 0.5)
    assert main(["judge", str(run), "--bar", str(REPO / "matrices" / "default.toml")]) == 0
    assert json.loads((run / "report.json").read_text())["verdict"]["bar"]["min_int8_agreement"] == 0


def test_judge_dry_run_prints_the_new_verdicts_and_writes_nothing(tmp_path, capsys):
    run = _judgeable_run(tmp_path)
    before = (run / "report.json").read_text()
    assert main(["judge", str(run), "--set", "min_int8_agreement=0.8", "--dry-run"]) == 0
    out = err_of(capsys)
    assert "model-inherent" in out and "min_int8_agreement=0.8" in out and "were not rewritten" in out
    assert (run / "report.json").read_text() == before and sorted(f.name for f in run.iterdir()) == ["report.json"]


@pytest.mark.parametrize("args,why", [
    (["--set", "min_int8_agrement=0.8"], "unknown key(s) ['min_int8_agrement']"),
    (["--set", "min_int8_agreement=high"], "min_int8_agreement must be a number, got 'high'"),
    (["--set", "fail_source_blind=1"], "fail_source_blind must be true or false"),
    (["--bar", "nope.toml"], "bar file nope.toml does not exist"),
])
def test_judge_refuses_a_bad_bar_and_writes_nothing(tmp_path, capsys, args, why):
    run = _judgeable_run(tmp_path)
    before = (run / "report.json").read_text()
    assert main(["judge", str(run), *args]) == 2
    assert why in err_of(capsys)
    assert (run / "report.json").read_text() == before and sorted(f.name for f in run.iterdir()) == ["report.json"]


def test_judge_set_needs_key_equals_value(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["judge", str(tmp_path), "--set", "min_int8_agreement"])
    assert e.value.code == 2 and "expected KEY=VALUE" in capsys.readouterr().err
    assert main(["judge", str(tmp_path)]) == 2 and "no report.json" in err_of(capsys)


def test_baseline_without_an_action_prints_its_help_and_exits_2(capsys):
    assert main(["baseline"]) == 2
    out = err_of(capsys)
    assert "save" in out and "ACTION" in out
    r = run_cli("baseline", timeout=120)
    assert r.returncode == 2 and "save" in r.stdout and "Traceback" not in r.stderr


def test_missing_baseline_file_fails_before_running(tmp_path, capsys):
    assert compare("--baseline", str(tmp_path / "nope.json")) == 2
    assert "baseline save" in err_of(capsys)


# ---------------------------------------------------------------------------------------------
# the essential end-to-end run on the real default model
# ---------------------------------------------------------------------------------------------
def test_compare_end_to_end_default_model(tmp_path):
    out = tmp_path / "run"
    args = ["compare", "--backends", "torch-fp32,torch-fp32-split", "--limit", "8", "--suites", "quality",
            "--out", str(out)]
    r = run_cli(*args)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "torch-fp32-split" in r.stdout and "BLEU" in r.stdout
    report = json.loads((out / "report.json").read_text())
    assert report["schema_version"] == 1 and report["reference_backend"] == "torch-fp32"
    assert report["model"]["family"] == "marian" and report["data"]["n_sentences"] == 8
    assert report["data"]["src"].endswith("test_2016_flickr.en.gz")
    assert report["data"]["calibration"]["src"].endswith("val.en.gz")
    fused, split = report["backends"]["torch-fp32"], report["backends"]["torch-fp32-split"]
    assert fused["status"] == split["status"] == "ok"
    assert 5 < fused["metrics"]["bleu"] < 100 and 20 < fused["metrics"]["chrf"] < 100
    assert split["metrics"]["exact_match_vs_reference"] == 1.0  # same weights, shared loop == HF generate
    assert split["metrics"]["bleu"] == fused["metrics"]["bleu"]
    assert fused["signature"]["runtime"] == "torch" and fused["signature"]["threads"] == 2
    assert "bleu_signature" in fused["suites"]["quality"]
    md = (out / "report.md").read_text()
    assert "torch-fp32-split" in md and "python cli.py compare" in md
    hyps = (out / "backends" / "torch-fp32" / "hypotheses.txt").read_text().splitlines()
    assert len(hyps) == 8 and all(hyps)

    # unchanged re-run: everything reused, no backend process
    r2 = run_cli(*args)
    assert r2.returncode == 0, r2.stderr
    again = json.loads((out / "report.json").read_text())
    assert again["run"]["backends_reused"] == ["torch-fp32", "torch-fp32-split"]
    assert again["run"]["backends_run"] == []
    assert again["backends"]["torch-fp32"]["metrics"]["bleu"] == fused["metrics"]["bleu"]

    # `show` prints the stored run and names its three report files
    r_show = run_cli("show", str(out), timeout=120)
    assert r_show.returncode == 0, r_show.stdout + r_show.stderr
    assert f"{out}/report.html" in " ".join(r_show.stdout.split()) and "error:" not in r_show.stdout

    # the stored run feeds `select` and `baseline save` / `compare --baseline`
    r3 = run_cli("select", str(out))
    assert r3.returncode == 0, r3.stdout + r3.stderr
    assert json.loads((out / "report.json").read_text())["selection"]["chosen"] in ("torch-fp32",
                                                                                   "torch-fp32-split")
    only_split = tmp_path / "split.toml"
    only_split.write_text('[constraints]\nbackends = ["torch-fp32-split"]\n')
    r3a = run_cli("select", str(out), "--constraints", str(only_split))
    assert r3a.returncode == 0, r3a.stdout + r3a.stderr
    assert json.loads((out / "report.json").read_text())["selection"]["chosen"] == "torch-fp32-split"
    # report.md and report.html show the new choice and its rejection, not the old one
    md = (out / "report.md").read_text()
    assert "| chosen | torch-fp32-split |" in md and "rejected: torch-fp32" in md
    assert "not in the allowed backends" in (out / "report.html").read_text()
    impossible = tmp_path / "c.toml"
    impossible.write_text('[constraints]\nruntimes = ["tflite"]\n')
    r3b = run_cli("select", str(out), "--constraints", str(impossible))
    assert r3b.returncode == 3, r3b.stdout + r3b.stderr  # nothing feasible
    impossible.write_text('[constraints]\nmax_byts = 10\n')
    r3c = run_cli("select", str(out), "--constraints", str(impossible))
    assert r3c.returncode == 2 and "max_byts" in r3c.stderr
    base = tmp_path / "baseline.json"
    assert run_cli("baseline", "save", str(out), str(base)).returncode == 0 and base.exists()
    r4 = run_cli(*args, "--baseline", str(base))
    assert r4.returncode == 0, r4.stdout + r4.stderr
    gate = json.loads((out / "report.json").read_text())["baseline"]
    assert gate["regressions"] in (False, [], 0, None)
    assert {n: o["changed"] for n, o in gate["outputs"].items()} == {"torch-fp32": 0, "torch-fp32-split": 0}
    # golden outputs: one saved sentence differs -> reported; a regression only under [tolerances] outputs_changed
    golden = json.loads(base.read_text())
    assert len(golden["backends"]["torch-fp32-split"]["outputs"]["tokens"]) == 8
    golden["backends"]["torch-fp32-split"]["outputs"]["tokens"][2] = "1 2 3"
    (tmp_path / "golden.json").write_text(json.dumps(golden))
    r4a = run_cli(*args, "--baseline", str(tmp_path / "golden.json"))
    assert r4a.returncode == 0, r4a.stdout + r4a.stderr
    assert "outputs changed: torch-fp32-split 1/8" in " ".join(r4a.stdout.split())
    assert "torch-fp32-split: 1 of 8 sentences changed (12.5%; first: 3)" in (out / "report.md").read_text()
    strict = tmp_path / "strict.toml"
    strict.write_text('[tolerances]\noutputs_changed = "10%"\n')
    r4b = run_cli(*args, "--matrix", str(strict), "--baseline", str(tmp_path / "golden.json"))
    assert r4b.returncode == 4, r4b.stdout + r4b.stderr
    regs = json.loads((out / "report.json").read_text())["baseline"]["regressions"]
    assert [(r["backend"], r["metric"]) for r in regs] == [("torch-fp32-split", "outputs_changed")]
    # a baseline that was 5 BLEU better: this run is a regression -> exit code 4 (the CI gate)
    better = json.loads(base.read_text())
    better["backends"]["torch-fp32"]["metrics"]["bleu"] += 5
    (tmp_path / "better.json").write_text(json.dumps(better))
    r5 = run_cli(*args, "--baseline", str(tmp_path / "better.json"))
    assert r5.returncode == 4, r5.stdout + r5.stderr
    assert json.loads((out / "report.json").read_text())["baseline"]["regressions"]
    (tmp_path / "junk.json").write_text('{"not": "a baseline"}')
    r6 = run_cli(*args, "--baseline", str(tmp_path / "junk.json"))
    assert r6.returncode == 2 and "baseline save" in " ".join(r6.stderr.split())
