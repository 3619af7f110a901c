"""Base models: the family seam (`families/`), loading (single file, diffusers folder), weight files, tokenizers."""

from .families import BaseModel, Family, get_family
from .loader import load_base_model

__all__ = ["BaseModel", "Family", "get_family", "load_base_model"]
