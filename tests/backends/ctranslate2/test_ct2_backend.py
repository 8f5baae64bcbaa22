"""CTranslate2 backends against the PyTorch FP32 oracle, on real runtimes (no mocks).

Fast tests use the tiny random Marian/BART/T5 checkpoints (tests/conftest.py) and a
32-sentence slice of the default model; the 1000-sentence checks are ``slow``.
"""
from __future__ import annotations

import gzip
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from backends._imports import is_available

pytestmark = pytest.mark.skipif(not (is_available("ctranslate2") and is_available("torch")),
                                reason="ctranslate2/torch not installed")

REPO = Path(__file__).resolve().parents[3]
FAMILIES = ("marian", "bart", "t5")


def _test_sources(data_dir: Path, n: int) -> list[str]:
    with gzip.open(data_dir / "test_2016_flickr.en.gz", "rt", encoding="utf-8") as fh:
        return [next(fh).strip() for _ in range(n)]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("ct2-artifacts")


def _generate(name, bundle, workdir, sources, max_new_tokens, num_beams=1, **options):
    from backends.registry import get_backend

    be = get_backend(name, **{"threads": 1, **options})  # correctness only; 1 thread is kinder to a shared box
    be.prepare(bundle, workdir)
    enc = bundle.encode_sources(sources, be.max_source_length)
    with be:
        return be.generate(enc.input_ids, enc.attention_mask, max_new_tokens=max_new_tokens, num_beams=num_beams), be


# ---- packaging / preflight ------------------------------------------------------------
def test_package_is_light_and_declares_all_variants():
    code = ("import sys, backends.ctranslate2 as p; print(json.dumps({'loaded': 'ctranslate2' in sys.modules, "
            "'names': [b['name'] for b in p.BACKENDS]}))")
    out = subprocess.run([sys.executable, "-c", "import json; " + code], cwd=REPO, capture_output=True,
                         text=True, check=True)
    info = json.loads(out.stdout)
    assert info["loaded"] is False  # the real library is imported lazily, never by the registry
    names = ["ct2-fp32", "ct2-int8", "ct2-int8-float32", "ct2-int8-mkl", "ct2-int8-dnnl", "ct2-int16"]
    assert info["names"] == names
    from backends.registry import available_backends, get_entry

    assert set(names) <= set(available_backends())
    assert get_entry("ct2-int16").options == {"compute_type": "int16", "gemm_library": "mkl"}
    assert get_entry("ct2-int8-dnnl").options == {"compute_type": "int8", "gemm_library": "dnnl"}


def test_preflight_matches_ctranslate2_report():
    import ctranslate2

    from backends.registry import get_backend

    supported = set(ctranslate2.get_supported_compute_types("cpu"))
    for name, ct in [("ct2-fp32", "float32"), ("ct2-int8", "int8"), ("ct2-int8-float32", "int8_float32"),
                     ("ct2-int16", "int16")]:
        # "auto": whatever library CT2 already runs in this (test) process
        reasons = get_backend(name, gemm_library="auto").preflight()
        assert (reasons == []) == (ct in supported), (name, reasons)
        if reasons:
            assert ct in reasons[0] and "get_supported_compute_types" in reasons[0]


def test_unsupported_compute_type_is_a_clean_explained_skip(tiny_model, tmp_path):
    import ctranslate2

    from backends.ctranslate2 import ComputeTypeUnsupportedError
    from backends.errors import SeqquantError
    from backends.model import ModelBundle
    from backends.registry import get_backend

    supported = set(ctranslate2.get_supported_compute_types("cpu"))
    candidates = [ct for ct in ("int16", "float16", "bfloat16", "int8_float16") if ct not in supported]
    if not candidates:
        pytest.skip(f"this CPU supports every compute type CT2 knows: {sorted(supported)}")
    ct = candidates[0]
    be = get_backend("ct2-int16", compute_type=ct, gemm_library="auto")
    with pytest.raises(ComputeTypeUnsupportedError) as info:
        be.prepare(ModelBundle.load(tiny_model("marian")), tmp_path)
    assert isinstance(info.value, SeqquantError)
    assert info.value.reasons and ct in str(info.value) and "float32" in str(info.value)  # lists what works
    assert list(tmp_path.iterdir()) == []  # nothing converted


_GEMM_PROBE = """
import json, sys
from backends.registry import get_backend
first, other = sys.argv[1], sys.argv[2]
be = get_backend("ct2-int8-" + first)
reasons = be.preflight()
int16 = get_backend("ct2-int16", gemm_library="auto").preflight()
late = get_backend("ct2-int8-" + other).preflight()
print(json.dumps({"reasons": reasons, "gemm": be.signature().quantization.get("gemm_library"),
                  "int16_reasons": int16, "late": late}))
"""


@pytest.mark.skipif(__import__("platform").machine().lower() not in ("x86_64", "amd64"), reason="x86 GEMM libraries")
@pytest.mark.parametrize("first,other", [("mkl", "dnnl"), ("dnnl", "mkl")])
def test_gemm_library_is_chosen_per_process_and_read_back(first, other):
    """CT2 reads CT2_USE_MKL once per process: the choice is applied before CT2's first use, read
    back from CT2 (only MKL has an int16 GEMM), recorded in the signature, and a later backend
    asking for the other library gets a clear reason instead of silently running the first."""
    env = {k: v for k, v in os.environ.items() if k != "CT2_USE_MKL"}
    out = subprocess.run([sys.executable, "-c", _GEMM_PROBE, first, other], cwd=REPO, capture_output=True,
                         text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    info = json.loads(out.stdout.strip().splitlines()[-1])
    if info["reasons"]:  # e.g. a CT2 build without MKL: an explained skip, never a wrong library
        assert first in info["reasons"][0]
        pytest.skip(info["reasons"][0])
    assert info["gemm"] == first
    assert (info["int16_reasons"] == []) == (first == "mkl"), info["int16_reasons"]
    assert len(info["late"]) == 1 and f"'{other}'" in info["late"][0] and f"already runs {first}" in info["late"][0]


def test_gemm_library_option_is_validated():
    from backends.errors import InvalidInputError
    from backends.registry import get_backend

    with pytest.raises(InvalidInputError, match="gemm_library 'openblas'.*auto, mkl, dnnl"):
        get_backend("ct2-int8", gemm_library="openblas")


def test_invalid_compute_type_option_is_a_user_error():
    from backends.errors import InvalidInputError
    from backends.registry import get_backend

    with pytest.raises(InvalidInputError, match="compute_type"):
        get_backend("ct2-fp32", compute_type="int4")


# ---- FP32 equals the oracle ------------------------------------------------------------
@pytest.mark.parametrize("family", FAMILIES)
def test_fp32_greedy_equals_torch_token_for_token(family, tiny_model, workdir, default_data_dir):
    from backends.model import ModelBundle

    bundle = ModelBundle.load(tiny_model(family))
    sources = _test_sources(default_data_dir, 12)
    ref, _ = _generate("torch-fp32", bundle, workdir, sources, max_new_tokens=24)
    got, be = _generate("ct2-fp32", bundle, workdir, sources, max_new_tokens=24)
    assert len({tuple(r) for r in ref}) > 1  # outputs depend on the source: the comparison means something
    assert got == ref
    q = be.signature().quantization
    assert q["compute_type"] == "float32" and q["effective_compute_type"] == "float32"
    assert set(be.runtime_versions()) == {"ctranslate2", "transformers"}


@pytest.mark.parametrize("family", FAMILIES)
def test_artifact_vocabulary_and_start_token_follow_hf(family, tiny_model, workdir):
    from backends.model import ModelBundle
    from backends.registry import get_backend

    bundle = ModelBundle.load(tiny_model(family))
    be = get_backend("ct2-fp32")
    art = be.prepare(bundle, workdir)
    conv = bundle.conventions
    d = Path(art.directory)
    vocab = json.loads((d / "shared_vocabulary.json").read_text())
    assert len(vocab) == conv.vocab_size == len(set(vocab))
    assert vocab[conv.decoder_start_token_id] == bundle.tokenizer.convert_ids_to_tokens(conv.decoder_start_token_id)
    cfg = json.loads((d / "config.json").read_text())
    assert cfg["decoder_start_token"] == vocab[conv.decoder_start_token_id]
    assert cfg["eos_token"] == vocab[conv.eos_token_id]
    assert art.bytes == sum(p.stat().st_size for p in d.iterdir() if p.name != "manifest.json")
    assert art.extra["conversion"]["quantization"] == "float32"


@pytest.mark.parametrize("family", FAMILIES)
def test_step_logits_come_from_ct2_and_match_torch(family, tiny_model, workdir, default_data_dir):
    from backends.generation import greedy
    from backends.model import ModelBundle
    from backends.registry import get_backend

    bundle = ModelBundle.load(tiny_model(family))
    sources = _test_sources(default_data_dir, 4)
    enc = bundle.encode_sources(sources, 64)
    ref = get_backend("torch-fp32-split", threads=1)
    ct = get_backend("ct2-fp32", threads=1)
    ref.prepare(bundle, workdir)
    ct.prepare(bundle, workdir)
    with ref, ct:
        a = ref.first_step_logits(enc.input_ids, enc.attention_mask)
        b = ct.first_step_logits(enc.input_ids, enc.attention_mask)
        assert a.shape == b.shape == (4, bundle.conventions.vocab_size)
        np.testing.assert_allclose(b, a, atol=1e-3 * float(np.abs(a).max()))
        # a prefix of real tokens, then EOS and pad (finished rows in the host loop)
        conv = bundle.conventions
        toks = ct.generate(enc.input_ids, enc.attention_mask, max_new_tokens=4)
        prefix = np.array([[conv.decoder_start_token_id] + (t + [conv.pad_token_id] * 4)[:4]
                           + [conv.eos_token_id, conv.pad_token_id] for t in toks])
        la, _ = ref.decode_step(ref.encode(enc.input_ids, enc.attention_mask), prefix)
        lb, cache = ct.decode_step(ct.encode(enc.input_ids, enc.attention_mask), prefix)
        np.testing.assert_allclose(lb, la, atol=1e-3 * float(np.abs(la).max()))
        # the shared host loop over CT2's decode_step reproduces CT2's native generator
        host = greedy(ct, enc.input_ids, enc.attention_mask, 8, conv)
        assert host == ct.generate(enc.input_ids, enc.attention_mask, max_new_tokens=8)


def _eos_prone_marian(src: Path, dst: Path, generation: dict) -> Path:
    """Tiny Marian whose EOS logit is raised: outputs of every length, including empty."""
    import torch
    import transformers

    model = transformers.MarianMTModel.from_pretrained(src)
    with torch.no_grad():
        model.final_logits_bias[0, model.config.eos_token_id] = 1.9
    model.save_pretrained(dst)
    for f in src.iterdir():
        if f.suffix in (".spm",) or f.name in ("vocab.json", "tokenizer_config.json", "special_tokens_map.json"):
            shutil.copy(f, dst / f.name)
    gen = {"decoder_start_token_id": 8000, "eos_token_id": 0, "forced_eos_token_id": 0, "pad_token_id": 8000,
           **generation}
    (dst / "generation_config.json").write_text(json.dumps(gen))
    return dst


@pytest.mark.parametrize("generation", [{}, {"min_length": 4, "bad_words_ids": [[8000]], "no_repeat_ngram_size": 2}],
                         ids=["plain", "min-length+bad-words+no-repeat"])
def test_generation_conventions_map_onto_translate_batch(generation, tiny_model, tmp_path, default_data_dir):
    from backends.model import ModelBundle

    bundle = ModelBundle.load(_eos_prone_marian(tiny_model("marian"), tmp_path / "m", generation))
    sources = _test_sources(default_data_dir, 16)
    ref, _ = _generate("torch-fp32", bundle, tmp_path / "w", sources, max_new_tokens=16)
    got, _ = _generate("ct2-fp32", bundle, tmp_path / "w", sources, max_new_tokens=16)
    lengths = {len(r) for r in ref}
    if not generation:
        assert 0 in lengths and max(lengths) == 15  # EOS at step 1 and the forced-EOS length cap both occur
    else:
        assert min(lengths) >= 3
    assert got == ref


# ---- artifacts, quantized variants -------------------------------------------------------
def test_artifact_cache_reuse_and_corruption_rebuild(tiny_model, tmp_path):
    from backends.model import ModelBundle
    from backends.registry import get_backend

    bundle = ModelBundle.load(tiny_model("bart"))
    first = get_backend("ct2-int8").prepare(bundle, tmp_path)
    assert not first.reused
    again = get_backend("ct2-int8").prepare(bundle, tmp_path)
    assert again.reused and again.directory == first.directory
    model_bin = Path(first.directory) / "model.bin"
    data = bytearray(model_bin.read_bytes())
    data[len(data) // 2] ^= 0xFF
    model_bin.write_bytes(bytes(data))
    rebuilt = get_backend("ct2-int8").prepare(bundle, tmp_path)
    assert not rebuilt.reused


@pytest.mark.parametrize("name", ["ct2-int8", "ct2-int8-float32"])
def test_int8_variants_run_and_are_smaller(name, tiny_model, workdir, default_data_dir):
    from backends.errors import BackendStateError
    from backends.model import ModelBundle
    from backends.registry import get_backend

    bundle = ModelBundle.load(tiny_model("marian"))
    fp32 = get_backend("ct2-fp32", threads=1)
    q = get_backend(name, threads=1)
    if q.preflight():
        pytest.skip("; ".join(q.preflight()))
    a32 = fp32.prepare(bundle, workdir)
    a8 = q.prepare(bundle, workdir)
    assert a8.bytes < 0.5 * a32.bytes
    # the orchestrator records the signature right after prepare(): the effective type is already known
    assert q.signature().quantization["effective_compute_type"].startswith("int8")
    enc = bundle.encode_sources(_test_sources(default_data_dir, 8), 64)
    with pytest.raises(BackendStateError):
        q.generate(enc.input_ids, enc.attention_mask)
    with fp32, q:
        l32 = fp32.first_step_logits(enc.input_ids, enc.attention_mask)
        l8 = q.first_step_logits(enc.input_ids, enc.attention_mask)
        out = q.generate(enc.input_ids, enc.attention_mask, max_new_tokens=8)
    cos = np.sum(l32 * l8, 1) / (np.linalg.norm(l32, axis=1) * np.linalg.norm(l8, axis=1))
    assert cos.min() > 0.9 and not np.allclose(l32, l8)  # really quantized, still close
    assert len(out) == 8 and all(len(o) == 7 for o in out)  # forced-EOS cap: max_new_tokens - 1 tokens
    sig = q.signature()
    assert sig.quantization["compute_type"] == q.compute_type
    assert sig.quantization["effective_compute_type"].startswith("int8")


def test_default_model_fp32_agrees_with_torch_quick(default_model_dir, default_data_dir, workdir):
    from backends.model import ModelBundle

    bundle = ModelBundle.load(default_model_dir)
    sources = _test_sources(default_data_dir, 16)
    ref, _ = _generate("torch-fp32", bundle, workdir, sources, max_new_tokens=64)
    got, _ = _generate("ct2-fp32", bundle, workdir, sources, max_new_tokens=64)
    assert {len(r) for r in ref} != {63}  # real EOS endings, not the length cap
    same = sum(a == b for a, b in zip(ref, got))
    assert same >= 15, f"ct2-fp32 equals torch-fp32 on only {same}/16 sentences"


# ---- the full default test set ----------------------------------------------------------
@pytest.mark.slow
def test_default_model_full_test_set(default_model_dir, default_data_dir, workdir):
    """>= 99% token-for-token agreement of ct2-fp32 with torch-fp32; ct2-int8 BLEU >= FP32 - 0.5."""
    import sacrebleu

    from backends.model import ModelBundle
    from backends.registry import get_backend

    bundle = ModelBundle.load(default_model_dir)
    with gzip.open(default_data_dir / "test_2016_flickr.en.gz", "rt", encoding="utf-8") as fh:
        sources = [line.strip() for line in fh]
    with gzip.open(default_data_dir / "test_2016_flickr.de.gz", "rt", encoding="utf-8") as fh:
        refs = [line.strip() for line in fh]
    outs = {}
    for name in ("torch-fp32", "ct2-fp32", "ct2-int8"):
        be = get_backend(name)
        be.prepare(bundle, workdir)
        res = []
        with be:
            for i in range(0, len(sources), 32):
                enc = bundle.encode_sources(sources[i:i + 32], be.max_source_length)
                res += be.generate(enc.input_ids, enc.attention_mask, max_new_tokens=64)
        outs[name] = res
    agree = sum(a == b for a, b in zip(outs["torch-fp32"], outs["ct2-fp32"])) / len(sources)
    assert agree >= 0.99, agree
    bleu = {n: sacrebleu.corpus_bleu(bundle.decode(o), [refs]).score for n, o in outs.items()}
    assert bleu["ct2-int8"] >= bleu["torch-fp32"] - 0.5, bleu


@pytest.mark.parametrize("num_beams", [1, 2])
def test_generate_raises_on_nan_scores(tiny_model, tmp_path, num_beams):
    """CT2's own loop turns NaN logits into empty or <unk> hypotheses; its NaN score says so."""
    from backends.errors import NonFiniteLogitsError
    from backends.model import ModelBundle
    from tests.fixtures.tiny_models import overflowing_copy

    bundle = ModelBundle.load(overflowing_copy(tiny_model("marian"), tmp_path / "m"))
    with pytest.raises(NonFiniteLogitsError, match=r"ct2-fp32: translate_batch returned a NaN score .* 2 of 2"):
        _generate("ct2-fp32", bundle, tmp_path / "art", ["A dog runs.", "Two men talk."], 6, num_beams)
