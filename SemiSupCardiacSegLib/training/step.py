"""One training iteration of a method: its losses, then each optimizer's update in the method's order."""

from __future__ import annotations

from typing import Mapping

import torch

from ..distributed import DistContext
from ..methods import Method, StepOutput
from .precision import step_autocast

SINGLE_PROCESS = DistContext()


def train_step(
    method: Method,
    optimizers: Mapping[str, torch.optim.Optimizer],
    batch: dict,
    iteration: int,
    dist: DistContext = SINGLE_PROCESS,
    precision: str = "float32",
) -> StepOutput:
    """Run ``method.step_losses`` (its ``training_step`` and configured additions) on ``batch``
    (tensors on the method's device, first ``n_labeled`` rows labeled) at ``iteration`` (completed
    iterations), then for each of its ``OptimizerStep``s in order: zero that optimizer's gradients,
    backpropagate the loss, average the gradients over ranks (``dist``; nothing on one process) and
    step. Last, ``method.after_step(iteration + 1)`` (e.g. a mean teacher's EMA). Learning-rate
    schedules are the caller's (``optim.Optimizers``). ``precision`` ("float32" or "bfloat16",
    resolved by ``precision.resolve_precision``): the forward passes and losses run under its
    autocast (``precision.step_autocast``); backward, gradients and steps are float32.

    A later step's zero_grad drops what an earlier loss left in its parameters (the segmenter's
    adversarial term reaches the discriminator's parameters), so each optimizer steps on its own loss.
    """
    with step_autocast(precision, next(method.parameters()).device):  # the device the method computes on
        out = method.step_losses(batch, iteration)
    for step in out.steps:
        opt = optimizers[step.optimizer]
        opt.zero_grad(set_to_none=True)
        step.loss.backward()
        dist.average_gradients([p for group in opt.param_groups for p in group["params"]])
        opt.step()
    method.after_step(iteration + 1)
    return out
