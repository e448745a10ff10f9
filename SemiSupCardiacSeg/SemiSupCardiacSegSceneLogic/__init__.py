"""The SemiSupCardiacSeg Slicer module's scene Logic (``SceneLogic``) and its helpers, Qt-free (importable with
slicer-core alone)."""

from .headless import HeadlessSlicer, headless_slicer
from .logic import SceneLogic, SegmentResult, volume_from_node

__all__ = ["HeadlessSlicer", "SceneLogic", "SegmentResult", "headless_slicer", "volume_from_node"]
