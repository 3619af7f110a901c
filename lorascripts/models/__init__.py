"""Base models: families, loading (single file, diffusers folder), text conditioning, original-layout names."""

from .family import ModelFamily
from .loader import BaseModel, load_base_model

__all__ = ["BaseModel", "ModelFamily", "load_base_model"]
