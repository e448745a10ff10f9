"""Qt-free helpers of the SemiSupCardiacSeg Slicer module (importable with slicer-core alone)."""

from .logic import SegmentResult, SemiSupCardiacSegLogic, volume_from_node

__all__ = ["SegmentResult", "SemiSupCardiacSegLogic", "volume_from_node"]
