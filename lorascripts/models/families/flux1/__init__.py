"""FLUX.1 (dev, schnell) on the family seam; see family.py."""

from .family import Flux1

__all__ = ["Flux1"]
