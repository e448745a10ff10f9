"""The Trainer: one loop for every method, over parts with one job each (``data``, ``optim``, ``step``,
``callbacks``, ``run_files``, ``oom``)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import torch

from ..config_check import validate_config
from ..distributed import DistContext
from ..errors import InputError
from ..inference import resolve_device
from ..locking import folder_lock
from ..methods import Method, get_method
from .callbacks import (
    Callback,
    FinalModel,
    RankAgreement,
    ResumeCheckpoints,
    StopRequests,
    TrainingLog,
    TrainState,
    Validation,
    WeightAveraging,
)
from .config import DEFAULTS, merge_config
from .data import Batches, TrainingData, make_batches, to_device
from .oom import largest_fitting_batch, out_of_memory_message
from .optim import Optimizers
from .precision import resolve_precision
from .run_files import RunFiles, load_init_weights, read_init, read_resume
from .step import train_step


class Trainer:
    """Trains ``config``'s method into ``out_dir``; owns devices, data, optimizers and files."""

    def __init__(self, config: dict, out_dir: str | os.PathLike, device: str = "auto", progress: bool = True):
        self.config = merge_config(DEFAULTS, config)
        self.out = Path(out_dir)
        self.device = resolve_device(device)
        # "auto" resolved here, so config.json and every checkpoint name the arithmetic the run used
        self.config["precision"] = resolve_precision(str(self.config.get("precision", "auto")), self.device)
        self.progress = progress
        self.dist = DistContext()  # joined in ``run`` when torchrun started several processes

    def run(self, resume: bool = False, stop_after: int | None = None) -> dict:
        """Train (or, with ``resume``, continue from ``last.pt``) to ``iterations``.

        stop_after: stop, saving ``last.pt`` as on SIGINT, after this many iterations of this call
        (time-sliced training: a later ``resume`` continues exactly where it stopped).
        The output folder is locked for the run (``locking.folder_lock``): a second training into
        it refuses while this one is alive.
        Started by ``torchrun`` with several processes, each rank trains on its shard of the batch
        and gradients are averaged (``distributed``); only rank 0 locks, logs and saves.
        -> {"iterations", "stopped_early", "best" (validation record or None), "out"}.
        """
        validate_config(self.config)  # before any file is read or written
        if stop_after is not None and int(stop_after) < 1:
            raise InputError(f"stop_after must be >= 1, got {stop_after}")
        self.dist = DistContext.from_env(self.device.type)
        if self.dist.enabled and self.device.type == "cuda":
            self.device = torch.device("cuda", self.dist.local_rank)
            torch.cuda.set_device(self.device)
        try:
            if not self.dist.is_main:
                return self.fit(resume, stop_after)
            with folder_lock(self.out):
                return self.fit(resume, stop_after)
        finally:
            self.dist.barrier()
            self.dist.close()

    def fit(self, resume: bool, stop_after: int | None) -> dict:
        """The training run (``run`` checks the config, joins the ranks and locks the folder first): set-up,
        the loop over ``step.train_step`` with the callbacks' hooks, the end-of-run files."""
        cfg = self.config
        # from here on SIGINT/SIGTERM is a stop request (saved as last.pt after the next step), not a kill:
        # a stop that comes during set-up, once log.jsonl exists, would otherwise lose the run folder's state
        stop = StopRequests(stop_after)
        stop.install()
        try:
            self.out.mkdir(parents=True, exist_ok=True)
            torch.manual_seed(int(cfg["seed"]))
            np.random.seed(int(cfg["seed"]) % 2**32)
            ck = read_resume(self.out, resume, cfg)  # checked before the data are loaded
            init = read_init(cfg)
            data = TrainingData.load(cfg, self.progress)
            files = RunFiles(self.out, cfg, data.summary())
            method = self._build_method(init)
            init_average = None
            if cfg.get("average_with_init") is not None:  # the start weights, before any step
                start_weights = {k: v.detach().to("cpu", copy=True) for k, v in method.model.state_dict().items()}
                init_average = (float(cfg["average_with_init"]), start_weights, init.get("model_id"))
            optimizers = Optimizers(method.optimizer_groups(), cfg["optim"], int(cfg["iterations"]))
            start = int(ck["iteration"]) if ck is not None else 0
            history = {"best": None, "validations": []}
            state = TrainState(method, optimizers, int(cfg["iterations"]), start, history, start)
            batches = make_batches(data, cfg, method.uses_unlabeled, start, self.dist, self.device)
            callbacks = self._callbacks(state, data, batches, files, stop, init_average)
            if ck is not None:
                self._restore(ck, state, callbacks)
            if self.dist.enabled:  # identical weights on every rank, different dropout masks
                torch.manual_seed(int(cfg["seed"]) + 1000003 * self.dist.rank + start)
            if self.dist.is_main:
                files.write_config()
            try:
                for cb in callbacks:
                    cb.on_train_start(state)
                self._loop(state, batches, callbacks)
                for cb in callbacks:
                    cb.on_train_end(state)
            finally:
                for cb in callbacks:
                    cb.close()
        finally:
            stop.close()
        return {
            "iterations": state.iteration,
            "stopped_early": state.stop,
            "best": state.history["best"],
            "out": str(self.out),
        }

    def _loop(self, state: TrainState, batches: Batches, callbacks: list[Callback]) -> None:
        """Steps until the sampler's last batch or a stop; times the data wait and the steps."""
        state.method.train()
        t_last = time.perf_counter()
        for batch in batches.loader:
            t0 = time.perf_counter()
            state.data_s += t0 - t_last
            batch = to_device(batch, self.device, batches.labeled_per_batch)
            state.lr = state.optimizers.lr("model")
            try:
                state.logs = train_step(
                    state.method, state.optimizers.by_name, batch, state.iteration, self.dist, self.config["precision"]
                ).logs
            except torch.cuda.OutOfMemoryError:
                raise RuntimeError(self._out_of_memory(state, batch, callbacks)) from None
            state.optimizers.step_schedules()
            state.iteration += 1
            t_last = time.perf_counter()
            state.step_s += t_last - t0
            for cb in callbacks:
                cb.on_step_end(state)
            if state.stop:
                break

    def _callbacks(
        self,
        state: TrainState,
        data: TrainingData,
        batches: Batches,
        files: RunFiles,
        stop: StopRequests,
        init_average: tuple[float, dict, str | None] | None = None,
    ) -> list[Callback]:
        """The loop's callbacks in hook order: rank check, SWA, log, validation, stop, last.pt, model.pt."""
        cfg, main, device = self.config, self.dist.is_main, self.device
        log = TrainingLog(self.out / "log.jsonl", cfg, state.start, main, self.progress)
        swa = None
        if cfg.get("swa"):
            swa = WeightAveraging(cfg, state.method, batches.dataset, files, log, data.validation, device, main)
        validation = Validation(cfg, data.validation, files, log, device, main)
        return [
            RankAgreement(self.dist, log),
            *([swa] if swa else []),
            log,
            validation,
            stop,
            ResumeCheckpoints(cfg, files, swa, main),
            FinalModel(files, swa, validation, main, init_average),
        ]

    def _build_method(self, init: dict | None) -> Method:
        """The config's method on the device (from the ``init`` checkpoint's weights), the same on every rank."""
        method = get_method(self.config["method"])(self.config).to(self.device)
        if init is not None:  # fine-tuning: start from a model checkpoint's weights
            load_init_weights(method, init, self.config)
        self.dist.broadcast_parameters(method)
        return method

    @staticmethod
    def _restore(ck: dict, state: TrainState, callbacks: list[Callback]) -> None:
        """Continue from the resume checkpoint ``ck``: networks, optimizers and schedules, RNG, history, callbacks."""
        state.method.load_state_dict(ck["method_state"])
        state.optimizers.load_state_dict(ck["optimizers"], state.start)
        torch.set_rng_state(ck["torch_rng"])
        state.history = ck["history"]
        for cb in callbacks:
            cb.on_resume(ck)

    def _out_of_memory(self, state: TrainState, batch: dict, callbacks: list[Callback]) -> str:
        """After an out-of-memory step: find, by halving, the largest batch whose step fits, let the callbacks
        save ``last.pt`` (of the last completed iteration); the message names both."""
        fits = largest_fitting_batch(
            state.method, state.optimizers.by_name, batch, state.iteration, self.device, self.config["precision"]
        )
        for cb in callbacks:
            cb.on_out_of_memory(state)
        return out_of_memory_message(self.config, batch, state.iteration, fits, saved=state.iteration > 0)
