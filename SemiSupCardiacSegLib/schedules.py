"""Loss-weight ramps and learning-rate schedules (functions of the iteration number)."""

from __future__ import annotations

import math


def sigmoid_rampup(current: float, length: float) -> float:
    """exp(-5 (1 - t)^2) for t = current / length clipped to [0, 1] (Laine & Aila; UA-MT, SASSNet code)."""
    if length <= 0:
        return 1.0
    t = min(max(current, 0.0), length) / length
    return float(math.exp(-5.0 * (1.0 - t) ** 2))


def step_lr(base_lr: float, iteration: int, step: int, gamma: float = 0.1) -> float:
    """base_lr * gamma ** (iteration // step) (the papers: 0.01, x0.1 every 2500 of 6000 iterations)."""
    return base_lr * gamma ** (iteration // max(1, step))


def poly_lr(base_lr: float, iteration: int, max_iterations: int, power: float = 0.9) -> float:
    """base_lr * (1 - iteration / max_iterations) ** power (nnU-Net, DTC-style schedules)."""
    return base_lr * (1.0 - min(iteration, max_iterations) / max(1, max_iterations)) ** power
