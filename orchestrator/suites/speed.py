"""Speed: latency at batch 1, throughput at batch N, tokens/s, size on disk, peak RSS.

Runs in the backend's worker process with the backend's fixed thread count (recorded).

* **warm-up**: ``warmup`` batch-1 translations (not timed);
* **latency**: ``latency_n`` test sentences translated one at a time (``num_beams`` of the run
  unless ``num_beams`` is set here); p50/p90/mean ms per sentence, ms per generated token
  (EOS included), and process CPU ms per sentence (p50; less sensitive to other load on the host);
* **throughput**: ``throughput_n`` sentences in batches of ``throughput_batch``; sentences/s
  and generated tokens/s;
* **bytes**: ``backend.artifacts.bytes`` (for a backend whose artifact points at the
  checkpoint — torch — ``artifacts.extra["weights_bytes"]`` when larger);
* **peak RSS**: the worker's resident-set high-water mark *during this suite*: on Linux the
  kernel's mark is reset at the start (``/proc/self/clear_refs`` ← 5) and ``VmHWM`` read at
  the end, so conversion/calibration done earlier in the process is not counted
  (``peak_rss_scope = "suite"``); elsewhere ``ru_maxrss`` of the whole process
  (``peak_rss_scope = "process"``).

Options (``[suites.speed]``; defaults, sized so ~12 backends stay within minutes on 2 cores):

    warmup = 3
    latency_n = 30
    throughput_n = 64
    throughput_batch = 32
    num_beams = 0          # 0: the run's num_beams
    seed = 0               # which sentences (a fixed sample of the test set)
    max_seconds = 60.0     # time budget: the latency loop stops after this (>= 5 samples) and the
                           # throughput subset shrinks to what fits the rest; 0 = no budget.
                           # The numbers of samples actually measured are recorded.
"""
from __future__ import annotations

import resource
import sys
import time
from typing import Any

import numpy as np

from backends.errors import InvalidInputError
from orchestrator.suites.base import Suite, SuiteContext
from orchestrator.suites.util import finite, sample_indices, suite_options

DEFAULTS: dict[str, Any] = {"warmup": 3, "latency_n": 30, "throughput_n": 64, "throughput_batch": 32,
                            "num_beams": 0, "seed": 0, "max_seconds": 60.0}
MIN_LATENCY_SAMPLES = 5


def peak_rss_bytes() -> int:
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(rss if sys.platform == "darwin" else rss * 1024)  # Linux reports KiB


def reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark to the current RSS (Linux >= 4.0); False if unsupported."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def suite_peak_rss_bytes() -> int | None:
    """``VmHWM`` of this process (bytes), or None when /proc is not available."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def artifact_bytes(backend) -> int | None:
    art = getattr(backend, "artifacts", None)
    if art is None:
        return None
    size = int(art.bytes)
    weights = (art.extra or {}).get("weights_bytes")
    if isinstance(weights, (int, float)) and weights > size:
        size = int(weights)
    return size


class SpeedSuite(Suite):
    name = "speed"
    description = "latency p50/p90 at batch 1, throughput at batch N, tokens/s, bytes, peak RSS"
    defaults = DEFAULTS
    metrics = ("latency_p50_ms", "latency_p90_ms", "ms_per_token", "throughput_sps", "tokens_per_s", "bytes",
               "cpu_ms_p50", "peak_rss_mb", "threads")
    lower_is_better = frozenset({"latency_p50_ms", "latency_p90_ms", "ms_per_token", "bytes", "cpu_ms_p50",
                                 "peak_rss_mb"})

    def run(self, backend, ctx: SuiteContext) -> dict[str, Any]:
        opt = suite_options(ctx, self.name, DEFAULTS)
        beams = int(opt["num_beams"]) or ctx.num_beams
        model = ctx.model
        n_lat, n_thr = int(opt["latency_n"]), int(opt["throughput_n"])
        idx = sample_indices(len(ctx.sources), max(n_lat, n_thr), int(opt["seed"]))
        pool = [ctx.sources[i] for i in idx]
        if not pool:
            raise InvalidInputError("speed: no source sentences to time (empty test set or latency_n = "
                                    "throughput_n = 0)")
        total = int(opt["warmup"]) + min(n_lat, len(pool)) + 1
        done = 0
        scoped = reset_peak_rss()

        def one(text: str) -> int:
            enc = model.encode_sources([text], backend.max_source_length)
            return len(backend.generate(enc.input_ids, enc.attention_mask, num_beams=beams)[0]) + 1

        for i in range(int(opt["warmup"])):
            one(pool[i % len(pool)])
            done += 1
            ctx.report(done, total, "speed warm-up")
        lat_ms, lat_tokens, cpu_ms = [], [], []
        budget = float(opt["max_seconds"])
        start = time.perf_counter()
        for text in pool[:n_lat]:
            if budget > 0 and len(lat_ms) >= MIN_LATENCY_SAMPLES and time.perf_counter() - start > budget / 2:
                break
            t0, c0 = time.perf_counter(), time.process_time()
            n_tok = one(text)
            lat_ms.append((time.perf_counter() - t0) * 1000.0)
            cpu_ms.append((time.process_time() - c0) * 1000.0)
            lat_tokens.append(n_tok)
            done += 1
            ctx.report(done, total, "speed latency")
        bs = max(1, int(opt["throughput_batch"]))
        thr_src = pool[:n_thr]
        if budget > 0 and lat_ms:
            # estimate from batch-1 speed (batching only helps): keep what fits the remaining budget
            per_sentence = (sum(lat_ms) / len(lat_ms)) / 1000.0
            remaining = max(0.0, budget - (time.perf_counter() - start))
            fit = max(min(bs, len(thr_src)), int(remaining / max(per_sentence, 1e-6)) // bs * bs)
            thr_src = thr_src[:fit]
        thr_tokens = 0
        t0 = time.perf_counter()
        for i in range(0, len(thr_src), bs):
            enc = model.encode_sources(thr_src[i:i + bs], backend.max_source_length)
            out = backend.generate(enc.input_ids, enc.attention_mask, num_beams=beams)
            thr_tokens += sum(len(t) + 1 for t in out)
        thr_s = time.perf_counter() - t0
        ctx.report(total, total, "speed throughput")
        lat = np.asarray(lat_ms) if lat_ms else np.asarray([np.nan])
        size = artifact_bytes(backend)
        hwm = suite_peak_rss_bytes() if scoped else None
        rss = hwm if hwm is not None else peak_rss_bytes()
        res = {
            "num_beams": beams, "threads": backend.threads, "warmup": int(opt["warmup"]),
            "time_budget_s": budget, "budget_limited": len(lat_ms) < min(n_lat, len(pool)) or len(thr_src) < min(
                n_thr, len(pool)),
            "latency_n": len(lat_ms), "throughput_n": len(thr_src), "throughput_batch": bs,
            "latency_ms": {"p50": finite(np.percentile(lat, 50), 2), "p90": finite(np.percentile(lat, 90), 2),
                           "mean": finite(lat.mean(), 2), "min": finite(lat.min(), 2), "max": finite(lat.max(), 2)},
            "ms_per_token": finite(sum(lat_ms) / max(1, sum(lat_tokens)), 3) if lat_ms else None,
            # process CPU time per sentence (all threads): less sensitive to other load on the host
            "cpu_ms_p50": finite(np.percentile(cpu_ms, 50), 2) if cpu_ms else None,
            "throughput_sentences_per_s": finite(len(thr_src) / thr_s, 2) if thr_src and thr_s > 0 else None,
            "throughput_tokens_per_s": finite(thr_tokens / thr_s, 1) if thr_src and thr_s > 0 else None,
            "bytes": size, "peak_rss_bytes": rss, "peak_rss_scope": "suite" if hwm is not None else "process",
        }
        res["metrics"] = {
            "latency_p50_ms": res["latency_ms"]["p50"], "latency_p90_ms": res["latency_ms"]["p90"],
            "ms_per_token": res["ms_per_token"], "throughput_sps": res["throughput_sentences_per_s"],
            "tokens_per_s": res["throughput_tokens_per_s"], "bytes": size, "cpu_ms_p50": res["cpu_ms_p50"],
            "peak_rss_mb": finite(rss / 2**20, 1), "threads": backend.threads,
        }
        return res
