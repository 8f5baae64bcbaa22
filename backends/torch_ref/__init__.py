"""PyTorch FP32 reference backends: ``torch-fp32`` (oracle) and ``torch-fp32-split``."""

_REQ = ("torch", "transformers")
BACKENDS = [
    dict(name="torch-fp32", target="backends.torch_ref.backend:TorchFusedBackend", requires=_REQ,
         description="PyTorch FP32 with transformers generate(): the oracle"),
    dict(name="torch-fp32-split", target="backends.torch_ref.backend:TorchSplitBackend", requires=_REQ,
         description="PyTorch FP32 weights through encode/decode_step and the shared host loop"),
]
