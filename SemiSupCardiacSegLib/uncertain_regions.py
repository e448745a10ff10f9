"""Where to look first: connected regions of high predictive uncertainty, most uncertain first.

A region is a 26-connected component of voxels whose predictive entropy exceeds ``threshold``
(nats; default half of the maximum ln K, i.e. 0.35 nats for a binary model). Regions smaller than
``min_volume_mm3`` are dropped (single noisy voxels are not worth a visit). Regions are ranked by
their mean entropy, highest first. Each region's ``centre`` is the region voxel nearest to its
centroid, so it always lies inside the region (a crescent's centroid may not).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from .volume import LPS_TO_RAS, Volume


@dataclass
class UncertainRegion:
    """One region. centre_index: (i, j, k) voxel; centre_lps / centre_ras: that voxel's centre in mm."""

    rank: int
    mean_entropy: float
    max_entropy: float
    volume_mm3: float
    centre_index: tuple[int, int, int]
    centre_lps: tuple[float, float, float]

    @property
    def centre_ras(self) -> tuple[float, float, float]:
        ras = LPS_TO_RAS[:3, :3] @ np.asarray(self.centre_lps)
        return tuple(float(v) for v in ras)


def rank_uncertain_regions(
    entropy: Volume,
    num_classes: int = 2,
    threshold: float | None = None,
    min_volume_mm3: float = 20.0,
    max_regions: int = 20,
) -> list[UncertainRegion]:
    """Regions of ``entropy`` (Volume of nats) above ``threshold``, by decreasing mean entropy.

    Raises ValueError when the map holds NaN/inf or negative values (not an entropy map).
    """
    e = np.asarray(entropy.array, dtype=np.float32)
    if not np.isfinite(e).all():
        raise ValueError("uncertainty map holds NaN or infinite values")
    if e.size and e.min() < -1e-6:
        raise ValueError(f"uncertainty map has negative values (min {e.min():.3g}); expected entropy in nats")
    t = 0.5 * math.log(num_classes) if threshold is None else float(threshold)
    labels, n = ndimage.label(e > t, structure=np.ones((3, 3, 3), dtype=bool))
    if n == 0:
        return []
    index = np.arange(1, n + 1)
    voxel_mm3 = float(np.prod(entropy.spacing))
    counts = ndimage.sum_labels(np.ones_like(e), labels, index)
    means = ndimage.mean(e, labels, index)
    maxima = ndimage.maximum(e, labels, index)
    keep = [i for i in range(n) if counts[i] * voxel_mm3 >= min_volume_mm3]
    keep.sort(key=lambda i: -means[i])
    to_phys = entropy.index_to_physical()
    boxes = ndimage.find_objects(labels)
    regions = []
    for rank, i in enumerate(keep[:max_regions]):
        box = boxes[i]
        voxels = np.argwhere(labels[box] == i + 1) + np.array([s.start for s in box])
        centroid = voxels.mean(axis=0)
        centre = voxels[np.argmin(((voxels - centroid) ** 2).sum(axis=1))]
        lps = to_phys @ np.append(centre.astype(np.float64), 1.0)
        regions.append(
            UncertainRegion(
                rank=rank,
                mean_entropy=float(means[i]),
                max_entropy=float(maxima[i]),
                volume_mm3=float(counts[i] * voxel_mm3),
                centre_index=tuple(int(v) for v in centre),
                centre_lps=tuple(float(v) for v in lps[:3]),
            )
        )
    return regions
