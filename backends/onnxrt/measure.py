"""Ad-hoc measurement of the ONNX Runtime variants next to ``torch-fp32`` on the default model.

    python -m backends.onnxrt.measure --workdir /tmp/onnx-measure \
        --backends torch-fp32 onnx-fp32 onnx-dynamic-int8 onnx-static-int8

Each backend runs in its own process (so peak RSS is its own): BLEU (sacrebleu) on the test set,
greedy at batch 32 (sentences/s, tokens/s), batch-1 latency on the first ``--latency-n`` sentences,
first-step logits on 64 sources (cross-source cosine = source sensitivity), bytes on disk. The
parent then compares every backend with the reference (exact greedy agreement, logit cosine).
The lead's speed suite is the authoritative benchmark; this is for the ONNX Runtime work.
"""
from __future__ import annotations

import argparse
import gzip
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
DEFAULT_MODEL = REPO / "orchestrator/defaults/model/marian-en-de-multi30k"
DEFAULT_DATA = REPO / "orchestrator/defaults/data/multi30k"
N_LOGITS = 64


def _lines(path: Path) -> list[str]:
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        return [line.rstrip("\n") for line in fh]


def run_one(args) -> dict:
    from backends.base import CalibrationSet
    from backends.model import ModelBundle
    from backends.registry import get_backend

    import sacrebleu

    bundle = ModelBundle.load(args.model)
    src = _lines(args.data / "test_2016_flickr.en.gz")[: args.n]
    ref = _lines(args.data / "test_2016_flickr.de.gz")[: args.n]
    cal = CalibrationSet(_lines(args.data / "val.en.gz"), _lines(args.data / "val.de.gz"), name="multi30k-val")
    opts = json.loads(args.options) if args.options else {}
    be = get_backend(args.one, threads=args.threads, **opts)
    art = be.prepare(bundle, args.workdir, cal)
    res = {"backend": args.one, "bytes": art.extra.get("weights_bytes", art.bytes), "reused": art.reused, "build_seconds": art.build_seconds,
           "files": art.files}
    with be:
        warm = bundle.encode_sources(src[:8], be.max_source_length)
        be.generate(warm.input_ids, warm.attention_mask)
        out, t0 = [], time.perf_counter()
        for i in range(0, len(src), args.batch_size):
            enc = bundle.encode_sources(src[i:i + args.batch_size], be.max_source_length)
            out += be.generate(enc.input_ids, enc.attention_mask, num_beams=1)
        dt = time.perf_counter() - t0
        lat = []
        for s in src[: args.latency_n]:
            enc = bundle.encode_sources([s], be.max_source_length)
            t = time.perf_counter()
            be.generate(enc.input_ids, enc.attention_mask, num_beams=1)
            lat.append((time.perf_counter() - t) * 1000)
        logits = []
        for i in range(0, N_LOGITS, 32):
            enc = bundle.encode_sources(src[i:i + 32], be.max_source_length)
            logits.append(be.first_step_logits(enc.input_ids, enc.attention_mask))
        sig = be.signature().to_dict()
    logits = np.concatenate(logits)
    np.save(args.workdir / f"first_step_{args.one}.npy", logits)
    tokens = sum(len(o) + 1 for o in out)  # + EOS
    res.update({
        "bleu": sacrebleu.corpus_bleu(bundle.decode(out), [ref]).score, "sentences": len(src),
        "batch_size": args.batch_size, "seconds": dt, "sentences_per_s": len(src) / dt, "tokens_per_s": tokens / dt,
        "latency_ms_p50": float(np.median(lat)), "latency_ms_mean": float(np.mean(lat)), "latency_n": len(lat),
        "cross_source_cosine": _cross_cosine(logits), "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "signature": sig, "outputs": out})
    return res


def _cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))


def _cross_cosine(logits: np.ndarray) -> float:
    """Mean cosine between first-step logits of neighbouring (unrelated) sources."""
    centred = logits - logits.mean(axis=1, keepdims=True)
    return float(np.mean(_cos(centred[:-1], centred[1:])))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backends", nargs="+", default=["torch-fp32", "onnx-fp32", "onnx-dynamic-int8", "onnx-static-int8"])
    p.add_argument("--reference", default="torch-fp32")
    p.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    p.add_argument("--data", type=Path, default=DEFAULT_DATA)
    p.add_argument("--workdir", type=Path, required=True)
    p.add_argument("--n", type=int, default=1000)
    p.add_argument("--latency-n", type=int, default=50)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--options", default="", help="JSON options for --one")
    p.add_argument("--one", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.workdir.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.one:
        res = run_one(args)
        (args.workdir / f"result_{args.one}.json").write_text(json.dumps(res, default=str))
        return 0
    results = {}
    for name in args.backends:
        cmd = [sys.executable, "-m", "backends.onnxrt.measure", "--one", name, "--workdir", str(args.workdir),
               "--model", str(args.model), "--data", str(args.data), "--n", str(args.n),
               "--latency-n", str(args.latency_n), "--batch-size", str(args.batch_size), "--threads", str(args.threads)]
        subprocess.run(cmd, check=True, cwd=str(REPO))
        results[name] = json.loads((args.workdir / f"result_{name}.json").read_text())
    ref = results.get(args.reference)
    ref_logits = np.load(args.workdir / f"first_step_{args.reference}.npy") if ref else None
    print(f"{'backend':20s} {'BLEU':>6s} {'agree':>7s} {'cos_ref':>7s} {'xsrc':>6s} {'sent/s':>7s} {'tok/s':>7s} "
          f"{'p50ms':>6s} {'MB':>6s} {'RSS':>6s}")
    for name, r in results.items():
        if ref:
            r["agreement"] = float(np.mean([a == b for a, b in zip(r["outputs"], ref["outputs"])]))
            r["cosine_vs_reference"] = float(_cos(np.load(args.workdir / f"first_step_{name}.npy"), ref_logits).mean())
        print(f"{name:20s} {r['bleu']:6.2f} {r.get('agreement', float('nan')):7.3f} "
              f"{r.get('cosine_vs_reference', float('nan')):7.4f} {r['cross_source_cosine']:6.3f} "
              f"{r['sentences_per_s']:7.1f} {r['tokens_per_s']:7.0f} {r['latency_ms_p50']:6.1f} "
              f"{r['bytes'] / 1e6:6.1f} {r['peak_rss_mb']:6.0f}")
    summary = {n: {k: v for k, v in r.items() if k != "outputs"} for n, r in results.items()}
    (args.workdir / "summary.json").write_text(json.dumps(summary, indent=1, default=str))
    print(f"wrote {args.workdir / 'summary.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
