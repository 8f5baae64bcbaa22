"""Model families (Marian, BART, mBART, T5, M2M100/NLLB, Pegasus)."""
from backends.families.base import GenerationConventions, ModelFamily, NormalizedConfig
from backends.families.registry import register_family, resolve_family, supported_model_types

__all__ = ["GenerationConventions", "ModelFamily", "NormalizedConfig", "register_family", "resolve_family",
           "supported_model_types"]
