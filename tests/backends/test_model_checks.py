"""ModelBundle.load on malformed checkpoints: one clear error (exit 2 from the CLI) naming every
problem — config fields, special ids, weights, tokenizer files — and never a traceback."""
import json
import shutil

import pytest

from backends.errors import InvalidInputError, UnsupportedModelError
from backends.model import ModelBundle
from orchestrator.cli_app import main


def _variant(src, dst, config=None, generation=None, drop=()):
    """Copy checkpoint ``src`` to ``dst``; ``config``/``generation``: dict edits (None deletes) or raw JSON text."""
    shutil.copytree(src, dst)
    for p in dst.iterdir():
        p.chmod(0o644)
    for name, edit in (("config.json", config), ("generation_config.json", generation)):
        if isinstance(edit, str):
            (dst / name).write_text(edit)
        elif edit:
            data = json.loads((dst / name).read_text())
            data.update(edit)
            (dst / name).write_text(json.dumps({k: v for k, v in data.items() if v is not None}))
    for f in drop:
        (dst / f).unlink()
    return dst


CASES = {  # name -> (_variant kwargs, exception type, expected message parts)
    "no-eos": (dict(config={"eos_token_id": None}, generation={"eos_token_id": None}),
               UnsupportedModelError, ["config.json lacks eos_token_id"]),
    "bad-generation-eos": (dict(generation='{"eos_token_id": "x"}'), UnsupportedModelError,
                           ["generation_config.json 'eos_token_id' must be a non-negative integer token id, got 'x'"]),
    "config-list": (dict(config="[1, 2]"), InvalidInputError, ["config.json must hold a JSON object", "list [1, 2]"]),
    "generation-list": (dict(generation="[]"), InvalidInputError, ["generation_config.json must hold a JSON object"]),
    "d_model-abc": (dict(config={"d_model": "abc"}), UnsupportedModelError,
                    ["config.json 'd_model' must be a positive integer, got 'abc'"]),
    "half-tokenizer": (dict(drop=("target.spm", "vocab.json")), UnsupportedModelError,
                       ["incomplete tokenizer: missing target.spm, vocab.json",
                        "marian family needs source.spm + target.spm + vocab.json"]),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_malformed_checkpoint_clear_error(tmp_path, tiny_model, case):
    kwargs, exc_type, parts = CASES[case]
    d = _variant(tiny_model("marian"), tmp_path / case, **kwargs)
    with pytest.raises(exc_type) as err:
        ModelBundle.load(d)
    for part in parts:
        assert part in str(err.value)


@pytest.mark.parametrize("case", sorted(CASES))
def test_malformed_checkpoint_cli_exit_2(tmp_path, tiny_model, capsys, case):
    kwargs, _, parts = CASES[case]
    d = _variant(tiny_model("marian"), tmp_path / case, **kwargs)
    assert main(["compare", "--model", str(d), "--backends", "torch-fp32", "--suites", "quality", "--limit", "5",
                 "--out", str(tmp_path / "out"), "--cache-dir", str(tmp_path / "cache"), "--quiet"]) == 2
    out = capsys.readouterr()
    msg = " ".join((out.err + out.out).split())  # rich wraps long lines
    assert "Traceback" not in msg
    for part in parts:
        assert " ".join(part.split()) in msg


def test_config_reasons_and_file_reasons_in_one_error(tmp_path, default_model_dir):
    d = tmp_path / "cfgonly"
    d.mkdir()
    cfg = json.loads((default_model_dir / "config.json").read_text())
    del cfg["d_model"]
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(UnsupportedModelError) as err:
        ModelBundle.load(d)
    assert err.value.reasons == ["config.json lacks 'd_model' (d_model)",
                                 "no weights file (model.safetensors or pytorch_model.bin)",
                                 "no tokenizer files: the marian family needs source.spm + target.spm + vocab.json"]


def test_unknown_family_still_reports_weights(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(UnsupportedModelError) as err:
        ModelBundle.load(tmp_path)
    assert "no weights file" in err.value.reasons[-1] and "Supported model families" in str(err.value)


def test_malformed_safetensors_header(tmp_path, tiny_model):
    d = _variant(tiny_model("marian"), tmp_path / "m")
    header = b'{"w": {"dtype": "F32"}}'
    (d / "model.safetensors").write_bytes(len(header).to_bytes(8, "little") + header)
    with pytest.raises(UnsupportedModelError, match="malformed header"):
        ModelBundle.load(d)


@pytest.mark.parametrize("family", ["default", "marian", "bart", "t5", "mbart", "pegasus", "m2m100"])
def test_valid_checkpoints_still_load(tiny_model, default_model_dir, family):
    bundle = ModelBundle.load(default_model_dir if family == "default" else tiny_model(family))
    assert bundle.family_name == ("marian" if family == "default" else family)
    assert bundle.encode_sources(["A dog runs."], max_length=16).input_ids.shape[0] == 1  # the tokenizer loads


def _poisoned(src, dst, value, dtype=None, tensor=None):
    """A copy of ``src`` with one element of one weight set to ``value`` (optionally recast to ``dtype``)."""
    import torch
    from safetensors.torch import load_file, save_file

    d = _variant(src, dst)
    weights = load_file(str(d / "model.safetensors"))
    name = tensor or sorted(k for k, v in weights.items() if v.is_floating_point() and v.ndim == 2)[0]
    if dtype is not None:
        weights = {k: v.to(dtype) if v.is_floating_point() else v for k, v in weights.items()}
    weights[name] = weights[name].clone()
    weights[name].view(-1)[3] = value
    save_file({k: v.contiguous() for k, v in weights.items()}, str(d / "model.safetensors"))
    return d, name


@pytest.mark.parametrize("value,dtype", [(float("nan"), None), (float("inf"), None), (float("-inf"), "bfloat16"),
                                         (float("nan"), "float16")])
def test_non_finite_weights_are_bad_input(tmp_path, tiny_model, capsys, value, dtype):
    import torch

    d, name = _poisoned(tiny_model("marian"), tmp_path / "m", value, dtype and getattr(torch, dtype))
    with pytest.raises(UnsupportedModelError) as err:
        ModelBundle.load(d)
    assert f"NaN or Inf values in 1 tensor(s) ({name})" in str(err.value)
    assert main(["compare", "--model", str(d), "--backends", "torch-fp32", "--suites", "quality", "--limit", "2",
                 "--out", str(tmp_path / "out"), "--cache-dir", str(tmp_path / "cache"), "--quiet"]) == 2
    assert "diverged checkpoint" in " ".join(capsys.readouterr().err.split())


def test_finite_low_precision_weights_still_load(tmp_path, tiny_model):
    import torch

    d, _ = _poisoned(tiny_model("marian"), tmp_path / "m", 1.5, torch.bfloat16)
    assert ModelBundle.load(d).family_name == "marian"
