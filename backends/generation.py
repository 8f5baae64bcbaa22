"""The host-side generation loop, written once for every backend.

Greedy search and beam search over ``backend.encode`` / ``backend.decode_step``, with the
logits processing seq2seq checkpoints rely on (forced BOS/EOS, banned tokens, minimum
length, no-repeat n-grams). Beam search is a numpy port of transformers' (4.5x) vectorised
beam search, including its ``early_stopping=False`` length heuristic, so a split backend
can be checked token for token against ``model.generate``.

Both drop what is finished from the batch (``Seq2SeqBackend.compact_finished``), reordering the
encoder state and cache with ``backend.select``.
"""
from __future__ import annotations

import warnings
from typing import TYPE_CHECKING

import numpy as np

from backends.errors import BackendStateError
from backends.families import GenerationConventions

if TYPE_CHECKING:  # pragma: no cover
    from backends.base import Seq2SeqBackend

NEG_INF = -np.inf


def process_scores(scores: np.ndarray, prefix: np.ndarray, max_length: int,
                   conv: GenerationConventions) -> np.ndarray:
    """Apply the family's logits processors in place. ``prefix`` is ``[N, cur_len]``."""
    cur_len = prefix.shape[1]
    if conv.min_length and cur_len < conv.min_length:
        scores[:, conv.eos_token_id] = NEG_INF
    if conv.no_repeat_ngram_size and cur_len + 1 >= conv.no_repeat_ngram_size:
        n = conv.no_repeat_ngram_size
        for row in range(prefix.shape[0]):
            toks = prefix[row].tolist()
            key = tuple(toks[cur_len - n + 1:]) if n > 1 else ()
            banned = [toks[i + n - 1] for i in range(cur_len - n + 1) if tuple(toks[i:i + n - 1]) == key]
            if banned:
                scores[row, banned] = NEG_INF
    if conv.bad_words_ids:
        scores[:, list(conv.bad_words_ids)] = NEG_INF
    if conv.forced_bos_token_id is not None and cur_len == 1:
        scores[:, :] = NEG_INF
        scores[:, conv.forced_bos_token_id] = 0.0
    if conv.forced_eos_token_id is not None and cur_len == max_length - 1:
        scores[:, :] = NEG_INF
        scores[:, conv.forced_eos_token_id] = 0.0
    return scores


def _log_softmax(x: np.ndarray) -> np.ndarray:
    m = np.max(x, axis=-1, keepdims=True)
    z = x - m
    return z - np.log(np.sum(np.exp(z), axis=-1, keepdims=True))


def _strip(seq: np.ndarray, conv: GenerationConventions) -> list[int]:
    """The generated tokens up to EOS, without pad tokens (as Hugging Face ``generate`` and CTranslate2
    return them: a pad id a model emits mid-sequence must not make two backends' outputs differ)."""
    out = []
    for t in seq.tolist()[1:]:
        if t == conv.eos_token_id:
            break
        if t != conv.pad_token_id:
            out.append(int(t))
    return out


def generate(backend: "Seq2SeqBackend", input_ids: np.ndarray, attention_mask: np.ndarray,
             max_new_tokens: int, num_beams: int, conv: GenerationConventions) -> list[list[int]]:
    if num_beams <= 1:
        return greedy(backend, input_ids, attention_mask, max_new_tokens, conv)
    return beam_search(backend, input_ids, attention_mask, max_new_tokens, num_beams, conv)


def greedy(backend, input_ids, attention_mask, max_new_tokens, conv, compact: bool | None = None
           ) -> list[list[int]]:
    """Greedy search. Rows that have emitted EOS leave the batch (``compact``; None: the backend's
    ``compact_finished``): the next steps run only the rows still open, with their encoder state and
    cache selected."""
    state = backend.encode_impl(input_ids, attention_mask)
    batch = input_ids.shape[0]
    max_length = 1 + max_new_tokens
    seqs = np.full((batch, 1), conv.decoder_start_token_id, dtype=np.int64)
    finished = np.zeros(batch, dtype=bool)
    open_rows = np.arange(batch)  # the rows of seqs the state and cache hold, in their order
    compact = backend.compact_finished if compact is None else compact
    cache = None
    for _ in range(max_new_tokens):
        prefix = seqs[open_rows]
        logits, cache = backend.decode_step_impl(state, prefix, cache)
        scores = process_scores(np.array(logits, dtype=np.float32), prefix, max_length, conv)
        nxt = np.full(batch, conv.pad_token_id, dtype=np.int64)
        nxt[open_rows] = np.where(finished[open_rows], conv.pad_token_id, np.argmax(scores, axis=-1))
        seqs = np.concatenate([seqs, nxt[:, None]], axis=1)
        finished |= nxt == conv.eos_token_id
        if finished.all():
            break
        if compact and finished[open_rows].any():
            keep = np.flatnonzero(~finished[open_rows])
            try:
                state, cache = backend.select(state, keep), backend.select(cache, keep)
            except BackendStateError as exc:  # a plugin's state that cannot be reordered: keep every row
                compact = False
                warnings.warn(f"{backend.name}: finished rows stay in the batch, its encoder state or cache "
                              f"cannot be reordered ({exc}); set compact_finished = False on the backend class "
                              f"to say so", RuntimeWarning, stacklevel=2)
            else:
                open_rows = open_rows[keep]
    return [_strip(row, conv) for row in seqs]


def _topk(x: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k largest values per row, sorted descending (stable for ties)."""
    if k >= x.shape[1]:
        return np.argsort(-x, axis=1, kind="stable")[:, :k]
    part = np.argpartition(-x, k - 1, axis=1)[:, :k]
    part.sort(axis=1)  # index order, so the stable sort below breaks ties by index
    vals = np.take_along_axis(x, part, axis=1)
    order = np.argsort(-vals, axis=1, kind="stable")
    return np.take_along_axis(part, order, axis=1)


def beam_search(backend, input_ids, attention_mask, max_new_tokens, num_beams, conv) -> list[list[int]]:
    """Beam search (transformers' vectorised search). A source whose best hypotheses can no longer change
    leaves the batch with its beams (``backend.compact_finished``), as finished rows do in greedy search."""
    batch = input_ids.shape[0]
    k = num_beams
    keep = 2 * k  # one EOS token: max(2, 1 + 1) * num_beams candidates
    max_length = 1 + max_new_tokens
    lp = conv.length_penalty
    early = conv.early_stopping
    compact = backend.compact_finished

    state = backend.encode_impl(input_ids, attention_mask)
    state = backend.select(state, np.repeat(np.arange(batch), k))
    fill = conv.pad_token_id
    running = np.full((batch, k, max_length), fill, dtype=np.int64)
    running[:, :, 0] = conv.decoder_start_token_id
    sequences = running.copy()
    running_scores = np.zeros((batch, k), dtype=np.float32)
    running_scores[:, 1:] = -1e9
    beam_scores = np.full((batch, k), -1e9, dtype=np.float32)
    finished = np.zeros((batch, k), dtype=bool)
    improvable = np.ones((batch, 1), dtype=bool)
    top_mask = np.concatenate([np.ones(k, bool), np.zeros(keep - k, bool)])
    best: list[np.ndarray | None] = [None] * batch  # each source's best hypothesis, once final
    sources = np.arange(batch)  # the sources still searched, in the order of the arrays above
    cache = None
    cur_len = 1
    while True:
        batch = len(sources)
        rows = np.arange(batch)[:, None]
        flat = running[:, :, :cur_len].reshape(batch * k, cur_len)
        logits, cache = backend.decode_step_impl(state, flat, cache)
        logp = _log_softmax(np.asarray(logits, dtype=np.float32))
        logp = process_scores(logp, flat, max_length, conv)
        vocab = logp.shape[-1]
        acc = (logp.reshape(batch, k, vocab) + running_scores[:, :, None]).reshape(batch, k * vocab)
        top_idx = _topk(acc, keep)
        top_lp = np.take_along_axis(acc, top_idx, axis=1)
        src_beam = top_idx // vocab
        tokens = top_idx % vocab
        top_seq = running[rows, src_beam].copy()  # [B, keep, L]
        top_seq[:, :, cur_len] = tokens
        hits = (tokens == conv.eos_token_id) | (cur_len + 1 >= max_length)

        # running beams for the next step: best non-finished
        run_lp = top_lp + hits.astype(np.float32) * -1e9
        nxt = _topk(run_lp, k)
        running = np.take_along_axis(top_seq, nxt[:, :, None], axis=1)
        running_scores = np.take_along_axis(run_lp, nxt, axis=1)
        running_src = np.take_along_axis(src_beam, nxt, axis=1)

        # finished beams: merge the new ones if they score higher
        just_finished = hits & top_mask[None, :]
        fin_lp = top_lp / float((cur_len + 1 - 1) ** lp)
        if early is True:
            fin_lp = fin_lp + np.all(finished, axis=-1, keepdims=True).astype(np.float32) * -1e9
        fin_lp = fin_lp + (~improvable).astype(np.float32) * -1e9
        fin_lp = fin_lp + (~just_finished).astype(np.float32) * -1e9
        m_seq = np.concatenate([sequences, top_seq], axis=1)
        m_scores = np.concatenate([beam_scores, fin_lp], axis=1)
        m_fin = np.concatenate([finished, just_finished], axis=1)
        sel = _topk(m_scores, k)
        sequences = np.take_along_axis(m_seq, sel[:, :, None], axis=1)
        beam_scores = np.take_along_axis(m_scores, sel, axis=1)
        finished = np.take_along_axis(m_fin, sel, axis=1)

        flat_src = (running_src + np.arange(batch)[:, None] * k).reshape(-1)
        cache = backend.select(cache, flat_src)
        cur_len += 1

        best_len = (max_length - 1) if (early == "never" and lp > 0) else (cur_len - 1)
        best_possible = running_scores[:, :1] / float(best_len ** lp)
        worst_fin = np.where(finished, np.min(beam_scores, axis=1, keepdims=True), -1e9)
        improvable = improvable & np.any(best_possible > worst_fin, axis=-1, keepdims=True)
        open_beam = not (np.all(finished) and early is True)
        if not (np.any(improvable) and open_beam and not np.all(hits)):
            break
        # a source that cannot improve (or, with early stopping, has k finished beams) keeps its sequences
        # from here on: it leaves the batch with its k rows of state and cache
        final = ~improvable[:, 0] | (np.all(finished, axis=-1) if early is True else False)
        if compact and final.any():
            for b in np.flatnonzero(final):
                best[sources[b]] = sequences[b, 0]
            stay = np.flatnonzero(~final)
            stay_rows = (stay[:, None] * k + np.arange(k)[None, :]).reshape(-1)
            state, cache = backend.select(state, stay_rows), backend.select(cache, stay_rows)
            running, running_scores, sequences, beam_scores, finished, improvable = (
                a[stay] for a in (running, running_scores, sequences, beam_scores, finished, improvable))
            sources = sources[stay]
    for b, src in enumerate(sources):
        best[src] = sequences[b, 0]
    return [_strip(seq, conv) for seq in best]
