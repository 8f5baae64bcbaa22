"""PyTorch FP32 references.

``torch-fp32`` is the oracle: transformers' own ``generate``. ``torch-fp32-split`` drives
the *same weights* through ``encode``/``decode_step`` and the shared host loop, which
proves the loop (and is what every split runtime is compared with).
"""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np

from backends._imports import require, version_of
from backends.base import EncoderState, Seq2SeqBackend
from backends.errors import NonFiniteLogitsError


class TorchSplitBackend(Seq2SeqBackend):
    runtime = "torch"
    precision = "fp32"

    def runtime_versions(self) -> dict[str, str]:
        return {"torch": version_of("torch"), "transformers": version_of("transformers")}

    def prepare_impl(self, model, outdir: Path, calibration) -> dict[str, Any]:
        """Nothing to convert: the checkpoint's weights are the artifact. They are copied (never
        hard-linked: an in-place write to an artifact must not reach the user's checkpoint), so
        size and checksum are reported like any other backend's."""
        files = {}
        for name in ("model.safetensors", "pytorch_model.bin"):
            src = model.path / name
            if src.exists():
                shutil.copy2(src, outdir / name)
                files["weights"] = name
                break
        return {"files": files, "extra": {"checkpoint": str(model.path)}}

    def activate_impl(self) -> None:
        self._torch = require("torch", self.name)
        self._torch.set_num_threads(self.threads)
        self._net = self.model.load_torch_model()

    def deactivate_impl(self) -> None:
        self._net = None

    def torch_module(self):
        """The live PyTorch model (for diagnostics that perturb its weights, e.g.
        :mod:`orchestrator.weight_probe`); only while active."""
        self._check_active("torch_module")
        return self._net

    def _t(self, a: np.ndarray):
        return self._torch.as_tensor(np.asarray(a), dtype=self._torch.long)

    def encode_impl(self, input_ids, attention_mask) -> EncoderState:
        with self._torch.inference_mode():
            out = self._net.get_encoder()(input_ids=self._t(input_ids), attention_mask=self._t(attention_mask))
        return EncoderState({"last_hidden_state": out.last_hidden_state}, attention_mask, input_ids.shape[0])

    def decode_step_impl(self, state: EncoderState, decoder_input_ids, cache):
        torch = self._torch
        ids = decoder_input_ids[:, -1:] if cache is not None else decoder_input_ids
        past_len = decoder_input_ids.shape[1] - ids.shape[1]
        with torch.inference_mode():
            out = self._net(
                encoder_outputs=(state.tensors["last_hidden_state"],),
                attention_mask=self._t(state.attention_mask),
                decoder_input_ids=self._t(ids),
                past_key_values=cache,
                use_cache=True,
                cache_position=torch.arange(past_len, past_len + ids.shape[1]),
                return_dict=True,
            )
        return out.logits[:, -1, :].float().numpy(), out.past_key_values

    def select(self, obj, indices):
        if obj is not None and hasattr(obj, "reorder_cache"):  # transformers Cache object
            obj.reorder_cache(self._torch.as_tensor(np.asarray(indices), dtype=self._torch.long))
            return obj
        return super().select(obj, indices)

    def encoder_hidden_states(self, input_ids, attention_mask) -> np.ndarray:
        """FP32 encoder output as numpy (used by other backends' calibration)."""
        return self.encode_impl(input_ids, attention_mask).tensors["last_hidden_state"].numpy()


class TorchFusedBackend(TorchSplitBackend):
    """transformers ``generate`` as the oracle; still exposes step logits."""

    search = "native"  # transformers' generate (every row every step)

    def _finite_check(self):
        """A logits processor (run after transformers' own) that raises on NaN/+inf scores: ``generate``
        never shows its logits to the worker's guard, and would turn them into plausible-looking tokens."""
        transformers = require("transformers", self.name)
        torch, name = self._torch, self.name

        class FiniteCheck(transformers.LogitsProcessor):
            def __call__(self, input_ids, scores):
                bad = torch.isnan(scores) | torch.isposinf(scores)
                if bool(bad.any()):
                    raise NonFiniteLogitsError(
                        f"{name}: generate produced non-finite logits at output position {input_ids.shape[1]} "
                        f"({int(torch.isnan(scores).sum())} NaN, {int(torch.isposinf(scores).sum())} +inf of "
                        f"{scores.numel()} values, shape {list(scores.shape)})")
                return scores

        return transformers.LogitsProcessorList([FiniteCheck()])

    def generate_impl(self, input_ids, attention_mask, max_new_tokens, num_beams):
        conv = self.model.conventions
        with self._torch.inference_mode():
            out = self._net.generate(
                input_ids=self._t(input_ids), attention_mask=self._t(attention_mask),
                max_new_tokens=max_new_tokens, num_beams=num_beams, do_sample=False,
                num_return_sequences=1, logits_processor=self._finite_check(),
            )
        result = []
        for row in out.numpy():
            toks = []
            for t in row.tolist()[1:]:
                if t == conv.eos_token_id:
                    break
                if t == conv.pad_token_id:
                    continue
                toks.append(int(t))
            result.append(toks)
        return result
