"""CTranslate2 backends: the Transformers converter + CT2's own ``translate_batch``.

One class, one variant per compute type. Every variant is preflighted against
``ctranslate2.get_supported_compute_types(device)``: an unsupported type (e.g. ``int16``
on a CPU without the int16 GEMM backend) raises
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
    dict(name="ct2-int16", target=_TARGET, requires=_REQ, options={"compute_type": "int16"},
         description="CTranslate2 int16 weights/GEMMs (needs the MKL int16 GEMM; preflighted)"),
]
