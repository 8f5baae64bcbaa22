"""Representative data for the encoder and the decoder step, calibrated *as a decoder*.

Encoder samples are real source batches (short, long and padding-heavy rows come with the
static source length). Decoder samples are real step inputs recorded from the FP32 graphs:
encoder states from the FP32 encoder, and self-attention caches filled while
teacher-forcing the reference targets (positions: BOS, early, middle, near-EOS) and while
generating greedily with FP32 (the states inference will actually see).

``recipe="naive"`` reproduces the first-try failure: the decoder only ever sees the BOS
token at position 0 with all-zero encoder states and caches.
"""
from __future__ import annotations

from typing import Any, Iterator

import numpy as np

from backends.base import CalibrationSet
from backends.errors import InvalidInputError
from backends.tflite.graphs import self_attention_mask

RECIPES = ("real", "naive")


def _pad_sources(model, texts: list[str], S: int) -> tuple[np.ndarray, np.ndarray]:
    enc = model.encode_sources(texts, S)
    n, w = enc.input_ids.shape
    ids = np.full((n, S), model.conventions.pad_token_id, np.int32)
    mask = np.zeros((n, S), np.int32)
    ids[:, :w] = enc.input_ids
    mask[:, :w] = enc.attention_mask
    return ids, mask


def _rows_to_batches(rows: list[dict[str, np.ndarray]], batch: int) -> list[dict[str, np.ndarray]]:
    """Stack single-row samples into fixed-size batches (the last one is topped up)."""
    out = []
    for i in range(0, len(rows), batch):
        chunk = rows[i:i + batch]
        while len(chunk) < batch:
            chunk = chunk + rows[: batch - len(chunk)]
        out.append({k: np.concatenate([r[k] for r in chunk], axis=0) for k in chunk[0]})
    return out


class CalibrationRecorder:
    """Runs the FP32 TF functions (not the converted files) to record step inputs."""

    def __init__(self, model, graphs, enc_fn, dec_fn, batch: int = 8, seed: int = 0):
        import tensorflow as tf  # noqa: F401 - caller already required it

        self.model, self.graphs, self.enc_fn, self.dec_fn = model, graphs, enc_fn, dec_fn
        self.S, self.T = graphs.spec.source_length, graphs.spec.cache_length
        self.batch = batch
        self.seed = seed

    def _encode(self, ids, mask) -> dict[str, np.ndarray]:
        out = self.enc_fn(input_ids=ids, attention_mask=mask)
        return {k: v.numpy() for k, v in out.items()}

    def _empty_cache(self, n: int) -> dict[str, np.ndarray]:
        g = self.graphs
        return {k: np.zeros((n, g.H, self.T, g.Dh), np.float32) for k in g.cache_names()}

    def encoder_samples(self, calib: CalibrationSet, n: int) -> list[dict[str, np.ndarray]]:
        ids, mask = _pad_sources(self.model, calib.sources[:n], self.S)
        return [{"input_ids": ids[i:i + self.batch], "attention_mask": mask[i:i + self.batch]}
                for i in range(0, len(ids), self.batch) if len(ids[i:i + self.batch]) == self.batch] or \
            [{"input_ids": ids, "attention_mask": mask}]

    def decoder_samples(self, calib: CalibrationSet, n: int, recipe: str = "real",
                        positions_per_source: int = 6) -> Iterator[dict[str, np.ndarray]]:
        """Yields fixed-size batches, recorded 32 sources at a time (bounded memory). Every call yields
        the same samples (the random positions and order restart from ``seed``): the converter's
        min-max calibration and the percentile/mse range pass each iterate the set once and must
        see the same states."""
        if recipe not in RECIPES:
            raise InvalidInputError(f"calibration recipe '{recipe}' unknown; choose one of {RECIPES}")
        sources, targets = calib.sources[:n], calib.targets[:n]
        if recipe == "naive":
            yield from self._naive(sources)
            return
        rng = np.random.default_rng(self.seed)
        start = self.model.conventions.decoder_start_token_id
        tgt_ids = self.model.encode_targets(targets)
        for i in range(0, len(sources), 32):
            ids, mask = _pad_sources(self.model, sources[i:i + 32], self.S)
            enc = self._encode(ids, mask)
            # teacher forcing: the decoder input at step t is ([start] + target)[t]
            forced = [([start] + list(t))[: self.T] for t in tgt_ids[i:i + 32]]
            rows = self._teacher_force(enc, mask, forced, positions_per_source, rng)
            # the FP32 model's own greedy outputs: the states inference will actually see
            generated = self._greedy(enc, mask)
            rows += self._teacher_force(enc, mask, generated, max(2, positions_per_source // 2), rng)
            order = rng.permutation(len(rows))
            yield from _rows_to_batches([rows[j] for j in order], self.batch)

    def top_logits(self, calib: CalibrationSet, n: int) -> np.ndarray:
        """The per-step maximum FP32 logit while generating greedily (sizes the fine LM head)."""
        tops = []
        orig = self._step

        def step(enc, mask, tokens, t, cache, record=(), rows=None):
            logits = orig(enc, mask, tokens, t, cache, record, rows)
            tops.extend(np.max(logits, axis=-1).tolist())
            return logits

        self._step = step
        try:
            for i in range(0, min(n, len(calib.sources)), 32):
                ids, mask = _pad_sources(self.model, calib.sources[i:min(i + 32, n)], self.S)
                self._greedy(self._encode(ids, mask), mask)
        finally:
            self._step = orig
        return np.asarray(tops, np.float32)

    def _pick(self, length: int, k: int, rng: np.random.Generator) -> set[int]:
        """BOS, early, middle, near-EOS, plus random positions of one sequence."""
        last = max(0, length - 1)
        chosen = {0, min(1, last), min(3, last), last // 2, max(0, last - 1), last}
        extra = rng.integers(0, last + 1, size=max(0, k - len(chosen)))
        return chosen | {int(x) for x in extra}

    def _step(self, enc, mask, tokens, t, cache, record=(), rows=None):
        n = mask.shape[0]
        feeds = {"input_ids": tokens[:, None].astype(np.int32), "position": np.full((n,), t, np.int32),
                 "self_attention_mask": self_attention_mask(np.full((n,), t), self.T),
                 "encoder_attention_mask": mask, **enc, **cache}
        out = self.dec_fn(**feeds)
        for r in record:  # snapshot before this step's K/V is written into the cache
            rows.append({name: np.array(v[r:r + 1]) for name, v in feeds.items()})
        for name in self.graphs.cache_names():
            cache[name][:, :, t] = out["new_" + name[len("self_"):]].numpy()[:, :, 0]
        return out["logits"].numpy()

    def _greedy(self, enc, mask) -> list[list[int]]:
        conv = self.model.conventions
        n = mask.shape[0]
        cache = self._empty_cache(n)
        seqs = [[conv.decoder_start_token_id] for _ in range(n)]
        done = np.zeros(n, bool)
        cur = np.full(n, conv.decoder_start_token_id, np.int64)
        for t in range(self.T - 1):
            logits = self._step(enc, mask, cur, t, cache)
            cur = np.argmax(logits, axis=-1)
            for r in range(n):
                if not done[r]:
                    seqs[r].append(int(cur[r]))
            done |= cur == conv.eos_token_id
            if done.all():
                break
        return [s[:-1] if len(s) > 1 else s for s in seqs]  # inputs: drop the last produced token

    def _teacher_force(self, enc, mask, forced: list[list[int]], k: int,
                       rng: np.random.Generator) -> list[dict[str, np.ndarray]]:
        pad = self.model.conventions.pad_token_id
        n = mask.shape[0]
        cache = self._empty_cache(n)
        picks = [self._pick(len(f), k, rng) for f in forced]
        rows = []
        for t in range(max(len(f) for f in forced)):
            cur = np.array([f[t] if t < len(f) else pad for f in forced], np.int64)
            record = [r for r in range(n) if t < len(forced[r]) and t in picks[r]]
            self._step(enc, mask, cur, t, cache, record, rows)
        return rows

    def _naive(self, sources: list[str]) -> list[dict[str, np.ndarray]]:
        """BOS at position 0, zero encoder states, zero caches (the first-try recipe)."""
        ids, mask = _pad_sources(self.model, sources, self.S)
        conv, g = self.model.conventions, self.graphs
        rows = []
        for i in range(0, len(ids), self.batch):
            m = mask[i:i + self.batch]
            b = m.shape[0]
            feeds: dict[str, Any] = {"input_ids": np.full((b, 1), conv.decoder_start_token_id, np.int32),
                                     "position": np.zeros((b,), np.int32),
                                     "self_attention_mask": self_attention_mask(np.zeros(b), self.T),
                                     "encoder_attention_mask": m}
            for name in g.boundary_names():
                shape = (b, self.S, g.D) if name == "encoder_hidden_states" else (b, g.H, self.S, g.Dh)
                feeds[name] = np.zeros(shape, np.float32)
            feeds.update(self._empty_cache(b))
            if b == self.batch:
                rows.append(feeds)
        return rows or [feeds]
