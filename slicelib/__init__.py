"""slicelib: read 3D brain MRI with 2D ImageNet models, slice by slice (Gupta et al., ISBI 2023).

Modules: ``model`` (SliceModel), ``data`` (NIfTI loading, preprocessing, tables, cache),
``synth`` (the synthetic cohort), ``train`` and ``metrics`` (experiments), ``explain``
(slice contributions), ``plotting`` (figures), ``course`` (the notebooks), ``cli``.
"""

from slicelib.model import SliceModel

__all__ = ["SliceModel"]
__version__ = "0.1.0"
