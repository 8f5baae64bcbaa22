"""Which optimum/ORT quantization preset fits this CPU (``optimum-cli onnxruntime quantize --avx2`` etc.)."""
from __future__ import annotations

import platform

from backends.errors import InvalidInputError
from backends.machine import cpu_flags

PRESETS = ("avx512_vnni", "avx512", "avx2", "arm64")


def detect_preset(flags: set[str] | None = None, machine: str | None = None) -> tuple[str, str]:
    """Return ``(preset, reason)``; the preset names an ``AutoQuantizationConfig`` constructor."""
    machine = (machine or platform.machine()).lower()
    if machine in ("arm64", "aarch64"):
        return "arm64", f"machine={machine}"
    flags = cpu_flags() if flags is None else flags
    if "avx512_vnni" in flags:
        return "avx512_vnni", "cpu flag avx512_vnni"
    if "avx512f" in flags:
        return "avx512", "cpu flag avx512f (no avx512_vnni)"
    if "avx2" in flags:
        return "avx2", "cpu flag avx2 (no avx512f)"
    return "avx2", f"no avx2/avx512 flag found on {machine}; avx2 preset used as the generic x86 fallback"


def resolve_preset(option: str) -> tuple[str, str]:
    if option == "auto":
        return detect_preset()
    if option not in PRESETS:
        raise InvalidInputError(f"quantization preset '{option}' unknown; choose 'auto' or one of {list(PRESETS)}")
    return option, "set explicitly"


def static_defaults(preset: str) -> dict:
    """Static QDQ data types for this CPU, following ORT's quantization guidance.

    ORT's CPU kernels for QDQ MatMul are U8S8 (uint8 activations, int8 weights). Without VNNI
    (AVX2, AVX512F) they use VPMADDUBSW, whose 16-bit intermediate sums can saturate, so ORT
    recommends ``reduce_range`` (7-bit weights) there; VNNI and ARM dot-product kernels do not.
    """
    reduce = preset in ("avx2", "avx512")
    return {"activation_type": "QUInt8", "weight_type": "QInt8", "reduce_range": reduce,
            "reason": ("reduce_range: U8S8 kernels without VNNI can saturate (VPMADDUBSW)" if reduce
                       else "full 8-bit range (VNNI / ARM dot-product kernels do not saturate)")}
