"""The machine a result was measured on, and the one an artifact was built on.

A quantized artifact's bytes can depend on the CPU that built it: its calibration pass runs float kernels
that dispatch on the instruction set (TensorFlow's matmuls run oneDNN's sgemm), so min/max ranges, and with them
scales, can differ in the last bits. On the default model, ``ONEDNN_MAX_CPU_ISA=SSE41`` alone turns the same
tflite-int8 build (same cache key) into other bytes. Timings, too, belong to one machine. So reports, artifact
manifests and baselines carry :func:`describe`.
"""
from __future__ import annotations

import os
import platform
import re
from pathlib import Path
from typing import Any

#: instruction-set flags that change which float / int8 kernels run (``/proc/cpuinfo`` spelling)
ISA_FLAGS = ("sse4_2", "avx", "avx2", "fma", "f16c", "avx_vnni", "avx512f", "avx512bw", "avx512vl", "avx512_vnni",
             "avx512_bf16", "avx512_fp16", "amx_tile", "amx_int8", "amx_bf16", "asimd", "asimddp", "sve")
#: environment variables that change kernel dispatch in this process (recorded when set)
DISPATCH_ENV = ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA", "TF_ENABLE_ONEDNN_OPTS", "ATEN_CPU_CAPABILITY",
                "MKL_ENABLE_INSTRUCTIONS", "CT2_USE_MKL")


def _read(path: str | Path) -> str:
    try:
        return Path(path).read_text(errors="replace")
    except OSError:
        return ""


def cpu_flags(cpuinfo: str | Path = "/proc/cpuinfo") -> set[str]:
    """The feature flags of the first CPU (empty when /proc/cpuinfo is unavailable, e.g. macOS)."""
    for line in _read(cpuinfo).splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return set(value.split())
    return set()


def cpu_model(cpuinfo: str | Path = "/proc/cpuinfo") -> str:
    """``model name`` of the first CPU (else its vendor, else the platform's processor string)."""
    text = _read(cpuinfo)
    m = re.search(r"^model name\s*:\s*(.+)$", text, re.M) or re.search(r"^vendor_id\s*:\s*(.+)$", text, re.M)
    return m.group(1).strip() if m else (platform.processor() or "unknown")


def describe(cpuinfo: str | Path = "/proc/cpuinfo", meminfo: str | Path = "/proc/meminfo") -> dict[str, Any]:
    """``{"cpu", "arch", "cores", "isa": [flags of ISA_FLAGS present], "memory_gb", "os", "python",
    "dispatch_env": {var: value}}``."""
    m = re.search(r"^MemTotal:\s*(\d+)\s*kB", _read(meminfo), re.M)
    flags = cpu_flags(cpuinfo)
    return {"cpu": cpu_model(cpuinfo), "arch": platform.machine(), "cores": os.cpu_count(),
            "isa": [f for f in ISA_FLAGS if f in flags],
            "memory_gb": round(int(m.group(1)) / 2**20, 1) if m else None,
            "os": f"{platform.system()} {platform.release()}", "python": platform.python_version(),
            "dispatch_env": {k: os.environ[k] for k in DISPATCH_ENV if k in os.environ}}


def build_identity(desc: dict[str, Any]) -> dict[str, Any]:
    """What of a machine can change an artifact's bytes: CPU, architecture, ISA flags, dispatch overrides."""
    return {k: desc.get(k) for k in ("cpu", "arch", "isa", "dispatch_env")}


def differences(a: dict[str, Any] | None, b: dict[str, Any] | None,
                keys: tuple[str, ...] = ("cpu", "arch", "cores", "isa", "memory_gb", "dispatch_env")) -> list[str]:
    """How machine ``b`` differs from ``a``, in words (empty when either is unknown or they agree)."""
    if not isinstance(a, dict) or not isinstance(b, dict):
        return []
    out = []
    for k in keys:
        x, y = a.get(k), b.get(k)
        if x == y or k not in a or k not in b:
            continue
        if k == "isa":
            gone, new = [f for f in x or [] if f not in (y or [])], [f for f in y or [] if f not in (x or [])]
            out.append("isa " + " ".join([f"-{f}" for f in gone] + [f"+{f}" for f in new]))
        else:
            out.append(f"{k} {x} -> {y}")
    return out
