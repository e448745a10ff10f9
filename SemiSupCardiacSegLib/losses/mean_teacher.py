"""UA-MT's uncertainty-masked consistency (Yu, Wang, Li, Fu, Heng, MICCAI 2019; the LA baseline of
papers 000, 003 and 004)."""

from __future__ import annotations

import torch


def masked_consistency_loss(
    student_probs: torch.Tensor, teacher_probs: torch.Tensor, certain: torch.Tensor
) -> torch.Tensor:
    """L_c = sum_v I(u_v < H) ||f(x_v; theta) - f(x_v; theta')||^2 / (2 sum_v I(u_v < H) + 1e-16).

    student_probs, teacher_probs: (B_u, K, ...) softmax of student and teacher on unlabeled images;
    certain: (B_u, ...) float mask I(u < H) of voxels whose teacher uncertainty is below the threshold.
    The squared difference is summed over classes; the factor 2 and the 1e-16 are the reference code's
    (its mean over the two classes), so no certain voxel gives 0, not NaN.
    """
    dist = ((student_probs - teacher_probs) ** 2).sum(dim=1)
    return (certain * dist).sum() / (2 * certain.sum() + 1e-16)
