"""CTranslate2 backends: the Transformers converter + CT2's own ``translate_batch``.

One class, one variant per compute type, plus int8 on each x86 GEMM library: CT2 picks
Intel MKL on GenuineIntel CPUs and oneDNN elsewhere (``gemm_library="auto"``), and the int8
results differ between them (see README.md), so ``ct2-int8-mkl``/``ct2-int8-dnnl`` name one
explicitly (set through ``CT2_USE_MKL``, which CT2 reads once per process). Every variant
is preflighted against ``ctranslate2.get_supported_compute_types(device)``: an unsupported
type (e.g. ``int16`` without the MKL int16 GEMM) raises
:class:`backends.ctranslate2.errors.ComputeTypeUnsupportedError` from ``preflight()``/
``prepare()`` so the orchestrator records a clean skip with the reason.

This module stays light: no ``ctranslate2`` import here (see ``backend.py``).
"""
from backends.ctranslate2.errors import ComputeTypeUnsupportedError  # noqa: F401  (light)

_REQ = ("ctranslate2", "torch", "transformers")  # torch+transformers: the converter reads the HF checkpoint
_TARGET = "backends.ctranslate2.backend:CTranslate2Backend"
BACKENDS = [
    dict(name="ct2-fp32", target=_TARGET, requires=_REQ, options={"compute_type": "float32"},
         description="CTranslate2 float32 (converted weights, CT2 translate_batch)"),
    dict(name="ct2-int8", target=_TARGET, requires=_REQ, options={"compute_type": "int8"},
         description="CTranslate2 int8: int8 weights of linear+embedding layers, per-row scales, "
                     "dynamic int8 activations in GEMMs; other layers float"),
    dict(name="ct2-int8-float32", target=_TARGET, requires=_REQ, options={"compute_type": "int8_float32"},
         description="CTranslate2 int8_float32: int8 GEMMs, non-quantized layers explicitly float32"),
    dict(name="ct2-int8-mkl", target=_TARGET, requires=_REQ, options={"compute_type": "int8", "gemm_library": "mkl"},
         description="CTranslate2 int8 on Intel MKL's int8 GEMM (CT2's default on GenuineIntel CPUs only)"),
    dict(name="ct2-int8-dnnl", target=_TARGET, requires=_REQ,
         options={"compute_type": "int8", "gemm_library": "dnnl"},
         description="CTranslate2 int8 on oneDNN's int8 GEMM (CT2's default on non-Intel x86 CPUs)"),
    dict(name="ct2-int16", target=_TARGET, requires=_REQ, options={"compute_type": "int16", "gemm_library": "mkl"},
         description="CTranslate2 int16 weights/GEMMs (MKL's int16 GEMM, forced on non-Intel CPUs; preflighted)"),
]
