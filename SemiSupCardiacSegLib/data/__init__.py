"""Training data: case discovery and loading, two-stream sampler, crops and augmentation."""

from .datasets import Case, CaseFile, CropDataset, find_cases, load_case
from .sampler import TwoStreamBatchSampler

__all__ = ["Case", "CaseFile", "CropDataset", "find_cases", "load_case", "TwoStreamBatchSampler"]
