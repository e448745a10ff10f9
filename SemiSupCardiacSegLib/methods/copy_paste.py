"""Bidirectional copy-paste (BCP; Bai, Chen, Li, Shen, Wang, CVPR 2023), an addition to any method
that learns from unlabeled images: config key ``copy_paste`` (an object; ``{}`` = the defaults).

Each step, labeled image ``l_i`` and unlabeled image ``u_i`` of the batch (pairs i = 0 .. min(L, U) - 1)
are mixed by a cuboid ``C`` of ``ratio`` x the crop's size per axis at a random place:

* even pairs ("inward"):  X = u_i inside C, l_i outside;  Y = pseudo-label of u_i inside, label of l_i outside;
* odd pairs ("outward"):  X = l_i inside C, u_i outside;  Y = label of l_i inside, pseudo-label outside.

With the papers' batch (2 labeled + 2 unlabeled) that is one image of each direction per step, as BCP's
X_in and X_out. The added loss is ``weight`` x 0.5 (CE + soft Dice) of the network's segmentation of
the mixed images, voxel-weighted: 1 where the label is a reference label, alpha(t) where it is a
pseudo-label (BCP's alpha = ``unlabeled_weight`` = 0.5). It is added to the method's own
``model`` loss, so every method keeps its own terms; the cost is one forward and backward pass of
the mixed images (L of them) and one no-gradient teacher pass of the unlabeled ones per step.

Choices BCP's paper leaves open or that differ here, with why:

* Pseudo-labels: argmax of a teacher that is an exponential moving average of the network,
  theta' <- a theta' + (1 - a) theta, a = min(1 - 1/(t + 1), ``ema_decay`` = 0.99) (BCP's mean teacher;
  the warm start, as UA-MT's, makes the first teacher the network itself, also after ``--init``).
  Its batch-norm statistics are averaged the same way and it runs in eval mode (no dropout),
  so a pseudo-label is one deterministic prediction. BCP's reference code keeps only the largest
  connected component of an LA pseudo-label; that is not done here (it does not carry to the cine
  task's three structures).
* BCP pre-trains the network on labeled-labeled mixes, then starts self-training with a teacher
  that already segments. Here there is one stage: alpha ramps up as the other methods' unlabeled
  terms, alpha(t) = ``unlabeled_weight`` x exp(-5 (1 - t / (``rampup`` x iterations))^2), so early
  pseudo-labels (from an untrained teacher) weigh almost nothing while the mixes' labeled voxels
  weigh 1 from the first step.
* The voxel weights enter ``losses.dice_ce_loss``: the soft Dice with each voxel counted w times,
  the cross-entropy as sum(w ce) / sum(w).
* On 2D crops (cine U-Net) the cuboid is a rectangle of the in-plane axes; axes of size 1 are kept whole.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from ..losses import dice_ce_loss
from ..schedules import sigmoid_rampup

#: The defaults of config ``copy_paste`` (BCP's values where it gives one).
COPY_PASTE_DEFAULTS = {"weight": 1.0, "unlabeled_weight": 0.5, "ratio": 2.0 / 3.0, "ema_decay": 0.99, "rampup": 0.4}


@torch.no_grad()
def ema_update(teacher: nn.Module, model: nn.Module, iteration: int, decay: float, buffers: bool = False) -> None:
    """A mean teacher's step: theta' <- a theta' + (1 - a) theta, a = min(1 - 1/(iteration + 1), decay)
    (the warm start of UA-MT's reference code: iteration 0 copies the network). ``buffers``: the
    floating-point buffers (batch-norm statistics) too, else the parameters only."""
    a = min(1.0 - 1.0 / (iteration + 1), decay)
    own = dict(model.named_parameters())
    pairs = list(teacher.named_parameters())
    if buffers:
        own.update(model.named_buffers())
        pairs += list(teacher.named_buffers())
    for name, t in pairs:
        if t.is_floating_point():
            t.mul_(a).add_(own[name].detach(), alpha=1.0 - a)


def cuboid_mask(spatial: tuple[int, ...], ratio: float) -> torch.Tensor:
    """A bool mask of shape ``spatial``, True inside one cuboid of round(ratio x size) voxels per axis
    (axes of size 1 whole) at a uniformly random place."""
    mask = torch.zeros(spatial, dtype=torch.bool)
    index = []
    for size in spatial:
        length = size if size == 1 else max(1, min(size, round(ratio * size)))
        start = int(torch.randint(0, size - length + 1, (1,)))
        index.append(slice(start, start + length))
    mask[tuple(index)] = True
    return mask


class CopyPaste(nn.Module):
    """The BCP term of a method (see the module docstring): ``loss(model, batch, iteration)``.

    The EMA teacher is a submodule, so it is saved in the method's state and restored on ``--resume``."""

    def __init__(self, model: nn.Module, params: dict, total_iterations: int):
        super().__init__()
        self.params = {**COPY_PASTE_DEFAULTS, **params}
        self.total_iterations = int(total_iterations)
        self.teacher = copy.deepcopy(model)
        for p in self.teacher.parameters():
            p.requires_grad_(False)

    def unlabeled_weight(self, iteration: int) -> float:
        """alpha(t): ``unlabeled_weight`` ramped over ``rampup`` x the run's iterations."""
        length = float(self.params["rampup"]) * self.total_iterations
        return float(self.params["unlabeled_weight"]) * sigmoid_rampup(iteration, length)

    def update_teacher(self, model: nn.Module, iteration: int) -> None:
        """The EMA step of ``ema_update``, batch-norm statistics included; iteration 0 copies."""
        ema_update(self.teacher, model, iteration, float(self.params["ema_decay"]), buffers=True)

    def mix(self, batch: dict, pseudo: torch.Tensor, alpha: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The mixed images (P, C, ...), their labels (P, ...) and voxel weights (P, ...) of the batch's
        P = min(L, U) labeled-unlabeled pairs; ``pseudo`` (U, ...) the unlabeled rows' pseudo-labels."""
        n = int(batch["n_labeled"])
        image, label = batch["image"], batch["label"]
        pairs = min(n, image.shape[0] - n)
        images, labels, weights = [], [], []
        for i in range(pairs):
            inside = cuboid_mask(tuple(label.shape[1:]), float(self.params["ratio"])).to(image.device)
            inward = i % 2 == 0  # the unlabeled image's cuboid pasted into the labeled one
            from_unlabeled = inside if inward else ~inside
            images.append(torch.where(from_unlabeled.unsqueeze(0), image[n + i], image[i]))
            labels.append(torch.where(from_unlabeled, pseudo[i].to(label.dtype), label[i]))
            weights.append(torch.where(from_unlabeled, alpha, 1.0).to(image.dtype))
        return torch.stack(images), torch.stack(labels), torch.stack(weights)

    def loss(self, model: nn.Module, batch: dict, iteration: int) -> tuple[torch.Tensor, dict[str, float]]:
        """weight x the voxel-weighted Dice + CE of ``model`` on the batch's mixes (a scalar), and logs."""
        n = int(batch["n_labeled"])
        if min(n, batch["image"].shape[0] - n) < 1:  # only in the out-of-memory probe's sub-batches:
            zero = batch["image"].new_zeros(())  # config_check keeps an unlabeled row in every batch
            return zero, {"loss_copy_paste": 0.0, "copy_paste_unlabeled_weight": 0.0}
        self.update_teacher(model, iteration)
        self.teacher.eval()
        with torch.no_grad():
            pseudo = self.teacher(batch["image"][n:])["seg"].argmax(dim=1)
        alpha = self.unlabeled_weight(iteration)
        images, labels, weights = self.mix(batch, pseudo, alpha)
        loss = float(self.params["weight"]) * dice_ce_loss(model(images)["seg"], labels, weights)
        return loss, {"loss_copy_paste": float(loss.detach()), "copy_paste_unlabeled_weight": alpha}
