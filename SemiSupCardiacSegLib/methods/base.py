"""The Method interface and registry.

A method says what its networks and losses are; it never opens files, picks devices or saves
(the Trainer does). ``training_step`` returns a ``StepOutput``: the losses to minimise as
``OptimizerStep``s, one per optimizer, in the order the Trainer must step them (e.g. segmenter
first, then discriminator), plus scalars to log.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from ..networks import build_network
from ..schedules import sigmoid_rampup
from .copy_paste import CopyPaste

METHODS: dict[str, type["Method"]] = {}


@dataclass(frozen=True)
class OptimizerStep:
    """One optimizer's update: ``loss`` (a scalar tensor) is backpropagated, then ``optimizer`` steps.

    optimizer: a key of ``Method.optimizer_groups()``.
    """

    optimizer: str
    loss: torch.Tensor


@dataclass(frozen=True)
class StepOutput:
    """What ``Method.training_step`` gives the Trainer.

    steps: the optimizer updates in the order they are taken (each zeroes its optimizer's gradients,
    backpropagates its loss and steps, so a later step never sees an earlier step's gradients).
    logs: scalars for ``log.jsonl`` (plain floats, detached).
    """

    steps: tuple[OptimizerStep, ...]
    logs: dict[str, float]

    @property
    def optimizers(self) -> tuple[str, ...]:
        """The optimizer names in step order."""
        return tuple(s.optimizer for s in self.steps)

    def loss(self, optimizer: str) -> torch.Tensor:
        """The loss of the step of ``optimizer``."""
        for s in self.steps:
            if s.optimizer == optimizer:
                return s.loss
        raise KeyError(f"no step for optimizer '{optimizer}' (steps: {', '.join(self.optimizers)})")


def register(name: str) -> Callable[[type["Method"]], type["Method"]]:
    """Class decorator adding a Method subclass to the registry under ``name``."""

    def deco(cls: type["Method"]) -> type["Method"]:
        cls.name = name
        METHODS[name] = cls
        return cls

    return deco


def get_method(name: str) -> type["Method"]:
    if name not in METHODS:
        raise ValueError(f"unknown method '{name}'; known: {', '.join(sorted(METHODS))}")
    return METHODS[name]


class Method(nn.Module):
    """Base: holds ``self.model`` (the network used for inference) and any auxiliary networks.

    Config keys common to all methods: ``arch``, ``network`` (architecture params), ``iterations``.
    ``uses_unlabeled``: whether batches need unlabeled samples.
    """

    name = "base"
    uses_unlabeled = False
    defaults: dict = {}

    def __init__(self, config: dict):
        super().__init__()
        self.config = {**self.defaults, **config.get("method_params", {})}
        self.arch = config.get("arch", "vnet")
        self.network_params = dict(config.get("network", {}))
        self.model = build_network(self.arch, self.network_params)
        self.total_iterations = int(config.get("iterations", 6000))
        copy_paste = config.get("copy_paste")
        # BCP's copy-paste term, added to the model's loss by ``step_losses`` (``methods.copy_paste``)
        self.copy_paste = None if copy_paste is None else CopyPaste(self.model, copy_paste, self.total_iterations)

    def optimizer_groups(self) -> dict[str, list[nn.Parameter]]:
        """Parameters of each optimizer, by name; 'model' always exists."""
        return {"model": list(self.model.parameters())}

    def training_step(self, batch: dict[str, torch.Tensor], iteration: int) -> StepOutput:
        """The losses of one iteration. batch holds the first ``n_labeled`` rows labeled; iteration
        counts completed iterations (0 at the first step)."""
        raise NotImplementedError

    def step_losses(self, batch: dict[str, torch.Tensor], iteration: int) -> StepOutput:
        """``training_step`` with the additions its config asks for (``copy_paste``: BCP's term added to
        the ``model`` loss); what the Trainer runs."""
        out = self.training_step(batch, iteration)
        if self.copy_paste is None:
            return out
        extra, logs = self.copy_paste.loss(self.model, batch, iteration)
        steps = tuple(OptimizerStep(s.optimizer, s.loss + extra) if s.optimizer == "model" else s for s in out.steps)
        return StepOutput(steps, {**out.logs, **logs, "loss": out.logs.get("loss", 0.0) + logs["loss_copy_paste"]})

    def ramped(self, value: float, iteration: int, rampup_fraction: float) -> float:
        """value * exp(-5 (1 - t/T)^2), T = rampup_fraction x total iterations (the papers' warm-up)."""
        return float(value) * sigmoid_rampup(iteration, float(rampup_fraction) * self.total_iterations)

    def consistency_weight(self, iteration: int) -> float:
        """The ramped ``consistency`` weight (config keys ``consistency``, ``consistency_rampup``)."""
        return self.ramped(self.config["consistency"], iteration, self.config["consistency_rampup"])

    def after_step(self, iteration: int) -> None:
        """Called by the Trainer after every optimizer has stepped (e.g. a mean teacher's EMA update).

        iteration: the number of completed iterations (1 after the first step).
        """
