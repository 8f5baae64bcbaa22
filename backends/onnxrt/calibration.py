"""Calibration inputs for static quantization, recorded from real FP32 runs.

* encoder: the tokenized calibration sources, in batches (as the encoder sees them at inference);
* decoder (first step, no past): the decoder-start step recorded during generation, plus
  teacher-forced prefixes of the calibration *targets* at several lengths (so the ranges cover
  longer self-attention contexts, not only the first token);
* decoder-with-past: every step's inputs (token, past K/V, encoder states) recorded while the FP32
  sessions generate greedily on the calibration sources.

Optimum has no seq2seq static quantization; this is optimum-intel's ``InferRequestWrapper`` idea
(wrap each component, run generation, keep its inputs) applied to ORT sessions.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from backends._imports import require
from backends.errors import InvalidInputError

#: target-prefix lengths (tokens after the decoder start) fed to the first-step decoder
PREFIX_LENGTHS = (1, 3, 6, 12)


def record_calibration_feeds(fp32_backend, model, calibration, size: int, batch_size: int
                             ) -> tuple[dict[str, list[dict[str, np.ndarray]]], dict[str, Any]]:
    """Run ``fp32_backend`` (active ``onnx-fp32``) on calibration data; return feeds per component."""
    from backends.generation import greedy

    if size < 1 or batch_size < 1:
        raise InvalidInputError(f"calibration_size and calibration_batch_size must be >= 1 (got {size}, "
                                f"{batch_size})")
    sources = calibration.sources[:size]
    targets = calibration.targets[:size]
    conv = model.conventions
    sessions = fp32_backend._sessions
    feeds: dict[str, list[dict[str, np.ndarray]]] = {}
    n_steps = 0
    for i in range(0, len(sources), batch_size):
        enc = model.encode_sources(sources[i:i + batch_size], fp32_backend.max_source_length)
        sessions.recorder = feeds
        try:
            # every row at every step, finished ones included: the recorded feeds keep one batch size
            greedy(fp32_backend, enc.input_ids, enc.attention_mask, fp32_backend.max_new_tokens, conv,
                   compact=False)
            hidden = fp32_backend.encode_impl(enc.input_ids, enc.attention_mask).tensors["last_hidden_state"]
            feeds["encoder"].pop()  # the line above re-ran the encoder only to get its output
            tgt = model.encode_targets(targets[i:i + batch_size])
            for n in PREFIX_LENGTHS:
                prefix = np.full((len(tgt), n + 1), conv.pad_token_id, dtype=np.int64)
                prefix[:, 0] = conv.decoder_start_token_id
                for r, ids in enumerate(tgt):
                    take = ids[:n]
                    prefix[r, 1:1 + len(take)] = take
                sessions.step(hidden, enc.attention_mask, prefix, None)
        finally:
            sessions.recorder = None
    n_steps = len(feeds.get("decoder_with_past", []))
    stats = {"sentences": len(sources), "batch_size": batch_size,
             "feeds": {role: len(v) for role, v in feeds.items()}, "with_past_steps": n_steps,
             "decoder_prefix_lengths": [1] + [n + 1 for n in PREFIX_LENGTHS]}
    return feeds, stats


def data_reader(feeds: list[dict[str, np.ndarray]]):
    """An ``onnxruntime.quantization.CalibrationDataReader`` over recorded feeds."""
    quant = require("onnxruntime.quantization", "static quantization")

    class _Reader(quant.CalibrationDataReader):
        """Supports ``set_range`` so ORT can calibrate one feed at a time (``CalibStridedMinMax``):
        the histogram calibrators stack each tensor's outputs across feeds and fail when shapes differ
        (sequence and past lengths always do here)."""

        def __init__(self):
            self._i, self._end = 0, len(feeds)

        def get_next(self):
            if self._i >= self._end:
                return None
            self._i += 1
            return feeds[self._i - 1]

        def rewind(self):
            self._i, self._end = 0, len(feeds)

        def set_range(self, start_index: int, end_index: int):
            self._i, self._end = start_index, min(end_index, len(feeds))

        def __len__(self):
            return len(feeds)

    return _Reader()
