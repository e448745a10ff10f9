"""Qt-free helpers of the SemiSupCardiacSeg Slicer module (importable with slicer-core alone)."""

from .headless import HeadlessSlicer, headless_slicer
from .logic import SegmentResult, SemiSupCardiacSegLogic, volume_from_node

__all__ = ["HeadlessSlicer", "SegmentResult", "SemiSupCardiacSegLogic", "headless_slicer", "volume_from_node"]
