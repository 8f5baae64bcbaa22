"""Benchmark the CTranslate2 variants next to ``torch-fp32`` on one model and test set.

    python -m backends.ctranslate2.bench                       # default model, 1000 sentences
    python -m backends.ctranslate2.bench --n 200 --variants torch-fp32,ct2-int8 --out /tmp/b.json

Each variant runs in its own worker process (so peak RSS is per variant); the artifact is
built in a separate process first, so the measured process only loads it. Measured per
variant (greedy, ``--threads`` threads):

* quality: sacreBLEU on the test set, token-for-token agreement with ``torch-fp32``;
* first-step source sensitivity: mean cosine between the first-step logits of *unrelated*
  sources (source i vs i + n/2), next to torch-fp32's, plus the mean same-source cosine
  to torch-fp32's logits (fidelity). A quantized model that stopped listening to the
  source shows a cross-source cosine near 1;
* speed: ms/sentence p50/p90 at batch 1 (``--latency-n`` sentences), sentences/s and
  generated tokens/s (EOS not counted) at ``--batch-size``, bytes on disk, peak RSS.

Timings on a shared machine are noisy: the load average is recorded next to them. On an
oversubscribed machine CT2's OpenMP threads spin-wait; ``--omp-wait-policy PASSIVE`` avoids
the collapse of multi-threaded float32 GEMMs (see ``--help``).
``--stock-baseline`` also measures CT2's *unmodified* Transformers converter (Marian only:
it drops ``<pad>`` and starts the decoder from a zero vector) to show why convert.py
patches the conventions.
"""
from __future__ import annotations

import argparse
import gzip
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
DEFAULT_MODEL = REPO / "orchestrator" / "defaults" / "model" / "marian-en-de-multi30k"
DEFAULT_DATA = REPO / "orchestrator" / "defaults" / "data" / "multi30k"
VARIANTS = ("torch-fp32", "ct2-fp32", "ct2-int8", "ct2-int8-float32", "ct2-int8-mkl", "ct2-int16")
STOCK = "ct2-fp32-stock-converter"


def _lines(path: Path, n: int) -> list[str]:
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        out = [line.strip() for line in fh]
    return out[:n]


# ---------------------------------------------------------------------------------------
# worker (one variant, one process)
# ---------------------------------------------------------------------------------------
def _stock_translate(args, sources: list[str]) -> dict:
    """CT2's unmodified converter + tokenizer tokens in/out (the 'plain conversion')."""
    import ctranslate2
    from ctranslate2.converters import TransformersConverter

    from backends.model import ModelBundle

    bundle = ModelBundle.load(args.model)
    out_dir = Path(args.workdir) / "stock-converter"
    if not (out_dir / "model.bin").exists():
        TransformersConverter(str(bundle.path)).convert(str(out_dir), force=True)
    tr = ctranslate2.Translator(str(out_dir), device="cpu", compute_type="float32", intra_threads=args.threads)
    tok = bundle.tokenizer
    outs = []
    for i in range(0, len(sources), args.batch_size):
        enc = bundle.encode_sources(sources[i:i + args.batch_size], 64)
        src = [tok.convert_ids_to_tokens(r[m.astype(bool)].tolist()) for r, m in zip(enc.input_ids, enc.attention_mask)]
        res = tr.translate_batch(src, beam_size=1, max_decoding_length=63, max_input_length=0)
        outs += [tok.convert_tokens_to_ids(r.hypotheses[0]) for r in res]
    return {"status": "ok", "tokens": outs, "bytes": sum(p.stat().st_size for p in out_dir.iterdir())}


def worker(args) -> dict:
    from backends.model import ModelBundle
    from backends.registry import get_backend

    sources = _lines(Path(args.data) / "test_2016_flickr.en.gz", args.n)
    if args.worker == STOCK:
        return _stock_translate(args, sources)
    bundle = ModelBundle.load(args.model)
    be = get_backend(args.worker, threads=args.threads)
    reasons = be.preflight() if hasattr(be, "preflight") else []
    if reasons:
        return {"status": "skipped", "reasons": reasons}
    t0 = time.perf_counter()
    art = be.prepare(bundle, args.workdir)
    prep = time.perf_counter() - t0
    if args.phase == "prepare":
        return {"status": "ok", "prepare_seconds": prep, "reused": art.reused}
    load0 = os.getloadavg()[0]
    t0 = time.perf_counter()
    be.activate()
    activate_s = time.perf_counter() - t0
    try:
        bs = args.batch_size
        batches = [bundle.encode_sources(sources[i:i + bs], be.max_source_length) for i in range(0, len(sources), bs)]
        be.generate(batches[0].input_ids, batches[0].attention_mask, num_beams=1)  # warm-up
        t0 = time.perf_counter()
        tokens: list[list[int]] = []
        for enc in batches:
            tokens += be.generate(enc.input_ids, enc.attention_mask, num_beams=1)
        thr_s = time.perf_counter() - t0
        lat = []
        for s in sources[: args.latency_n]:
            enc = bundle.encode_sources([s], be.max_source_length)
            t1 = time.perf_counter()
            be.generate(enc.input_ids, enc.attention_mask, num_beams=1)
            lat.append((time.perf_counter() - t1) * 1000.0)
        k = min(args.sensitivity_n, len(sources))
        logits = []
        for i in range(0, k, bs):
            enc = bundle.encode_sources(sources[i:min(k, i + bs)], be.max_source_length)
            logits.append(be.first_step_logits(enc.input_ids, enc.attention_mask))
        logits_path = Path(args.workdir) / f"first-step-{args.worker}.npy"
        np.save(logits_path, np.concatenate(logits))
        sig = be.signature().to_dict()
    finally:
        be.deactivate()
    n_tok = sum(len(t) for t in tokens)
    return {
        "status": "ok", "tokens": tokens, "signature": sig,
        "artifacts": {"directory": art.directory, "bytes": art.bytes, "files": art.files,
                      "build_seconds": art.build_seconds},
        "bytes_on_disk": art.bytes,
        "activate_seconds": activate_s,
        "throughput": {"batch_size": bs, "seconds": thr_s, "sentences_per_s": len(sources) / thr_s,
                       "tokens_per_s": n_tok / thr_s, "generated_tokens": n_tok},
        "latency_ms": {"n": len(lat), "p50": statistics.median(lat),
                       "p90": float(np.percentile(lat, 90)), "mean": statistics.fmean(lat)},
        "first_step_logits": str(logits_path),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
        "loadavg_1min": [load0, os.getloadavg()[0]],
    }


# ---------------------------------------------------------------------------------------
# parent
# ---------------------------------------------------------------------------------------
def _cos_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sum(a * b, 1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1) + 1e-12)


def _run_worker(args, name: str, phase: str) -> dict:
    out = Path(args.workdir) / f"result-{name}-{phase}.json"
    cmd = [sys.executable, "-m", "backends.ctranslate2.bench", "--worker", name, "--phase", phase,
           "--result", str(out)] + [a for k, v in vars(args).items() if k in _PASS for a in (f"--{k.replace('_', '-')}", str(v))]
    env = {**os.environ, "USE_TF": "0", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
           "OMP_NUM_THREADS": str(args.threads)}
    if args.omp_wait_policy:
        env["OMP_WAIT_POLICY"] = args.omp_wait_policy
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        return {"status": "error", "error": proc.stderr.strip().splitlines()[-1:] or ["?"]}
    return json.loads(out.read_text())


_PASS = ("model", "data", "n", "batch_size", "latency_n", "sensitivity_n", "threads", "workdir")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=str(DEFAULT_MODEL))
    ap.add_argument("--data", default=str(DEFAULT_DATA), help="directory with test_2016_flickr.{en,de}.gz")
    ap.add_argument("--n", type=int, default=1000, help="test sentences")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--latency-n", type=int, default=100, help="sentences timed one by one (batch 1)")
    ap.add_argument("--sensitivity-n", type=int, default=200, help="sources for first-step logits")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--no-torch", action="store_true",
                    help="skip torch-fp32 (speed-only runs; no agreement/cosine columns)")
    ap.add_argument("--stock-baseline", action="store_true", help=f"also run {STOCK} (Marian only)")
    ap.add_argument("--omp-wait-policy", default=None, choices=("PASSIVE", "ACTIVE"),
                    help="OMP_WAIT_POLICY for the workers. On an oversubscribed machine CT2 float32 at 2 threads "
                         "collapses with spinning OpenMP threads (measured 1.5 vs 30 sentences/s with PASSIVE)")
    ap.add_argument("--workdir", default="/tmp/seqquant-ct2-bench")
    ap.add_argument("--out", default=None, help="write the full results JSON here")
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--phase", default="measure", help=argparse.SUPPRESS)
    ap.add_argument("--result", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    Path(args.workdir).mkdir(parents=True, exist_ok=True)

    if args.worker:
        sys.path.insert(0, str(REPO))
        res = worker(args)
        Path(args.result).write_text(json.dumps(res))
        return 0

    import sacrebleu

    sys.path.insert(0, str(REPO))
    from backends.model import ModelBundle

    bundle = ModelBundle.load(args.model)
    refs = _lines(Path(args.data) / "test_2016_flickr.de.gz", args.n)
    names = [v for v in args.variants.split(",") if v]
    if args.no_torch:
        names = [n for n in names if n != "torch-fp32"]
    elif "torch-fp32" not in names:
        names.insert(0, "torch-fp32")
    if args.stock_baseline:
        names.append(STOCK)
    results: dict[str, dict] = {}
    for name in names:
        t0 = time.time()
        if name != STOCK:
            pre = _run_worker(args, name, "prepare")
            if pre["status"] != "ok":
                results[name] = pre
                print(f"[{name}] {pre['status']}: {pre.get('reasons') or pre.get('error')}", flush=True)
                continue
        results[name] = _run_worker(args, name, "measure")
        print(f"[{name}] {results[name]['status']} in {time.time() - t0:.0f}s", flush=True)

    ref = results.get("torch-fp32", {"status": "not-run"})
    ref_logits = np.load(ref["first_step_logits"]) if ref.get("first_step_logits") else None
    rows = []
    for name, r in results.items():
        if r["status"] != "ok":
            rows.append((name, r))
            continue
        hyps = bundle.decode(r["tokens"])
        r["bleu"] = sacrebleu.corpus_bleu(hyps, [refs]).score
        r["agreement_with_torch_fp32"] = (sum(a == b for a, b in zip(r["tokens"], ref["tokens"])) / len(refs)
                                          if ref.get("status") == "ok" else None)
        if r.get("first_step_logits") and ref_logits is not None:
            lg = np.load(r["first_step_logits"])
            half = len(lg) // 2
            r["first_step"] = {
                "cross_source_cosine_mean": float(_cos_rows(lg[:half], lg[half:2 * half]).mean()),
                "fp32_cross_source_cosine_mean": float(_cos_rows(ref_logits[:half], ref_logits[half:2 * half]).mean()),
                "cosine_to_torch_fp32_mean": float(_cos_rows(lg, ref_logits).mean()),
                "top1_agreement_with_torch_fp32": float(np.mean(lg.argmax(1) == ref_logits.argmax(1))),
                "n": int(len(lg)),
            }
        rows.append((name, r))

    print(f"\nmodel {args.model}; {args.n} test sentences, greedy, {args.threads} threads; "
          f"batch {args.batch_size} throughput, batch 1 latency over {args.latency_n}; shared machine (noisy)")
    print("| variant | BLEU | agree torch-fp32 | x-src cos (fp32) | cos to fp32 | ms p50 b1 | sent/s b32 "
          "| tok/s b32 | bytes | peak RSS MB | eff. compute | load |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for name, r in rows:
        if r["status"] != "ok":
            print(f"| {name} | {r['status']}: {'; '.join(r.get('reasons') or r.get('error') or [])} |")
            continue
        fs = r.get("first_step", {})
        q = (r.get("signature") or {}).get("quantization", {})
        thr = r.get("throughput", {})
        lat = r.get("latency_ms", {})
        load = r.get("loadavg_1min", ["", ""])

        def f(x, fmt):
            return format(x, fmt) if isinstance(x, (int, float)) else "-"
        print(f"| {name} | {r['bleu']:.2f} | {f(r['agreement_with_torch_fp32'], '.1%')} "
              f"| {f(fs.get('cross_source_cosine_mean'), '.3f')} ({f(fs.get('fp32_cross_source_cosine_mean'), '.3f')}) "
              f"| {f(fs.get('cosine_to_torch_fp32_mean'), '.4f')} | {f(lat.get('p50'), '.1f')} "
              f"| {f(thr.get('sentences_per_s'), '.1f')} | {f(thr.get('tokens_per_s'), '.0f')} "
              f"| {r.get('bytes_on_disk') or r.get('bytes')} | {f(r.get('peak_rss_mb'), '.0f')} "
              f"| {q.get('effective_compute_type', '-')} | {'/'.join(f(x, '.1f') for x in load)} |")
    if args.out:
        slim = {k: {kk: vv for kk, vv in v.items() if kk != "tokens"} for k, v in results.items()}
        Path(args.out).write_text(json.dumps({"args": vars(args), "results": slim}, indent=1, default=str))
        print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
