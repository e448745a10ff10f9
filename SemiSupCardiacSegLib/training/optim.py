"""The method's optimizers (one per ``Method.optimizer_groups`` name), each with its learning-rate schedule.

Config ``optim.<name>``: type sgd|adam|rmsprop, lr, momentum, weight_decay, betas, and schedule
step|poly|exp|constant with step (iterations), gamma, power. The schedules are
``torch.optim.lr_scheduler.LambdaLR`` over the factor ``lr_factor``: the learning rate of iteration
i (0-based) is lr * factor(i), stepped once after every iteration. A resumed run rebuilds them at its
iteration (``Optimizers.load_state_dict``), so it needs no scheduler state.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR

from ..schedules import poly_lr, step_lr


def make_optimizer(params: list[nn.Parameter], spec: dict) -> torch.optim.Optimizer:
    """The optimizer of ``spec`` (an ``optim.<name>`` config entry) over ``params``."""
    if spec["type"] == "sgd":
        return torch.optim.SGD(
            params, lr=spec["lr"], momentum=spec.get("momentum", 0.9), weight_decay=spec.get("weight_decay", 0.0)
        )
    if spec["type"] == "adam":
        return torch.optim.Adam(
            params,
            lr=spec["lr"],
            betas=tuple(spec.get("betas", (0.9, 0.999))),
            weight_decay=spec.get("weight_decay", 0.0),
        )
    if spec["type"] == "rmsprop":  # MTN (paper 002)
        return torch.optim.RMSprop(
            params, lr=spec["lr"], momentum=spec.get("momentum", 0.0), weight_decay=spec.get("weight_decay", 0.0)
        )
    raise ValueError(f"unknown optimizer '{spec['type']}' (sgd | adam | rmsprop)")


def lr_factor(spec: dict, iteration: int, total: int) -> float:
    """The learning rate of (0-based) ``iteration`` as a multiple of ``spec['lr']``; ``total``: the run's iterations.

    step: gamma ** (i // step); exp: gamma ** (i / step), x gamma every ``step`` iterations applied
    smoothly (MTN: x0.95 per epoch); poly: (1 - i / total) ** power; constant: 1.
    """
    sched = spec.get("schedule", "constant")
    if sched == "step":
        return step_lr(1.0, iteration, int(spec.get("step", 2500)), spec.get("gamma", 0.1))
    if sched == "exp":
        return float(spec.get("gamma", 0.95)) ** (iteration / float(spec.get("step", 100)))
    if sched == "poly":
        return poly_lr(1.0, iteration, total, spec.get("power", 0.9))
    return 1.0


class Optimizers:
    """Optimizers by name with their LambdaLR schedules; ``by_name`` is what ``step.train_step`` steps."""

    def __init__(self, groups: dict[str, list[nn.Parameter]], specs: dict[str, dict], total: int):
        """groups: ``Method.optimizer_groups()``; specs: config ``optim``; total: the run's iterations."""
        self.specs = {name: specs[name] for name in groups}
        self.total = total
        self.by_name = {name: make_optimizer(params, self.specs[name]) for name, params in groups.items()}
        self.schedules = {name: self._schedule(name, 0) for name in groups}

    def _schedule(self, name: str, iteration: int) -> LambdaLR:
        """The schedule of ``name`` positioned at ``iteration`` (its learning rate is set for that iteration)."""
        spec, total = self.specs[name], self.total
        for group in self.by_name[name].param_groups:
            group["initial_lr"] = float(spec["lr"])  # the config's, also when resuming
        return LambdaLR(self.by_name[name], lambda i: lr_factor(spec, i, total), last_epoch=iteration - 1)

    def lr(self, name: str = "model") -> float:
        """The learning rate ``name`` steps with now."""
        return float(self.by_name[name].param_groups[0]["lr"])

    def step_schedules(self) -> None:
        """After an iteration: every learning rate to the next iteration's."""
        for schedule in self.schedules.values():
            schedule.step()

    def state_dict(self) -> dict[str, dict]:
        """{name: optimizer state} (a resume checkpoint's ``optimizers``)."""
        return {name: opt.state_dict() for name, opt in self.by_name.items()}

    def load_state_dict(self, states: dict[str, dict], iteration: int) -> None:
        """Restore the optimizers' states and put the schedules at ``iteration`` (completed iterations)."""
        for name, opt in self.by_name.items():
            opt.load_state_dict(states[name])
        self.schedules = {name: self._schedule(name, iteration) for name in self.by_name}
