"""orchestrator.weight_probe: int8 rounding of one weight group of the PyTorch reference."""
from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")

from backends.errors import InvalidInputError  # noqa: E402
from orchestrator import weight_probe as wp  # noqa: E402
from tests.fixtures.tiny_models import FAMILIES  # noqa: E402


def test_fake_quant_rounds_to_the_int8_grid_of_its_granule():
    w = torch.tensor([[0.5, -0.25, 0.1], [0.01, 0.002, -0.004], [0.0, 0.0, 0.0]])
    t = wp.fake_quant_int8(w, "tensor")
    scale = 0.5 / 127
    assert torch.allclose(t / scale, torch.round(t / scale), atol=1e-4)  # one grid for the whole tensor
    assert float((t - w).abs().max()) <= scale / 2 + 1e-7
    r = wp.fake_quant_int8(w, "row")
    assert float((r[1] - w[1]).abs().max()) < float((t[1] - w[1]).abs().max()) / 10  # a small row gains most
    for i in range(2):  # 127 levels per row: its maximum is exact, its error within half a step
        s = float(w[i].abs().max()) / 127
        assert float(r[i].abs().max()) == pytest.approx(float(w[i].abs().max()), rel=1e-6)
        assert float((r[i] - w[i]).abs().max()) <= s / 2 + 1e-7
    assert torch.equal(r[2], w[2])  # an all-zero row stays zero (no division by zero)


def _net(tiny_model):
    from backends.model import ModelBundle

    return ModelBundle.load(tiny_model("marian")).load_torch_model()


def test_groups_untie_the_head_and_skip_positional_tables(tiny_model):
    net = _net(tiny_model)
    emb = net.get_input_embeddings().weight
    assert net.get_output_embeddings().weight is emb  # tiny Marian ties them
    groups = wp.weight_groups(net)
    assert [p is emb for p in groups["embedding"]] == [True]  # the shared table once, no positional table
    (head,) = groups["lm_head"]
    assert head is not emb and torch.equal(head, emb)
    assert all(p is not head for p in groups["linear"])
    n_linear = sum(isinstance(m, torch.nn.Linear) for m in net.modules()) - 1
    assert len(groups["linear"]) == n_linear > 0


@pytest.mark.parametrize("family", FAMILIES)
def test_every_family_has_its_groups(tiny_model, family):
    """Token tables only (not BART's learned or Marian's sinusoidal positions, nor T5's relative-bias
    buckets), one head apart from them, the other linears."""
    from backends.model import ModelBundle

    net = ModelBundle.load(tiny_model(family)).load_torch_model()
    groups = wp.weight_groups(net)
    vocab = net.config.vocab_size
    assert groups["embedding"] and all(p.shape[0] == vocab for p in groups["embedding"])
    (head,) = groups["lm_head"]
    assert head.shape[0] == vocab and all(head is not p for p in groups["embedding"] + groups["linear"])
    assert len(groups["linear"]) == sum(isinstance(m, torch.nn.Linear) for m in net.modules()) - 1


def test_a_probe_changes_only_its_group_and_restores_it(tiny_model):
    net = _net(tiny_model)
    groups = wp.weight_groups(net)
    before = {name: [p.detach().clone() for p in ps] for name, ps in groups.items()}
    restore = wp.apply_probe(groups, "embedding-tensor")
    assert not torch.equal(groups["embedding"][0], before["embedding"][0])
    for name in ("lm_head", "linear"):
        assert all(torch.equal(p, b) for p, b in zip(groups[name], before[name]))
    restore()
    restore_all = wp.apply_probe(groups, "all-int8")
    assert all(not torch.equal(p, b) for name in groups for p, b in zip(groups[name], before[name]))
    restore_all()
    assert all(torch.equal(p, b) for name in groups for p, b in zip(groups[name], before[name]))


def test_run_probes_on_a_tiny_model(tiny_model):
    res = wp.run_probes(tiny_model("marian"), ["a man rides a bike", "two dogs play", "hello"],
                        ["embedding-row", "all-int8"], threads=1, batch_size=2, max_new_tokens=8)
    assert res["sentences"] == 3 and [r["probe"] for r in res["probes"]] == ["embedding-row", "all-int8"]
    for r in res["probes"]:
        assert 0.0 <= r["identical"] <= 1.0
        assert r["noise_scale"] is None or r["noise_scale"] >= 0.0
    n_linear = len(wp.weight_groups(_net(tiny_model))["linear"])
    assert [r["tensors"] for r in res["probes"]] == [1, 1 + 1 + n_linear]  # table; table + head + linears
    json.dumps(res)  # serialisable
    text = wp.probe_runner.format_results(res, backend_scale=0.15)
    assert "embedding-row" in text and "quadrature" in text


def test_bad_input_is_a_clear_error(tiny_model, tmp_path, capsys):
    with pytest.raises(InvalidInputError, match="unknown probe"):
        wp.run_probes(tiny_model("marian"), ["x"], ["weights-fp4"])
    with pytest.raises(InvalidInputError, match="no source"):
        wp.run_probes(tiny_model("marian"), [], ["all-int8"])
    assert wp.main(["--model", str(tmp_path / "missing"), "--limit", "1"]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert wp.main(["--backend-noise", "0"]) == 2
