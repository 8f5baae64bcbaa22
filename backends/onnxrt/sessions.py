"""ONNX Runtime sessions for the three exported components and one decoding step over them.

The KV cache is a dict ``{"past_key_values.<i>.<decoder|encoder>.<key|value>": array [B, H, T, D]}``
(optimum's naming); every tensor is batch-first, so beam search reorders it by indexing axis 0.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from backends._imports import require
from backends.errors import ArtifactError

GRAPH_OPT_LEVELS = ("disable", "basic", "extended", "all")


def session_options(threads: int, graph_optimization: str = "all") -> tuple[Any, dict[str, Any]]:
    """SessionOptions with explicit threads; also returns the settings as a dict for the signature."""
    ort = require("onnxruntime", "ONNX Runtime inference")
    so = ort.SessionOptions()
    so.intra_op_num_threads = int(threads)
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = {
        "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }[graph_optimization]
    so.log_severity_level = 3
    info = {"intra_op_num_threads": int(threads), "inter_op_num_threads": 1, "execution_mode": "sequential",
            "graph_optimization_level": graph_optimization, "providers": ["CPUExecutionProvider"]}
    return so, info


class Seq2SeqSessions:
    """encoder / decoder / decoder_with_past InferenceSessions and the step logic."""

    def __init__(self, files: dict[str, str], threads: int, graph_optimization: str = "all"):
        ort = require("onnxruntime", "ONNX Runtime inference")
        so, self.session_info = session_options(threads, graph_optimization)
        self.sessions = {}
        for role in ("encoder", "decoder", "decoder_with_past"):
            path = files.get(role)
            if path is None or not Path(path).exists():
                raise ArtifactError(f"ONNX component '{role}' missing from the artifacts ({files})")
            try:
                self.sessions[role] = ort.InferenceSession(str(path), sess_options=so,
                                                           providers=["CPUExecutionProvider"])
            except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph types
                raise ArtifactError(f"onnxruntime could not load {path}: {exc}") from exc
        self.inputs = {r: [i.name for i in s.get_inputs()] for r, s in self.sessions.items()}
        self.outputs = {r: [o.name for o in s.get_outputs()] for r, s in self.sessions.items()}
        self.past_names = [n for n in self.inputs["decoder_with_past"] if n.startswith("past_key_values.")]
        #: when set to a dict of lists, every session feed is appended to it (calibration recording)
        self.recorder: dict[str, list[dict[str, np.ndarray]]] | None = None

    def _run(self, role: str, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        feed = {k: v for k, v in feed.items() if k in self.inputs[role]}
        if self.recorder is not None:
            self.recorder.setdefault(role, []).append({k: np.array(v) for k, v in feed.items()})
        out = self.sessions[role].run(None, feed)
        return dict(zip(self.outputs[role], out))

    def encode(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        return self._run("encoder", {"input_ids": input_ids, "attention_mask": attention_mask})["last_hidden_state"]

    def step(self, hidden: np.ndarray, attention_mask: np.ndarray, decoder_input_ids: np.ndarray,
             cache: dict[str, np.ndarray] | None) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Logits of the last position [B, V] and the updated cache."""
        if cache is None:
            out = self._run("decoder", {"input_ids": decoder_input_ids, "encoder_attention_mask": attention_mask,
                                        "encoder_hidden_states": hidden})
            new = {n: out["present." + n[len("past_key_values."):]] for n in self.past_names}
        else:
            feed = {"input_ids": np.ascontiguousarray(decoder_input_ids[:, -1:]),
                    "encoder_attention_mask": attention_mask, "encoder_hidden_states": hidden, **cache}
            out = self._run("decoder_with_past", feed)
            new = {}
            for n in self.past_names:
                present = "present." + n[len("past_key_values."):]
                new[n] = out[present] if present in out else cache[n]  # encoder K/V are not re-emitted
        return out["logits"][:, -1, :], new
