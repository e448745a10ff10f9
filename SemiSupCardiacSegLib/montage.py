"""PNG montage of a segmentation: axial slices with the image, the label contour and the uncertainty heatmap."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .atomic import atomic_path
from .dependencies import import_optional


def save_montage(
    image: np.ndarray, labels: np.ndarray, uncertainty: np.ndarray, path: str | Path, n_slices: int = 4, title: str = ""
) -> Path:
    """image/labels/uncertainty: (I, J, K) on one grid; slices along K (axial) through the labelled range.

    Two rows per slice column: top, image with the segmentation contour; bottom, image with the
    uncertainty (entropy) heatmap (inferno) overlaid where it exceeds 5% of its maximum.
    """
    matplotlib = import_optional("matplotlib", f"writing the montage {Path(path).name}")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ks = np.nonzero(labels.any(axis=(0, 1)))[0]
    lo, hi = (int(ks.min()), int(ks.max())) if len(ks) else (0, image.shape[2] - 1)
    picks = np.linspace(lo, hi, n_slices + 2)[1:-1].round().astype(int)
    umax = float(uncertainty.max()) or 1.0
    fig, axes = plt.subplots(2, n_slices, figsize=(3 * n_slices, 6.4), squeeze=False)
    vmin, vmax = np.percentile(image, [1, 99])
    for col, k in enumerate(picks):
        img = image[:, :, k].T
        for row in range(2):
            ax = axes[row, col]
            ax.imshow(img, cmap="gray", vmin=vmin, vmax=vmax, origin="lower")
            ax.set_axis_off()
        if labels[:, :, k].any():
            axes[0, col].contour(labels[:, :, k].T > 0, levels=[0.5], colors="lime", linewidths=1.2)
        axes[0, col].set_title(f"slice k={k}", fontsize=9)
        u = np.ma.masked_less(uncertainty[:, :, k].T, 0.05 * umax)
        hm = axes[1, col].imshow(u, cmap="inferno", vmin=0, vmax=umax, alpha=0.8, origin="lower")
    fig.colorbar(hm, ax=axes[1, :].tolist(), shrink=0.8, label="predictive entropy (nats)")
    axes[0, 0].text(-0.08, 0.5, "segmentation", transform=axes[0, 0].transAxes, rotation=90, va="center", ha="right")
    axes[1, 0].text(-0.08, 0.5, "uncertainty", transform=axes[1, 0].transAxes, rotation=90, va="center", ha="right")
    if title:
        fig.suptitle(title, fontsize=10)
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=90, format="png")
    plt.close(fig)
    return path
