"""seqquant backends: one sub-package per runtime behind :class:`backends.base.Seq2SeqBackend`.

Importing this package imports no runtime. ``get_backend(name)`` imports one lazily.
"""
import os

# seqquant never uses transformers' TensorFlow/Flax model classes; stop transformers from
# importing TensorFlow (seconds of start-up) whenever tokenizers or torch models load.
os.environ.setdefault("USE_TF", "0")
os.environ.setdefault("USE_FLAX", "0")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")

from backends.registry import available_backends, get_backend, register_backend  # noqa: E402

__all__ = ["available_backends", "get_backend", "register_backend"]
