"""orchestrator.activation_probe: static int8 ranges on one group of the PyTorch reference's activations."""
from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")

from backends.errors import InvalidInputError  # noqa: E402
from orchestrator import activation_probe as ap  # noqa: E402
from tests.fixtures.tiny_models import FAMILIES  # noqa: E402

SOURCES = ["a man rides a bike", "two dogs play in the snow", "hello"]
CALIBRATION = ["a woman sings", "the cat sleeps on the mat", "go", "children are playing outside today"]


def test_fake_quant_act_uses_the_256_level_grid_of_its_range():
    x = torch.linspace(-3.0, 5.0, 1001)
    q = ap.fake_quant_act(x, -2.0, 4.0)
    scale = 6.0 / 255
    assert len(torch.unique(q)) <= 256
    inside = (x >= -2.0 + scale) & (x <= 4.0 - scale)
    assert float((q - x)[inside].abs().max()) <= scale / 2 + 1e-6  # rounding only, within the range
    assert float(q.min()) == pytest.approx(-2.0, abs=scale) and float(q.max()) == pytest.approx(4.0, abs=scale)
    assert float(ap.fake_quant_act(torch.tensor([0.0]), -2.0, 4.0)) == 0.0  # zero is exact
    pos = ap.fake_quant_act(torch.tensor([0.0, 0.3, 1.0]), 0.2, 1.0)  # the range widens to hold 0
    assert float(pos[0]) == 0.0 and float(pos[2]) == pytest.approx(1.0, abs=1 / 255)
    assert torch.equal(ap.fake_quant_act(torch.ones(3), 0.0, 0.0), torch.zeros(3))


def test_probs_sit_on_the_fixed_softmax_grid_and_masked_scores_are_found():
    p = torch.softmax(torch.randn(4, 50), dim=-1)
    q = ap.fake_quant_probs(p)
    assert torch.equal(q * 256, torch.round(q * 256)) and float(q.max()) <= 255 / 256
    assert float((q - p).abs().max()) <= 0.5 / 256 + 1e-7
    s = torch.tensor([1.0, -5.0, torch.finfo(torch.float32).min, -float("inf"), -1e9])
    assert ap.masked_entries(s).tolist() == [False, False, True, True, False]


def test_split_keeps_the_fine_grid_inside_the_clip_and_the_coarse_one_outside():
    x = torch.linspace(-2.0, 4.0, 2001)
    coarse = ap.fake_quant_act(x, -2.0, 4.0)
    split = ap.fake_quant_split(x, -2.0, 4.0, 0.25)
    step = 6.0 / 255
    lo_c, hi_c = round(-0.5 / step) * step, round(1.0 / step) * step  # the clip points, on the coarse grid
    fine_step = (hi_c - lo_c) / 255
    inside = (x > lo_c + fine_step) & (x < hi_c - fine_step)
    assert float((split - x)[inside].abs().max()) <= fine_step / 2 + 1e-6  # ~4x finer than one int8 tensor
    assert float((coarse - x)[inside].abs().max()) > 2 * fine_step
    outside = (x < lo_c - fine_step) | (x > hi_c + fine_step)
    # outside: the coarse value, give or take where the fine grid puts the clip point
    assert float((split - coarse)[outside].abs().max()) <= fine_step / 2 + 1e-6
    assert float(ap.fake_quant_split(torch.tensor([0.0]), -2.0, 4.0, 0.5)) == 0.0
    assert torch.equal(ap.fake_quant_split(torch.ones(2), 0.0, 0.0, 0.5), torch.zeros(2))


def _sites(tiny_model, family):
    from backends.model import ModelBundle

    net = ModelBundle.load(tiny_model(family)).load_torch_model()
    net.set_attn_implementation("eager")
    return net, ap.ActivationSites(net)


def _logits(net):
    ids = torch.tensor([[5, 6, 7, 8, 2]])
    with torch.no_grad():
        return net(input_ids=ids, attention_mask=torch.ones_like(ids),
                   decoder_input_ids=torch.tensor([[net.config.decoder_start_token_id, 9, 10]])).logits


@pytest.mark.parametrize("family", FAMILIES)
def test_every_family_has_its_sites_on_both_sides(tiny_model, family):
    net, sites = _sites(tiny_model, family)
    try:
        sites.calibrate(lambda _: _logits(net), ["unused"])
        summary = sites.summary()
        for group in ap.GROUPS:
            sides = ("decoder",) if group == "logits" else ap.SIDES
            assert all(summary[group][s] > 0 for s in sides), (group, summary[group])
        assert summary["logits"] == {"encoder": 0, "decoder": 1}
        assert summary["embeddings"] == {"encoder": 1, "decoder": 1}  # a shared table is a site per side
        # a scores site per attention block and side, and its probs beside it
        assert summary["attention-scores"] == summary["attention-probs"]
        assert summary["attention-scores"]["decoder"] == 2 * summary["attention-scores"]["encoder"]
        assert all(lo <= hi for lo, hi in sites.ranges.values())
        assert not any(k.startswith("other/") for k in sites.sites)  # every site knows its side
    finally:
        sites.remove()


def test_off_is_exact_quantize_perturbs_only_the_active_sides_and_remove_restores(tiny_model):
    softmax = torch.nn.functional.softmax
    net, sites = _sites(tiny_model, "marian")
    with torch.no_grad():
        plain = _logits(net)
        sites.calibrate(lambda _: _logits(net), ["unused"])
        assert torch.nn.functional.softmax is not softmax  # the probe reaches the attention softmax
        assert torch.equal(_logits(net), plain)  # mode "off": as if unhooked
        sites.mode, sites.active = "quantize", ({"logits"}, {"decoder"})
        logits = _logits(net)
        assert not torch.equal(logits, plain)
        assert len(torch.unique(logits)) <= 256  # the LM head's output on one int8 grid
        sites.active = ({"logits"}, {"encoder"})  # no logits site on the encoder side
        assert torch.equal(_logits(net), plain)
        sites.active = (set(ap.GROUPS), {"encoder"})
        assert not torch.equal(_logits(net), plain)
    sites.remove()
    assert torch.nn.functional.softmax is softmax
    with torch.no_grad():
        assert torch.equal(_logits(net), plain)


def test_run_probes_on_a_tiny_model(tiny_model):
    res = ap.run_probes(tiny_model("marian"), SOURCES, ["logits", "all-encoder", "all+weights"], CALIBRATION,
                        threads=1, batch_size=2, max_new_tokens=8)
    assert res["sentences"] == 3 and res["calibration_sentences"] == 4
    rows = {r["probe"]: r for r in res["probes"]}
    assert list(rows) == ["logits", "all-encoder", "all+weights"]
    assert rows["logits"]["tensors"] == 1
    sites = res["sites"]
    assert rows["all-encoder"]["tensors"] == sum(s["encoder"] for s in sites.values())
    n_sites = sum(s["encoder"] + s["decoder"] for s in sites.values())
    assert rows["all+weights"]["tensors"] > n_sites and rows["all+weights"]["int8_weights"]
    for r in res["probes"]:
        assert 0.0 <= r["identical"] <= 1.0
        assert r["noise_scale"] is None or r["noise_scale"] >= 0.0
    json.dumps(res)
    text = ap.probe_runner.format_results(res, backend_scale=0.15)
    assert text.startswith("activation probe:") and "all+weights" in text
    assert torch.nn.functional.softmax.__module__ == "torch.nn.functional"  # put back after the run
    assert res["norm_split"] is None and res["split_groups"] == []
    split = ap.run_probes(tiny_model("marian"), SOURCES, ["norm-in"], CALIBRATION, threads=1, batch_size=2,
                          max_new_tokens=8, norm_split=0.5)
    assert split["norm_split"] == 0.5 and "two int8 tensors" in split["method"]
    assert split["split_groups"] == ["norm-in", "norm-out"]
    wide = ap.run_probes(tiny_model("marian"), SOURCES, ["all"], CALIBRATION, threads=1, batch_size=2,
                         max_new_tokens=8, norm_split=0.5, split_groups=["ffn", "attention-scores", "ffn"])
    assert wide["split_groups"] == ["ffn", "attention-scores"] and "ffn, attention-scores as two" in wide["method"]


def test_split_applies_to_the_chosen_groups_and_leaves_masked_scores_alone(tiny_model):
    net, sites = _sites(tiny_model, "marian")
    try:
        with torch.no_grad():
            sites.calibrate(lambda _: _logits(net), ["unused"])
        key = next(k for k, (g, _) in sites.sites.items() if g == "attention-scores")
        side, name = key.split("/", 1)
        lo, hi = sites.ranges[key]
        masked = torch.finfo(torch.float32).min
        x = torch.tensor([lo, 0.3 * lo + 0.7 * hi, 0.01 * hi, masked])
        sites.mode, sites.active = "quantize", ({"attention-scores"}, {side})
        with torch.no_grad():
            single = sites.apply("attention-scores", name, x, side)
            sites.norm_split = 0.5  # the default split groups: the scores stay one int8 tensor
            assert torch.equal(sites.apply("attention-scores", name, x, side), single)
            sites.split_groups = ("attention-scores",)
            split = sites.apply("attention-scores", name, x, side)
        assert float(split[3]) == masked and float(single[3]) == masked  # a masked entry is never clipped
        assert torch.equal(split[:3], ap.fake_quant_split(x[:3], lo, hi, 0.5))
        assert not torch.equal(split[:3], single[:3])
    finally:
        sites.remove()


def test_bad_input_is_a_clear_error(tiny_model, tmp_path, capsys):
    with pytest.raises(InvalidInputError, match="unknown probe"):
        ap.run_probes(tiny_model("marian"), ["x"], ["attention-fp4"], CALIBRATION)
    with pytest.raises(InvalidInputError, match="no calibration"):
        ap.run_probes(tiny_model("marian"), ["x"], ["all"], [])
    with pytest.raises(InvalidInputError, match="no source"):
        ap.run_probes(tiny_model("marian"), [], ["all"], CALIBRATION)
    with pytest.raises(InvalidInputError, match="norm_split"):
        ap.run_probes(tiny_model("marian"), ["x"], ["all"], CALIBRATION, norm_split=1.0)
    assert ap.main(["--model", str(tmp_path / "missing"), "--limit", "1"]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert ap.main(["--calibration-size", "0", "--limit", "1"]) == 2
    assert "calibration-size" in capsys.readouterr().err
    assert ap.main(["--calibration", str(tmp_path / "nope.txt"), "--limit", "1"]) == 2
    assert "calibration source" in capsys.readouterr().err
    with pytest.raises(InvalidInputError, match="cannot split 'attention-probs'"):
        ap.run_probes(tiny_model("marian"), ["x"], ["all"], CALIBRATION, norm_split=0.5,
                      split_groups=["attention-probs"])
    assert ap.main(["--norm-split", "0.5", "--split-groups", "ffn,norms", "--limit", "1"]) == 2
    assert "cannot split 'norms'" in capsys.readouterr().err
    for groups in ("ffn", "norm-in,norm-out"):  # the default too: said without --norm-split, it would do nothing
        assert ap.main(["--split-groups", groups, "--limit", "1"]) == 2
        assert "--split-groups needs --norm-split" in capsys.readouterr().err


def test_split_groups_spec():
    assert ap.split_groups_spec(["norm-in", " logits", "norm-in"]) == ("norm-in", "logits")
    for bad in ([], [""], ["attention-probs"], ["norm-in", "residual"]):
        with pytest.raises(InvalidInputError, match="cannot split"):
            ap.split_groups_spec(bad)


def test_probe_names():
    assert ap.probe_spec("logits") == (("logits",), ap.SIDES, False)
    assert ap.probe_spec("all-decoder") == (ap.GROUPS, ("decoder",), False)
    assert ap.probe_spec("all+weights")[2] is True
    groups, sides, weights = ap.probe_spec("all-but-norm-in+norm-out")
    assert set(groups) == set(ap.GROUPS) - {"norm-in", "norm-out"} and sides == ap.SIDES and not weights
    assert ap.probe_spec("all-but-logits+weights") == (ap.probe_spec("all-but-logits")[0], ap.SIDES, True)
    assert ap.probe_spec("norm-out+weights") == (("norm-out",), ap.SIDES, True)
    for bad in ("all-but-", "all-but-norm", "all-but-logits+", "norms", "", "+weights", "norms+weights"):
        with pytest.raises(InvalidInputError, match="unknown probe"):
            ap.probe_spec(bad)
