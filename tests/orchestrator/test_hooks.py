"""Post-compare steps: up-front validation of their matrix tables and the baseline file, exit-code rules."""
import json

import pytest

from backends.errors import InvalidInputError
from orchestrator.config import resolve_config
from orchestrator.errors import SettingsError
from orchestrator.hooks import EXIT_HOOK_ERROR, check_requested, load_hook, run_hooks, selection_infeasible


def test_missing_hook_module_is_none():
    assert load_hook("no_such_module_here", "f") is None


def test_selection_infeasible_rule():
    assert selection_infeasible({"chosen": None, "rejected": {"a": "too big"}})
    assert not selection_infeasible({"chosen": "ct2-int8"})
    assert not selection_infeasible(None)


def test_invalid_bar_fails_before_running(tmp_path):
    m = tmp_path / "m.toml"
    m.write_text("[bar]\nmax_bleu_dorp = 1.0\n")
    with pytest.raises(SettingsError) as e:
        check_requested(resolve_config({"matrix": str(m)}))
    assert str(m) in str(e.value) and "max_bleu_dorp" in str(e.value)


def test_invalid_constraints_and_tolerances_fail_before_running(tmp_path):
    m = tmp_path / "m.toml"
    m.write_text('[constraints]\nprecision = "int4"\n')
    with pytest.raises(SettingsError, match=r"\[constraints\]"):
        check_requested(resolve_config({"matrix": str(m)}))
    m.write_text('[tolerances]\nbleu = "lots"\n')
    with pytest.raises(SettingsError, match="bleu"):
        check_requested(resolve_config({"matrix": str(m)}))
    # the baseline's own metric (golden outputs) is accepted; a misspelling of it is not
    m.write_text('[tolerances]\noutputs_changed = "1%"\nfirst_step_logit_diff = { abs = 0.01, rel = 0.01 }\n'
                 'teacher_forced_logit_diff = 0.05\n')
    check_requested(resolve_config({"matrix": str(m)}))
    m.write_text('[tolerances]\noutput_changed = "1%"\n')
    with pytest.raises(SettingsError, match="output_changed: not a metric any suite reports.*outputs_changed"):
        check_requested(resolve_config({"matrix": str(m)}))


def _with_baseline(path):
    return resolve_config({"baseline": str(path)})


def test_baseline_file_errors_fail_before_running(tmp_path):
    """``compare --baseline FILE`` checks FILE with orchestrator.baseline.load_baseline before running."""
    with pytest.raises(InvalidInputError, match="does not exist.*baseline save"):
        check_requested(_with_baseline(tmp_path / "none.json"))
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(InvalidInputError, match=r"--baseline .*bad.json is not a JSON baseline file"):
        check_requested(_with_baseline(bad))
    for junk in ({"backends": {}}, [1, 2], {"schema": "seqquant-baseline/1", "backends": {}}):
        bad.write_text(json.dumps(junk))
        with pytest.raises(InvalidInputError, match="baseline save"):
            check_requested(_with_baseline(bad))


def test_a_baseline_gone_during_the_run_is_a_recorded_step_error(tmp_path):
    """The baseline is read again after the run: if it vanished meanwhile, the report keeps the error
    (exit code 1) instead of the run raising and losing its report."""
    from orchestrator.baseline import save_baseline
    from tests.orchestrator.test_console import minimal_report

    base = tmp_path / "b.json"
    save_baseline(minimal_report(), base)
    cfg = _with_baseline(base)
    check_requested(cfg)
    report = minimal_report()
    base.unlink()
    assert run_hooks(report, cfg) == EXIT_HOOK_ERROR
    assert "does not exist" in report["hook_errors"]["baseline"]
    assert "baseline" not in report and report["verdict"] and report["selection"]


def test_a_broken_html_module_is_recorded_not_raised(tmp_path, monkeypatch):
    """The HTML page is imported at the end of a run: if that import breaks, the run's report survives."""
    import orchestrator.hooks as hooks

    real = hooks.load_hook

    def broken(module, func):
        if module == "report_html":
            raise ImportError("cannot import name 'ranking_text' from 'orchestrator.report_tables'")
        return real(module, func)

    monkeypatch.setattr(hooks, "load_hook", broken)
    report: dict = {}
    hooks.write_extra_reports(report, tmp_path)
    assert "ranking_text" in report["hook_errors"]["report_html"]
    assert not (tmp_path / "report.html").exists()
