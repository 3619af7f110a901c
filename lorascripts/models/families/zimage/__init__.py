"""Z-Image (Turbo, Base) on the family seam; see family.py."""

from .family import ZImage

__all__ = ["ZImage"]
