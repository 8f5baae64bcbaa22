"""Hook points: optional modules, up-front validation of their matrix tables, exit-code rules."""
import json

import pytest

from orchestrator.config import resolve_config
from orchestrator.errors import SettingsError
from orchestrator.hooks import check_requested, load_baseline_file, load_hook, selection_infeasible


def test_missing_hook_module_is_none():
    assert load_hook("no_such_module_here", "f") is None


def test_selection_infeasible_rule():
    assert selection_infeasible({"chosen": None, "rejected": {"a": "too big"}})
    assert not selection_infeasible({"chosen": "ct2-int8"})
    assert not selection_infeasible(None)


def test_invalid_bar_fails_before_running(tmp_path):
    pytest.importorskip("orchestrator.attribution")
    m = tmp_path / "m.toml"
    m.write_text("[bar]\nmax_bleu_dorp = 1.0\n")
    with pytest.raises(SettingsError) as e:
        check_requested(resolve_config({"matrix": str(m)}))
    assert str(m) in str(e.value) and "max_bleu_dorp" in str(e.value)


def test_invalid_constraints_and_tolerances_fail_before_running(tmp_path):
    pytest.importorskip("orchestrator.selection")
    m = tmp_path / "m.toml"
    m.write_text('[constraints]\nprecision = "int4"\n')
    with pytest.raises(SettingsError, match=r"\[constraints\]"):
        check_requested(resolve_config({"matrix": str(m)}))
    pytest.importorskip("orchestrator.baseline")
    m.write_text('[tolerances]\nbleu = "lots"\n')
    with pytest.raises(SettingsError, match="bleu"):
        check_requested(resolve_config({"matrix": str(m)}))


def test_baseline_file_errors(tmp_path):
    with pytest.raises(SettingsError, match="does not exist"):
        load_baseline_file(tmp_path / "none.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(SettingsError, match="not a JSON"):
        load_baseline_file(bad)
    pytest.importorskip("orchestrator.baseline")
    bad.write_text(json.dumps({"backends": {}}))
    with pytest.raises(SettingsError, match="baseline save"):
        load_baseline_file(bad)


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
