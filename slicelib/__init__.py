"""slicelib: read 3D brain MRI with 2D ImageNet models, slice by slice (Gupta et al., ISBI 2023)."""

from slicelib.model import SliceModel

__all__ = ["SliceModel"]
__version__ = "0.1.0"
