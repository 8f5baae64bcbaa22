"""TFLite/LiteRT split backends (encoder.tflite + decoder_step.tflite + the shared host loop).

Light on purpose: only declares the registered variants; nothing heavy is imported here.
"""

_REQ = ("tensorflow", "ai_edge_litert", "torch", "transformers")
_T = "backends.tflite.backend:TFLiteSplitBackend"
# the calibration that measured best on the default model (see backend.py / the issue-3 report): decoder
# ranges by least int8 error, encoder ranges at the 99.99th percentile of non-padding positions
_CALIB = {"calibration_method": "mse", "encoder_calibration_method": "percentile", "encoder_percentile": 99.99,
          "encoder_valid_rows": True}
# exact rewrites of the int8 graphs (balance.py): post-LN residual streams in a balanced per-channel basis
# with gamma/beta folded away, FFN intermediates per-channel balanced (skipped where they do not apply)
_REWRITES = {"stream_balance": 0.9, "ffn_balance": True}
# ai-edge-quantizer has no mse ranges and quantizes the FP32 pair as built (no rewrites): its best measured
# setting (decoder percentile 99.999, encoder min-max)
_AEQ_CALIB = {"quantizer": "ai_edge_quantizer", "calibration_method": "percentile", "percentile": 99.999,
              "encoder_calibration_method": "minmax"}

# mixed int8/int16 (AEQ): the residual stream and layer-norm chain (ADD, SUB, MUL, MEAN, RSQRT) in int16,
# the matmuls (FULLY_CONNECTED, BATCH_MATMUL) and attention in int8 -- integer-only, not strict INT8
_INT16_NORM_OPS = ("ADD", "SUB", "MUL", "MEAN", "RSQRT")

# tflite-int8's recipe (symmetric_matmul_rhs="encoder": XNNPACK runs the encoder's int8 attention matmuls)
_INT8 = {"quantization": "int8", "calibration_recipe": "real", "boundary": "requant", **_CALIB, **_REWRITES,
         "symmetric_matmul_rhs": "encoder"}

BACKENDS = [
    dict(name="tflite-fp32-split", target=_T, requires=_REQ, options={"quantization": "none"},
         description="TFLite FP32: encoder + KV-cache decoder step re-implemented in TF, shared host loop"),
    dict(name="tflite-int8", target=_T, requires=_REQ, options=_INT8,
         description="TFLite strict full INT8, decoder calibrated on real decoder states, requantized boundary"),
    dict(name="tflite-int8-aeq", target=_T, requires=_REQ + ("ai_edge_quantizer",),
         options={"quantization": "int8", "calibration_recipe": "real",
                  "boundary": "requant", **_AEQ_CALIB},
         description="TFLite strict full INT8 by ai-edge-quantizer (a8w8 recipe) on the FP32 pair, calibrated "
                     "on the same real decoder states as tflite-int8, AEQ's float REDUCE_MAX folded to integer"),
    dict(name="tflite-int8-mixed16", target=_T, requires=_REQ + ("ai_edge_quantizer",),
         options={"quantization": "int8", "calibration_recipe": "real", "boundary": "requant", **_AEQ_CALIB,
                  "aeq_int16_ops": _INT16_NORM_OPS},
         description="TFLite integer-only, mixed by ai-edge-quantizer: int8 matmuls and attention, int16 "
                     "residual stream and layer-norm chain (ADD/SUB/MUL/MEAN/RSQRT); not strict INT8"),
    dict(name="tflite-int8-naive", target=_T, requires=_REQ,
         options={"quantization": "int8", "calibration_recipe": "naive", "boundary": "raw",
                  "cross_kv": "decoder"},
         description="Reproducible failure: decoder calibrated on BOS + zero states, raw boundary "
                     "(source-blind decoder)"),
    dict(name="tflite-int8-hfmask", target=_T, requires=_REQ,
         options={**_INT8, "mask_mode": "hf"},
         description="Reproducible failure: tflite-int8's recipe with one change, a Hugging Face -1e9 additive "
                     "mask"),
    dict(name="tflite-int16x8", target=_T, requires=_REQ + ("ai_edge_quantizer",),
         options={"quantization": "int16x8", "calibration_recipe": "real",
                  "boundary": "requant", **_AEQ_CALIB},
         description="TFLite 16x8 by ai-edge-quantizer (a16w8): int16 activations, int8 weights, no float op "
                     "(LiteRT's int16 kernels are reference kernels: slow)"),
    dict(name="tflite-dynamic", target=_T, requires=_REQ, options={"quantization": "dynamic"},
         description="TFLite dynamic-range: int8 weights, float activations"),
    dict(name="tflite-int8-selective", target=_T, requires=_REQ,
         options={"quantization": "int8", "float_ops": ("SOFTMAX",), **_CALIB},
         description="TFLite INT8 with named op types left in float (rescue experiments; not strict INT8)"),
]
