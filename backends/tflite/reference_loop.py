"""The host loop of a seqquant TFLite export, written from ``generation.json`` alone.

This file is the executable form of the loop a mobile app implements (in Kotlin, Swift, C++):
it reads ``generation.json`` and the two ``.tflite`` files next to it, and needs only numpy and
the LiteRT interpreter (``ai_edge_litert``). It imports nothing from seqquant, so it is shipped
as is by ``python cli.py export``; a test runs it against the seqquant backend that built the
artifacts and requires the same tokens, so the description in ``generation.json`` is complete.

Greedy search, one sentence at a time, token ids in and out (tokenization is the model's own:
``generation.json`` names the tokenizer files). Usage::

    python reference_loop.py EXPORT_DIR 123 45 678 0     # source ids (ending with EOS) -> target ids
    python reference_loop.py EXPORT_DIR --kernels reference 123 45 678 0

Kernels: the ones ``export.json`` says the export was measured with, else LiteRT's default (XNNPACK);
int8 kernels round differently, so the same artifacts can give other tokens on other kernels.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

FORMAT = "seqquant-tflite-generation/1"
#: LiteRT op resolvers: XNNPACK (the default delegate), the built-in optimized kernels, the reference kernels
KERNELS = {"xnnpack": "AUTO", "builtin": "BUILTIN_WITHOUT_DEFAULT_DELEGATES", "reference": "BUILTIN_REF"}


def _quantized(t: dict) -> bool:
    return "scale" in t and t["scale"] != 0.0


def _dequantize(q: np.ndarray, t: dict) -> np.ndarray:
    return (q.astype(np.float32) - np.float32(t["zero_point"])) * np.float32(t["scale"])


def _quantize(x: np.ndarray, t: dict) -> np.ndarray:
    lim = np.iinfo(np.dtype(t["dtype"]))
    q = np.round(np.asarray(x, np.float32) / np.float32(t["scale"])) + t["zero_point"]
    return np.clip(q, lim.min, lim.max).astype(t["dtype"])


def convert(x: np.ndarray, src: dict, dst: dict) -> np.ndarray:
    """A tensor described by ``src`` into ``dst``'s domain: q_d = clamp(round(s_e/s_d*(q_e-z_e))+z_d)."""
    if _quantized(src) and _quantized(dst):
        if (src["scale"], src["zero_point"]) == (dst["scale"], dst["zero_point"]):
            return x.astype(dst["dtype"])
        lim = np.iinfo(np.dtype(dst["dtype"]))
        r = np.round((x.astype(np.float32) - src["zero_point"]) * np.float32(src["scale"] / dst["scale"]))
        return np.clip(r + dst["zero_point"], lim.min, lim.max).astype(dst["dtype"])
    if _quantized(dst):
        return _quantize(x, dst)
    return _dequantize(x, src) if _quantized(src) else x.astype(np.float32)


def pad_to(x: np.ndarray, t: dict) -> np.ndarray:
    """Pad every fixed axis of ``t`` that ``x`` is shorter on (the source axis) with ``t``'s zero."""
    pad = [(0, 0)] + [(0, max(0, d - n)) if d > 0 else (0, 0) for n, d in zip(x.shape[1:], t["shape"][1:])]
    return np.pad(x, pad, constant_values=t.get("zero_point", 0) if _quantized(t) else 0)


def measured_kernels(directory: Path) -> str:
    """The kernels ``export.json`` (written by ``seqquant export``) records, else LiteRT's default."""
    path = directory / "export.json"
    if path.is_file():
        kernels = json.loads(path.read_text(encoding="utf-8")).get("kernels")
        if kernels:
            return str(kernels)
    return "xnnpack"


class Model:
    """One ``.tflite`` file with one signature, called with numpy arrays by input name."""

    def __init__(self, path: Path, threads: int, kernels: str = "xnnpack"):
        from ai_edge_litert.interpreter import Interpreter, OpResolverType

        self.interp = Interpreter(model_path=str(path), num_threads=threads,
                                  experimental_op_resolver_type=getattr(OpResolverType, KERNELS[kernels]))
        (name,) = self.interp.get_signature_list()
        self.run = self.interp.get_signature_runner(name)


class ReferenceLoop:
    """Greedy generation over an exported encoder / decoder_step pair, as ``generation.json`` says."""

    def __init__(self, directory: str | Path, threads: int = 1, kernels: str | None = None):
        directory = Path(directory)
        self.spec = json.loads((directory / "generation.json").read_text(encoding="utf-8"))
        if self.spec.get("format") != FORMAT:
            raise ValueError(f"{directory / 'generation.json'}: format {self.spec.get('format')!r}, "
                             f"this loop reads {FORMAT!r}")
        self.kernels = kernels or measured_kernels(directory)
        if self.kernels not in KERNELS:
            raise ValueError(f"kernels must be one of {sorted(KERNELS)}, got {self.kernels!r}")
        self.encoder = Model(directory / self.spec["encoder"]["file"], threads, self.kernels)
        self.decoder = Model(directory / self.spec["decoder_step"]["file"], threads, self.kernels)
        self.dec_in = {t["name"]: t for t in self.spec["decoder_step"]["inputs"]}
        self.dec_out = {t["name"]: t for t in self.spec["decoder_step"]["outputs"]}

    # ---- encoder and boundary ----------------------------------------------------
    def encode(self, ids: list[int]) -> dict[str, np.ndarray]:
        spec, tok = self.spec, self.spec["special_tokens"]
        S = spec["static"]["source_length"]
        if not ids or len(ids) > S:
            raise ValueError(f"source length {len(ids)}: must be 1..{S} (the static source length)")
        width = min([b for b in spec["source_buckets"] if b >= len(ids)], default=S)
        input_ids = np.full((1, width), tok["pad_token_id"], np.int32)
        input_ids[0, :len(ids)] = ids
        mask = np.zeros((1, S), np.int32)
        mask[0, :len(ids)] = 1
        out = self.encoder.run(input_ids=input_ids, attention_mask=mask[:, :width])
        state = {"encoder_attention_mask": mask}
        raw = spec.get("boundary_mode") == "raw"  # the first-try recipe: integer bytes cross unchanged
        for b in spec["boundary"]:
            src, dst = b["encoder_output"], b["decoder_input"]
            x = out[src["name"]]
            x = x.astype(dst["dtype"]) if raw and _quantized(src) else convert(x, src, dst)
            state[dst["name"]] = pad_to(x, dst)
        return state

    # ---- decoder step ------------------------------------------------------------
    def empty_cache(self) -> dict[str, np.ndarray]:
        cache = {}
        for c in self.spec["cache"]["tensors"]:
            t = c["input"]
            cache[t["name"]] = np.full([1] + t["shape"][1:], t.get("zero_point", 0), t["dtype"])
        return cache

    def logits(self, out: dict[str, np.ndarray]) -> np.ndarray:
        rule = self.spec["logits"]
        logits = _dequantize(out["logits"], self.dec_out["logits"]) if _quantized(self.dec_out["logits"]) \
            else out["logits"].astype(np.float32)
        if "logits_top" in rule:  # the fine head: finer bins above logits_floor
            top = self.dec_out["logits_top"]
            q = out["logits_top"]
            logits = np.where(q > top["zero_point"], _dequantize(q, top) * 0.5 + rule["logits_floor"], logits)
        return logits[0]

    def step(self, token: int, position: int, state: dict, cache: dict) -> np.ndarray:
        cache_length = self.spec["static"]["cache_length"]
        if position >= cache_length:
            raise ValueError(f"position {position} is beyond the static cache length {cache_length}")
        slots = np.arange(self.dec_in["self_attention_mask"]["shape"][1])
        self_mask = ((slots < position) | (slots == cache_length)).astype(np.int32)[None, :]
        feeds = {"input_ids": np.array([[token]], np.int32), "position": np.array([position], np.int32),
                 "self_attention_mask": self_mask, **state, **cache}
        out = self.decoder.run(**{k: v for k, v in feeds.items() if k in self.dec_in})
        for c in self.spec["cache"]["tensors"]:
            src, dst = c["output"], c["input"]
            cache[dst["name"]][:, :, position] = convert(out[src["name"]], src, dst)[:, :, 0]
        return self.logits(out)

    # ---- logits processors and the loop ------------------------------------------
    def process(self, scores: np.ndarray, seq: list[int], max_length: int) -> np.ndarray:
        tok = self.spec["special_tokens"]
        cur_len = len(seq)
        if tok.get("min_length") and cur_len < tok["min_length"]:
            scores[tok["eos_token_id"]] = -np.inf
        n = tok.get("no_repeat_ngram_size") or 0
        if n and cur_len + 1 >= n:
            key = tuple(seq[cur_len - n + 1:]) if n > 1 else ()
            banned = [seq[i + n - 1] for i in range(cur_len - n + 1) if tuple(seq[i:i + n - 1]) == key]
            scores[banned] = -np.inf
        if tok.get("bad_words_ids"):
            scores[list(tok["bad_words_ids"])] = -np.inf
        if tok.get("forced_bos_token_id") is not None and cur_len == 1:
            scores[:] = -np.inf
            scores[tok["forced_bos_token_id"]] = 0.0
        if tok.get("forced_eos_token_id") is not None and cur_len == max_length - 1:
            scores[:] = -np.inf
            scores[tok["forced_eos_token_id"]] = 0.0
        return scores

    def translate(self, ids: list[int], max_new_tokens: int | None = None) -> list[int]:
        """Target ids for one tokenized source (decoder start, EOS and pad ids removed)."""
        tok = self.spec["special_tokens"]
        limit = self.spec["static"]["max_new_tokens"]
        max_new_tokens = limit if max_new_tokens is None else max_new_tokens
        if not 1 <= max_new_tokens <= limit:
            raise ValueError(f"max_new_tokens must be 1..{limit} (the static decoder length)")
        state, cache = self.encode(ids), self.empty_cache()
        seq = [tok["decoder_start_token_id"]]
        for position in range(max_new_tokens):
            scores = self.process(self.step(seq[-1], position, state, cache), seq, 1 + max_new_tokens)
            seq.append(int(np.argmax(scores)))
            if seq[-1] == tok["eos_token_id"]:
                break
        return [t for t in seq[1:] if t not in (tok["eos_token_id"], tok["pad_token_id"])]


def main(argv: list[str]) -> int:
    argv = list(argv)
    kernels = None
    if "--kernels" in argv[:-1]:
        i = argv.index("--kernels")
        kernels = argv[i + 1]
        del argv[i:i + 2]
    if len(argv) < 2 or not all(a.isdigit() for a in argv[1:]) or (kernels is not None and kernels not in KERNELS):
        print("usage: python reference_loop.py EXPORT_DIR [--kernels xnnpack|builtin|reference] SOURCE_IDS...",
              file=sys.stderr)
        return 2
    print(" ".join(map(str, ReferenceLoop(argv[0], kernels=kernels).translate([int(a) for a in argv[1:]]))))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
