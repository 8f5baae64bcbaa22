"""The shared host loop must reproduce transformers' generate token for token."""
import numpy as np
import pytest

from backends.generation import _topk, process_scores
from backends.families import GenerationConventions
from backends.model import ModelBundle
from backends.registry import get_backend

SOURCES = ["A man in an orange hat starring at something.", "Two dogs play in the snow.",
           "A girl is eating an apple on a bench.", "People walk down the street at night.",
           "A child in a red jacket jumps into a pile of leaves."]
#: ten unrelated sources, so a row given another row's cache would get other tokens
MANY = SOURCES + ["An old fisherman mends a net by the harbour.", "Snow.", "The bus is late again today.",
                  "Four cyclists race down a steep mountain road in the rain.", "Children laugh."]


@pytest.mark.parametrize("family", ["marian", "bart", "t5", "mbart", "pegasus", "m2m100"])
@pytest.mark.parametrize("num_beams", [1, 4])
def test_split_loop_equals_hf_generate(tiny_model, tmp_path, family, num_beams):
    bundle = ModelBundle.load(tiny_model(family))
    enc = bundle.encode_sources(SOURCES, 32)
    outs = {}
    for name in ("torch-fp32", "torch-fp32-split"):
        be = get_backend(name, max_new_tokens=16)
        be.prepare(bundle, tmp_path)
        with be:
            outs[name] = be.generate(enc.input_ids, enc.attention_mask, num_beams=num_beams)
    assert outs["torch-fp32"] == outs["torch-fp32-split"]
    assert all(len(o) >= 1 for o in outs["torch-fp32"])


def test_forced_tokens():
    conv = GenerationConventions(decoder_start_token_id=2, eos_token_id=2, pad_token_id=1, vocab_size=6,
                                 forced_bos_token_id=0, forced_eos_token_id=2, bad_words_ids=(5,))
    s = process_scores(np.zeros((1, 6), np.float32), np.array([[2]]), max_length=5, conv=conv)
    assert np.argmax(s) == 0 and np.isinf(s[0, 1])
    s = process_scores(np.zeros((1, 6), np.float32), np.array([[2, 0, 3, 4]]), max_length=5, conv=conv)
    assert np.argmax(s) == 2
    s = process_scores(np.zeros((1, 6), np.float32), np.array([[2, 0]]), max_length=9, conv=conv)
    assert np.isinf(s[0, 5]) and not np.isinf(s[0, 4])


def test_no_repeat_ngram():
    conv = GenerationConventions(decoder_start_token_id=0, eos_token_id=1, pad_token_id=0, vocab_size=6,
                                 no_repeat_ngram_size=2)
    s = process_scores(np.zeros((1, 6), np.float32), np.array([[0, 3, 4, 3]]), max_length=20, conv=conv)
    assert np.isinf(s[0, 4]) and not np.isinf(s[0, 3])


def test_topk_sorted_and_ties():
    x = np.array([[0.1, 0.5, 0.5, 0.3, 0.9]])
    assert _topk(x, 3).tolist() == [[4, 1, 2]]


def test_returned_tokens_stop_at_eos_and_drop_pad():
    """Like transformers' generate and CTranslate2 as the backends return them: a pad id the model emits
    mid-sequence is dropped, so it never makes two backends' outputs differ."""
    from backends.generation import _strip

    conv = GenerationConventions(decoder_start_token_id=9, eos_token_id=2, pad_token_id=1, vocab_size=10)
    assert _strip(np.array([9, 4, 1, 5, 2, 6, 1]), conv) == [4, 5]
    assert _strip(np.array([9, 4, 5]), conv) == [4, 5]


def _eos_after_first_token(backend, sizes: list[int]) -> None:
    """Make rows finish at different steps, decided by their own tokens (not their row number, which
    compaction changes): EOS wins once a row has ``1 + first generated token % 8`` tokens. Records the
    batch size of every decode step in ``sizes``."""
    step, eos = backend.decode_step_impl, backend.model.conventions.eos_token_id

    def decode_step_impl(state, ids, cache):
        sizes.append(ids.shape[0])
        logits, cache = step(state, ids, cache)
        logits = np.array(logits, dtype=np.float32)
        if ids.shape[1] > 1:
            done = ids.shape[1] >= 2 + ids[:, 1] % 8
            logits[done, eos] = logits[done].max(-1) + 1.0
        return logits, cache

    backend.decode_step_impl = decode_step_impl


def _with_and_without_compaction(tiny_model, tmp_path, name, search):
    """Translate MANY on the tiny Marian with ``name``, once keeping every row and once dropping finished
    ones, rows finishing by :func:`_eos_after_first_token`; ``search(backend, enc)`` runs the search.
    Returns ``(outputs, decode-step batch sizes)``, each keyed by ``compact_finished``."""
    bundle = ModelBundle.load(tiny_model("marian"))
    enc = bundle.encode_sources(MANY, 32)
    be = get_backend(name, max_new_tokens=12, max_source_length=32)
    be.prepare(bundle, tmp_path)
    outs, sizes = {}, {}
    with be:
        for compact in (False, True):
            be.compact_finished = compact
            sizes[compact] = []
            _eos_after_first_token(be, sizes[compact])
            outs[compact] = search(be, enc)
            del be.decode_step_impl  # back to the class's method
    return outs, sizes


@pytest.mark.parametrize("num_beams", [1, 4])
@pytest.mark.parametrize("name", ["torch-fp32-split", "tflite-fp32-split", "onnx-fp32"])
def test_search_drops_finished_rows_and_keeps_every_token(tiny_model, tmp_path, name, num_beams):
    """Finished rows leave the batch (greedy: a row that emitted EOS; beam search: a source whose best
    hypotheses are final, with its beams): later steps run fewer rows (the encoder state and the runtime's
    own cache selected), and every row's tokens are the ones the loop gives without compaction."""
    from backends.registry import available_backends

    if name not in available_backends(installed_only=True):
        pytest.skip(f"{name} not installed")
    outs, sizes = _with_and_without_compaction(
        tiny_model, tmp_path, name, lambda be, enc: be.generate(enc.input_ids, enc.attention_mask, num_beams=num_beams))
    lengths = sorted({len(o) for o in outs[True]})
    assert len(lengths) >= 2, f"rows should finish at different steps: lengths {lengths}"
    assert outs[True] == outs[False]
    rows = len(MANY) * num_beams
    assert sizes[False] == [rows] * len(sizes[False])
    assert sizes[True][0] == rows and sizes[True][-1] < rows, sizes[True]
    assert sizes[True] == sorted(sizes[True], reverse=True) and len(sizes[True]) == len(sizes[False])
    assert all(n % num_beams == 0 for n in sizes[True])  # a source leaves with all its beams


class _Opaque:
    """A cache type the generic ``select`` does not know (a third-party backend's own object)."""

    def __init__(self, inner):
        self.inner = inner


def test_greedy_keeps_every_row_when_a_cache_cannot_be_reordered(tiny_model, tmp_path):
    """A plugin whose cache ``select`` cannot reorder (greedy never asked it to before finished rows left the
    batch) still translates: with a warning, every row stays to the end, and the tokens are the same."""
    bundle = ModelBundle.load(tiny_model("marian"))
    enc = bundle.encode_sources(MANY, 32)
    be = get_backend("torch-fp32-split", max_new_tokens=12, max_source_length=32)
    be.prepare(bundle, tmp_path)
    with be:
        sizes: list[int] = []
        _eos_after_first_token(be, sizes)
        expected = be.generate(enc.input_ids, enc.attention_mask)
        assert sizes[-1] < len(MANY)  # rows did leave the batch
        step = be.decode_step_impl

        def opaque_step(state, ids, cache):
            logits, inner = step(state, ids, None if cache is None else cache.inner)
            return logits, _Opaque(inner)

        be.decode_step_impl = opaque_step
        sizes.clear()
        with pytest.warns(RuntimeWarning, match="finished rows stay in the batch.*compact_finished = False"):
            got = be.generate(enc.input_ids, enc.attention_mask)
    assert got == expected
    assert sizes == [len(MANY)] * len(sizes)


@pytest.mark.parametrize("early,length_penalty", [(False, 1.0), (True, 1.0), ("never", 2.0), ("never", 0.5)])
def test_beam_search_drops_final_sources_under_every_stopping_rule(tiny_model, tmp_path, early, length_penalty):
    """When a source is final depends on the stopping rule (transformers' early_stopping True / False /
    "never" and the length penalty): under each, dropping final sources keeps every hypothesis."""
    import dataclasses

    from backends.generation import generate

    def search(be, enc):
        conv = dataclasses.replace(be.model.conventions, early_stopping=early, length_penalty=length_penalty)
        return generate(be, enc.input_ids, enc.attention_mask, 12, 4, conv)

    outs, sizes = _with_and_without_compaction(tiny_model, tmp_path, "torch-fp32-split", search)
    assert outs[True] == outs[False]
    if early == "never" and length_penalty > 1.0:
        # the bound at max_length (transformers' rule for "never") keeps every source improvable here
        assert sizes[True] == sizes[False]
    else:
        assert sizes[True][-1] < sizes[True][0] == len(MANY) * 4, sizes[True]
