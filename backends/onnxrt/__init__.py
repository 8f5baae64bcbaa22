"""ONNX Runtime backends: optimum-onnx export (encoder, decoder, decoder-with-past), ORT sessions
driven by the shared host loop; FP32, dynamic INT8 (CPU preset) and static QDQ INT8 (calibrated on
recorded generation inputs)."""

_REQ = ("onnxruntime", "onnx", "optimum", "torch", "transformers")
_STATIC_OPTS = {"calibration_method": "minmax", "calibration_size": 64, "calibration_batch_size": 8}
BACKENDS = [
    dict(name="onnx-fp32", target="backends.onnxrt.backend:OnnxFP32Backend", requires=_REQ,
         description="ONNX Runtime FP32: optimum-onnx export, encoder + decoder + decoder-with-past sessions"),
    dict(name="onnx-dynamic-int8", target="backends.onnxrt.backend:OnnxDynamicInt8Backend", requires=_REQ,
         description="ONNX Runtime dynamic INT8 (optimum ORTQuantizer, per-channel, preset detected from the CPU)"),
    dict(name="onnx-static-int8", target="backends.onnxrt.backend:OnnxStaticInt8Backend", requires=_REQ,
         options=dict(_STATIC_OPTS),
         description="ONNX Runtime static QDQ INT8 (quantize_static, calibrated on source batches and "
                     "decoder inputs recorded during FP32 generation)"),
]
