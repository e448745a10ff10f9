"""What the training loop does around each step, as objects with hooks: logging, validation, stochastic
weight averaging, stop requests, resume checkpoints, the ranks' agreement check.

The Trainer calls, in list order, ``on_resume`` with the resume checkpoint (a resumed run),
``on_train_start`` before the first step, ``on_step_end`` after every step (``TrainState.iteration``
then counts the completed steps), ``on_out_of_memory`` when a step ran out of GPU memory,
``on_train_end`` when the loop ends without an error (also after a stop), and ``close`` always.
Only rank 0 writes files.
"""

from __future__ import annotations

import copy
import math
import os
import signal
import threading
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.optim.swa_utils import AveragedModel, update_bn

from ..data import Case, CropDataset
from ..distributed import DistContext
from ..errors import InputError
from ..jsonout import dumps as json_dumps
from ..methods import Method
from ..progress import progress_bar
from .optim import Optimizers
from .run_files import RunFiles
from .validation import validate


@dataclass
class TrainState:
    """The loop's state. iteration: completed steps; start: the iteration this call began at; history:
    {"best": {"dice", "iteration", "per_case"} | None, "validations": [records]} (saved in ``last.pt``);
    logs / lr: the last step's scalars and the model optimizer's learning rate in it; data_s / step_s:
    seconds waited for batches / spent in steps by this call; stop: end after this step."""

    method: Method
    optimizers: Optimizers
    total: int
    start: int
    history: dict
    iteration: int = 0
    logs: dict[str, float] = field(default_factory=dict)
    lr: float = math.nan
    data_s: float = 0.0
    step_s: float = 0.0
    stop: bool = False


class Callback:
    """Hooks of the training loop; each does nothing by default."""

    def on_resume(self, checkpoint: dict) -> None:
        """Restore this callback's state from ``last.pt`` (before ``on_train_start``)."""

    def on_train_start(self, state: TrainState) -> None:
        pass

    def on_out_of_memory(self, state: TrainState) -> None:
        """The step after ``state.iteration`` ran out of GPU memory; the run ends with an error."""

    def on_step_end(self, state: TrainState) -> None:
        pass

    def on_train_end(self, state: TrainState) -> None:
        pass

    def close(self) -> None:
        """Release what the callback holds (files, signal handlers); called also after an error."""


class TrainingLog(Callback):
    """``log.jsonl`` (one JSON line per logged iteration, validation and end-of-run record) and the
    progress bar; on ranks other than 0 neither is written."""

    def __init__(self, path: Path, config: dict, start: int, is_main: bool, progress: bool):
        self.every = int(config["log_every"])
        self.file = open(path, "a") if is_main else open(os.devnull, "w")
        self.bar = progress_bar(
            total=int(config["iterations"]),
            initial=start,
            desc=f"train {config['method']}",
            disable=not (progress and is_main),
            dynamic_ncols=True,
        )

    def record(self, rec: dict) -> None:
        self.file.write(json_dumps(rec) + "\n")
        self.file.flush()

    def message(self, text: str) -> None:
        self.bar.write(text)

    def on_step_end(self, state: TrainState) -> None:
        self.bar.update(1)
        it = state.iteration
        if it % self.every == 0 or it == state.total:
            steps = max(1, it - state.start)
            self.record(
                {
                    "iteration": it,
                    "lr": state.lr,
                    **state.logs,
                    "data_s": state.data_s / steps,
                    "step_s": state.step_s / steps,
                }
            )
            self.bar.set_postfix(loss=f"{state.logs.get('loss', float('nan')):.3f}")

    def close(self) -> None:
        self.bar.close()
        self.file.close()


class Validation(Callback):
    """Every ``validation.every`` iterations and at the end (rank 0): Dice on the validation cases; the
    best so far becomes ``best.pt`` and is kept in memory (``best_payload``) for ``model.pt``."""

    def __init__(self, config: dict, cases: list[Case], files: RunFiles, log: TrainingLog, device, is_main: bool):
        self.every = int(config["validation"].get("every", 0))
        self.overlap = config["validation"].get("overlap", 0.5)
        self.patch = tuple(config.get("inference_patch_size") or config["patch_size"])
        self.num_classes = int(config["network"]["num_classes"])
        self.cases = cases
        self.files = files
        self.log = log
        self.device = device
        self.is_main = is_main
        self.active = is_main and bool(cases) and self.every > 0
        self.best_payload: dict | None = None

    def on_resume(self, checkpoint: dict) -> None:
        if self.is_main and checkpoint["history"]["best"] is not None:  # an earlier slice validated
            self.best_payload = self.files.read_best()

    def on_step_end(self, state: TrainState) -> None:
        it = state.iteration
        if not (self.active and (it % self.every == 0 or it == state.total)):
            return
        res = validate(state.method.model, self.cases, self.patch, self.num_classes, self.device, self.overlap)
        state.method.train()
        rec = {"iteration": it, "val_dice": res["dice"]}
        state.history["validations"].append(rec)
        self.log.record(rec)
        self.log.message(f"iteration {it}: validation Dice {res['dice']:.4f}")
        best = state.history["best"]
        if best is None or res["dice"] > best["dice"]:
            state.history["best"] = {"dice": res["dice"], "iteration": it, "per_case": res["per_case"]}
            self.best_payload = self.files.model_payload(state.method, it, state.history["best"])
            self.files.save("best.pt", self.best_payload)


class WeightAveraging(Callback):
    """Stochastic weight averaging (Izmailov et al., UAI 2018) of the inference network: the equal-weight
    mean of its parameters after iterations S + E, S + 2E, ... (``AveragedModel``); at the end (rank 0,
    not after a stop) BatchNorm statistics for the averaged weights over B training batches
    (``update_bn``, train mode as in torch's recipe), validation, and ``swa.pt`` (``final_payload``).
    Config ``swa``: {"start": S, "every": E, "bn_batches": B}."""

    def __init__(
        self,
        config: dict,
        method: Method,
        dataset: CropDataset,
        files: RunFiles,
        log: TrainingLog,
        validation: list[Case],
        device,
        is_main: bool,
    ):
        """dataset: the training crops (their cases feed the BatchNorm pass)."""
        spec = config["swa"]
        self.start, self.every = int(spec["start"]), int(spec["every"])  # checked by config_check
        self.bn_batches = int(spec.get("bn_batches", 50))
        self.config = config
        self.averaged = AveragedModel(method.model, use_buffers=False)
        self.files = files
        self.log = log
        self.validation = validation
        self.device = device
        self.is_main = is_main
        self.dataset = dataset
        self.final_payload: dict | None = None

    def on_resume(self, checkpoint: dict) -> None:
        if "swa_state" in checkpoint:
            self.averaged.load_state_dict(checkpoint["swa_state"])

    def on_step_end(self, state: TrainState) -> None:
        it = state.iteration
        if it > self.start and (it - self.start) % self.every == 0:
            self.averaged.update_parameters(state.method.model)

    def _bn_batches(self):
        """``bn_batches`` batches of ``batch_size`` augmented training crops (images only, seeded)."""
        cfg, ds = self.config, self.dataset
        bs = int(cfg["batch_size"])
        rng = np.random.default_rng(int(cfg["seed"]) + 1)
        seeds = rng.integers(0, 2**31 - 1, size=(self.bn_batches, bs))
        rows = rng.integers(0, len(ds.cases), size=(self.bn_batches, bs))
        crops = CropDataset(
            ds.cases, ds.crop_size, ds.num_classes, augment=True, with_sdm=False, intensity=ds.intensity
        )
        for b in range(self.bn_batches):
            yield torch.stack([crops[(int(r), int(s))]["image"] for r, s in zip(rows[b], seeds[b])]).to(self.device)

    def on_train_end(self, state: TrainState) -> None:
        if not self.is_main or state.stop or int(self.averaged.n_averaged) == 0:
            return
        cfg, it = self.config, state.iteration
        net = self.averaged.module
        update_bn(self._bn_batches(), net)  # leaves the network in train mode
        net.eval()
        rec = {"iteration": it, "swa_n_averaged": int(self.averaged.n_averaged)}
        val_record = None
        if self.validation:
            res = validate(
                net,
                self.validation,
                tuple(cfg.get("inference_patch_size") or cfg["patch_size"]),
                int(cfg["network"]["num_classes"]),
                self.device,
                cfg["validation"].get("overlap", 0.5),
            )
            rec.update(swa_val_dice=res["dice"])
            val_record = {"dice": res["dice"], "iteration": it, "per_case": res["per_case"]}
        payload = self.files.model_payload(state.method, it, val_record, model=net)
        payload["swa"] = {
            "start": self.start,
            "every": self.every,
            "n_averaged": rec["swa_n_averaged"],
            "bn_batches": self.bn_batches,
        }
        self.files.save("swa.pt", payload)
        self.log.record(rec)
        self.final_payload = payload


class StopRequests(Callback):
    """Stop at the end of the current step on SIGINT / SIGTERM / SIGBREAK (what CTRL_BREAK_EVENT, the
    Slicer module's stop request on Windows, raises there), or after ``stop_after`` steps of this call."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM) + ((signal.SIGBREAK,) if hasattr(signal, "SIGBREAK") else ())

    def __init__(self, stop_after: int | None):
        self.stop_after = stop_after
        self.signalled = False
        self.previous: dict = {}

    def _handler(self, signum, frame) -> None:
        self.signalled = True

    def install(self) -> None:
        """Take over the signals (the Trainer does so before its set-up); a no-op off the main thread."""
        if threading.current_thread() is threading.main_thread():  # signal handlers only there
            self.previous = {s: signal.signal(s, self._handler) for s in self.SIGNALS}

    def on_step_end(self, state: TrainState) -> None:
        it = state.iteration
        sliced = self.stop_after is not None and it - state.start >= int(self.stop_after) and it < state.total
        state.stop = state.stop or self.signalled or sliced

    def close(self) -> None:
        for s, h in self.previous.items():
            signal.signal(s, h)
        self.previous = {}


class ResumeCheckpoints(Callback):
    """``last.pt`` every ``checkpoint_every`` steps, at the end, on a stop and after an out-of-memory step
    (of the last completed iteration; rank 0)."""

    def __init__(self, config: dict, files: RunFiles, swa: WeightAveraging | None, is_main: bool):
        self.every = int(config["checkpoint_every"])
        self.files = files
        self.swa = swa
        self.is_main = is_main

    def save(self, state: TrainState) -> None:
        swa_state = self.swa.averaged.state_dict() if self.swa is not None else None
        self.files.save_resume(state.method, state.optimizers, state.iteration, state.history, swa_state)

    def on_step_end(self, state: TrainState) -> None:
        it = state.iteration
        if self.is_main and (it % self.every == 0 or it == state.total or state.stop):
            self.save(state)

    def on_out_of_memory(self, state: TrainState) -> None:
        if self.is_main and state.iteration > 0:
            self.save(state)


class FinalModel(Callback):
    """``model.pt`` at the end (rank 0), from memory: the SWA average when configured; with
    ``init_average`` = (lam, start state dict, start model id), the average (1 - lam) * start + lam *
    last weights;
    else the best validated weights, else the last ones."""

    def __init__(
        self,
        files: RunFiles,
        swa: WeightAveraging | None,
        validation: Validation,
        is_main: bool,
        init_average: tuple[float, dict, str | None] | None = None,
    ):
        self.files = files
        self.swa = swa
        self.validation = validation
        self.is_main = is_main
        self.init_average = init_average

    def on_train_end(self, state: TrainState) -> None:
        if not self.is_main:
            return
        if self.init_average is not None:
            lam, start, start_id = self.init_average
            net = averaged_with(state.method.model, start, lam)
            payload = self.files.model_payload(state.method, state.iteration, None, model=net)
            payload["averaged_with_init"] = {"lam": lam, "init_model_id": start_id}
        else:
            payload = (self.swa and self.swa.final_payload) or self.validation.best_payload
        self.files.save("model.pt", payload or self.files.model_payload(state.method, state.iteration, None))


def averaged_with(model: torch.nn.Module, start: dict[str, torch.Tensor], lam: float) -> torch.nn.Module:
    """A copy of ``model`` whose float state (weights, biases, batch-norm statistics) is
    (1 - lam) * ``start`` + lam * its own; integer state (batch counts) is its own.

    Fine-tuning then keeps part of what the start knew (WiSE-FT, Wortsman et al., CVPR 2022: the
    weights of a fine-tune and of its start lie in one basin, so their average is a model, and on
    shifted data often better than either): measured in ``benchmarks/correction_loop.py``."""
    out = copy.deepcopy(model)
    own = model.state_dict()
    missing = sorted(set(own) - set(start))
    if missing:
        raise InputError(f"cannot average with the start weights: they have no '{missing[0]}'")
    out.load_state_dict(
        {
            k: ((1.0 - lam) * start[k].to(v.device, v.dtype) + lam * v) if v.is_floating_point() else v
            for k, v in own.items()
        }
    )
    return out


class RankAgreement(Callback):
    """After a distributed run that finished (a collective: every rank got there): the largest parameter
    difference from rank 0, logged, with a warning when it is not 0."""

    def __init__(self, dist: DistContext, log: TrainingLog):
        self.dist = dist
        self.log = log

    def on_train_end(self, state: TrainState) -> None:
        if not self.dist.enabled or state.stop:
            return
        divergence = self.dist.parameter_divergence(state.method)
        if self.dist.is_main:
            self.log.record({"iteration": state.iteration, "rank_parameter_divergence": divergence})
            if divergence > 0:
                warnings.warn(
                    f"parameters differ across the {self.dist.world_size} ranks by up to {divergence:.3g} "
                    "after training; rank 0's copy is the one saved"
                )
