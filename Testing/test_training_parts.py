"""The Trainer's parts on their own: learning-rate schedules, the training step's order, typed method outputs."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from SemiSupCardiacSegLib.methods import Method, OptimizerStep, StepOutput
from SemiSupCardiacSegLib.schedules import poly_lr, step_lr
from SemiSupCardiacSegLib.training import train_step
from SemiSupCardiacSegLib.training.optim import Optimizers

TOTAL = 12
SPECS = {
    "step": {"type": "sgd", "lr": 0.01, "schedule": "step", "step": 5, "gamma": 0.1},
    "poly": {"type": "sgd", "lr": 0.05, "schedule": "poly", "power": 0.9},
    "exp": {"type": "rmsprop", "lr": 1e-3, "schedule": "exp", "step": 4, "gamma": 0.95},
    "constant": {"type": "adam", "lr": 1e-4, "betas": [0.9, 0.99], "schedule": "constant"},
}


def _formula(spec: dict, i: int) -> float:
    """The learning rates the Trainer set by hand before the LambdaLR schedules (bit for bit)."""
    if spec["schedule"] == "step":
        return step_lr(spec["lr"], i, spec["step"], spec["gamma"])
    if spec["schedule"] == "exp":
        return spec["lr"] * float(spec["gamma"]) ** (i / float(spec["step"]))
    if spec["schedule"] == "poly":
        return poly_lr(spec["lr"], i, TOTAL, spec["power"])
    return spec["lr"]


def _optimizers() -> Optimizers:
    params = {name: [nn.Parameter(torch.ones(2))] for name in SPECS}
    return Optimizers(params, SPECS, TOTAL)


@pytest.mark.parametrize("resume_at", [0, 3, 7])
def test_schedules_give_the_formulas_learning_rates_also_after_resume(resume_at):
    opts = _optimizers()
    for i in range(TOTAL):
        if i == resume_at and i > 0:  # a resumed run: saved optimizer states, schedules rebuilt at i
            states = opts.state_dict()
            opts = _optimizers()
            opts.load_state_dict(states, i)
        for name, spec in SPECS.items():
            assert opts.lr(name) == _formula(spec, i), (name, i)
        for opt in opts.by_name.values():
            opt.step()
        opts.step_schedules()


class _TwoOptimizers(Method):
    """A method with two optimizers whose losses record the order they are backpropagated in."""

    name = "_two"

    def __init__(self):
        super().__init__({"network": {"n_filters": 2}, "iterations": 10})
        self.other = nn.Linear(1, 1)
        self.events: list = []

    def optimizer_groups(self):
        return {"model": list(self.model.parameters()), "other": list(self.other.parameters())}

    def training_step(self, batch, iteration):
        a = sum(p.sum() for p in self.model.parameters()) * 0.0 + self.other.weight.sum()
        b = self.other.weight.sum() * 2.0
        a.register_hook(lambda g: self.events.append("model backward"))
        b.register_hook(lambda g: self.events.append("other backward"))
        return StepOutput((OptimizerStep("other", b), OptimizerStep("model", a)), {"loss": 0.0})

    def after_step(self, iteration):
        self.events.append(("after_step", iteration))


def test_train_step_follows_the_methods_order_and_zeroes_between_steps():
    m = _TwoOptimizers()
    opts = {k: torch.optim.SGD(p, lr=0.1) for k, p in m.optimizer_groups().items()}
    for name, opt in opts.items():
        opt.register_step_post_hook(lambda o, args, kwargs, name=name: m.events.append(f"{name} step"))
    w0 = m.other.weight.detach().clone()
    out = train_step(m, opts, {}, iteration=4)
    assert out.optimizers == ("other", "model")
    assert m.events == ["other backward", "other step", "model backward", "model step", ("after_step", 5)]
    # 'other' stepped on its own loss only (gradient 2); the model's loss, backpropagated after that
    # step, adds to its gradient (2 + 1) without moving it: its next zero_grad drops that.
    assert torch.allclose(m.other.weight.detach(), w0 - 0.1 * 2.0)
    assert torch.allclose(m.other.weight.grad, torch.full_like(w0, 3.0))


def test_step_output_names_its_losses():
    out = StepOutput((OptimizerStep("model", torch.tensor(1.0)),), {})
    assert out.loss("model").item() == 1.0 and out.optimizers == ("model",)
    with pytest.raises(KeyError, match="discriminator"):
        out.loss("discriminator")
