"""The Trainer: one loop for every method (device, data, optimizers, validation, checkpoints, resume).

Config (a dict, usually a JSON file in ``configs/``; every default states its source):
    data:        folder, .list file, or list of either (cases; labeled where a label exists)
    labeled:     how many labeled cases to use as labeled (the first N by listing order); others unlabeled
    pseudo_labels: optional folder / .list (or list of them) of pseudo-labeled cases
                 (``pseudo_labels.py``): trained on as labeled; their namesakes leave the unlabeled set
    validation:  {"cases": [names]}, {"list": path of a .list file} or {"last": N} (held out of
                 training), "every": iterations
    inference_patch_size: sliding-window size for validation and in the exported model (default
                 patch_size; a cine model trained on 128 x 128 crops can infer on whole 192 x 192 slices)
    method, method_params, arch, network: see methods/ and networks/
    preprocessing: {"spacing": [mm, mm, mm]}; patch_size: [X, Y, Z] voxels (divisible by 16)
    batch_size, labeled_per_batch, iterations, seed, num_workers
    optim: {"model": {...}, "discriminator": {...}} with type sgd|adam|rmsprop, lr, momentum, weight_decay,
           betas, schedule step|poly|exp|constant, step (iterations), gamma
    swa:         optional {"start": S, "every": E, "bn_batches": B}: stochastic weight averaging
                 (Izmailov et al., UAI 2018) of the inference network - the equal-weight mean of its
                 parameters after iterations S + E, S + 2E, ... (``torch.optim.swa_utils.AveragedModel``);
                 at the end BatchNorm statistics are recomputed for the averaged weights over B
                 training batches (``update_bn``, train mode as in torch's recipe), and the averaged
                 network becomes ``swa.pt`` and ``model.pt``.
Checked before any work (``config_check``): every value of the config (unknown keys, methods,
optimizers, ranges, patch sizes divisible by the network's downsampling factor); with ``resume``,
that the config equals the run's saved one except ``config_check.RESUME_MAY_CHANGE`` (the differing
keys are listed); with ``init``, that the checkpoint's architecture is the config's (the differing
fields are listed).
Outputs in ``out``: ``last.pt`` (resume), ``best.pt`` / ``model.pt`` (model checkpoints; ``swa.pt``
with ``swa``), ``log.jsonl`` (one JSON line per logged iteration and per validation), ``config.json``.
"""

from __future__ import annotations

import json
import os
import signal
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from .atomic import atomic_write_text
from .checkpoint import load_checkpoint, model_id, now_iso, save_checkpoint, state_dict_for_export
from .config_check import architecture_differences, config_differences, validate_config
from .data import CropDataset, TwoStreamBatchSampler, find_cases, load_case
from .data.transforms import AUGMENT_PLANE
from .distributed import DistContext
from .errors import InputError
from .inference import keep_largest_per_class, resolve_device, sliding_window_predict
from .jsonout import dumps as json_dumps
from .locking import folder_lock
from .methods import get_method
from .preprocessing import Preprocessing
from .schedules import poly_lr, step_lr

DEFAULTS = {
    "method": "supervised",
    "arch": "vnet",
    "network": {"in_channels": 1, "num_classes": 2, "n_filters": 16, "normalization": "batch", "dropout": 0.5},
    "labels": {"1": "left atrium"},
    "preprocessing": {"spacing": [0.625, 0.625, 0.625], "normalization": "zscore"},
    "patch_size": [112, 112, 80],  # papers (UA-MT, SASSNet, DTC)
    "batch_size": 4,
    "labeled_per_batch": 2,  # papers
    "iterations": 6000,  # papers
    "labeled": 16,
    "seed": 1337,
    "num_workers": 2,
    "validation": {"last": 0, "every": 500, "overlap": 0.5},
    "log_every": 10,
    "checkpoint_every": 100,
    "export_dtype": "float32",
    "optim": {
        "model": {"type": "sgd", "lr": 0.01, "momentum": 0.9, "weight_decay": 1e-4, "schedule": "step", "step": 2500},
        "discriminator": {"type": "adam", "lr": 1e-4, "betas": [0.9, 0.99], "schedule": "constant"},
    },
}


def merge_config(base: dict, override: dict) -> dict:
    """Recursive dict merge (override wins)."""
    out = dict(base)
    for k, v in override.items():
        out[k] = merge_config(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _make_optimizer(params, spec: dict) -> torch.optim.Optimizer:
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


def _lr_at(spec: dict, iteration: int, total: int) -> float:
    sched = spec.get("schedule", "constant")
    if sched == "step":
        return step_lr(spec["lr"], iteration, int(spec.get("step", 2500)), spec.get("gamma", 0.1))
    if sched == "exp":  # x gamma every ``step`` iterations, applied smoothly (MTN: x0.95 per epoch)
        return spec["lr"] * float(spec.get("gamma", 0.95)) ** (iteration / float(spec.get("step", 100)))
    if sched == "poly":
        return poly_lr(spec["lr"], iteration, total, spec.get("power", 0.9))
    return spec["lr"]


def split_cases(cases: list, config: dict, pseudo: list | None = None) -> tuple[list, list, list]:
    """-> (labeled, unlabeled, validation) CaseFiles following config['labeled'] and ['validation'].

    pseudo: pseudo-labeled cases (config ``pseudo_labels``, made by ``pseudo_labels.pseudo_label_cases``):
    appended to the labeled cases, and the cases of the same names leave the unlabeled ones (the
    same image is not used twice); one named like a validation or a truly labeled case is refused.
    """
    val_cfg = config.get("validation", {})
    names = [c.name for c in cases]
    if val_cfg.get("list"):  # a .list file naming the validation cases (e.g. ACDC's val.list)
        val_cfg = {
            **val_cfg,
            "cases": [ln.strip() for ln in Path(val_cfg["list"]).read_text().splitlines() if ln.strip()],
        }
    if val_cfg.get("cases"):
        missing = sorted(set(val_cfg["cases"]) - set(names))
        if missing:
            raise InputError(f"validation cases not found: {', '.join(missing[:5])}")
        val = [c for c in cases if c.name in set(val_cfg["cases"])]
    else:
        n_last = int(val_cfg.get("last", 0))
        val = cases[len(cases) - n_last :] if n_last > 0 else []
    val_names = {c.name for c in val}
    if any(c.label is None for c in val):
        raise InputError("every validation case needs a label")
    rest = [c for c in cases if c.name not in val_names]
    with_label = [c for c in rest if c.label is not None]
    n_lab = int(config["labeled"]) if config.get("labeled") is not None else len(with_label)
    if n_lab > len(with_label):
        raise InputError(f"asked for {n_lab} labeled cases but only {len(with_label)} training cases have labels")
    if n_lab < 1:
        raise InputError("training needs at least one labeled case (found none with a label)")
    labeled = with_label[:n_lab]
    lab_names = {c.name for c in labeled}
    unlabeled = [c for c in rest if c.name not in lab_names]
    if pseudo:
        unlabeled_pseudo = [c.name for c in pseudo if c.label is None]
        if unlabeled_pseudo:
            raise InputError(f"pseudo-labeled case '{unlabeled_pseudo[0]}' has no label")
        clash = sorted({c.name for c in pseudo} & (val_names | lab_names))
        if clash:
            raise InputError(f"pseudo-labeled case '{clash[0]}' is also a validation or labeled case")
        pseudo_names = {c.name for c in pseudo}
        labeled = labeled + list(pseudo)
        unlabeled = [c for c in unlabeled if c.name not in pseudo_names]
    return labeled, unlabeled, val


def validate(model: torch.nn.Module, cases: list, patch_size, num_classes: int, device, overlap: float = 0.5) -> dict:
    """Mean foreground Dice over validation cases, in model space, after LCC cleanup."""
    from .metrics import dice

    per_case = {}
    for case in cases:
        out = sliding_window_predict(
            model, case.image, patch_size, overlap=overlap, mc_samples=1, window_batch=2, device=device
        )
        pred = keep_largest_per_class(np.argmax(out.probs, 0).astype(np.uint8), num_classes)
        per_case[case.name] = float(np.mean([dice(pred == c, case.label == c) for c in range(1, num_classes)]))
    return {"dice": float(np.mean(list(per_case.values()))) if per_case else float("nan"), "per_case": per_case}


class Trainer:
    """Runs a method's training_step in a loop; owns devices, data, optimizers and files."""

    def __init__(
        self,
        config: dict,
        out_dir: str | os.PathLike,
        device: str = "auto",
        progress: bool = True,
        preloaded: dict | None = None,
    ):
        self.config = merge_config(DEFAULTS, config)
        self.out = Path(out_dir)
        self.device = resolve_device(device)
        self.progress = progress
        self._stop = False
        self._preloaded = preloaded
        self._pseudo_names: list[str] = []  # labeled cases whose labels are a teacher's (config pseudo_labels)

    # ----------------------------------------------------------------- data
    def _load_data(self):
        cfg = self.config
        if self._preloaded is not None:
            return self._preloaded["labeled"], self._preloaded["unlabeled"], self._preloaded["val"]
        sources = cfg["data"] if isinstance(cfg["data"], list) else [cfg["data"]]
        cases = [c for s in sources for c in find_cases(s)]
        pseudo_src = cfg.get("pseudo_labels") or []
        pseudo = [c for s in (pseudo_src if isinstance(pseudo_src, list) else [pseudo_src]) for c in find_cases(s)]
        self._pseudo_names = [c.name for c in pseudo]
        lab, unl, val = split_cases(cases, cfg, pseudo)
        if get_method(cfg["method"]).uses_unlabeled and not unl:
            raise InputError(
                f"method {cfg['method']} learns from unlabeled images, but none is left: {len(cases)} cases, "
                f"{len(lab)} used as labeled, {len(val)} for validation; use --method supervised, a "
                "smaller --labeled or more cases"
            )
        prep = Preprocessing.from_dict(cfg["preprocessing"])
        k = int(cfg["network"]["num_classes"])
        from .progress import progress_bar

        it = progress_bar(lab + unl + val, desc="loading cases", disable=not self.progress, leave=False)
        loaded = {c.name: load_case(c, prep, k) for c in it}
        strip = lambda c: type(loaded[c.name])(c.name, loaded[c.name].image, None)  # noqa: E731
        return [loaded[c.name] for c in lab], [strip(c) for c in unl], [loaded[c.name] for c in val]

    # ----------------------------------------------------------------- checkpoints
    def _model_payload(
        self, method, iteration: int, validation: dict | None, model: torch.nn.Module | None = None
    ) -> dict:
        """model: the network to export (default ``method.model``; the SWA average at the end)."""
        cfg = self.config
        sd = state_dict_for_export(model if model is not None else method.model, cfg.get("export_dtype", "float32"))
        return {
            "kind": "model",
            "arch": method.arch,
            "network": method.network_params,
            "state_dict": sd,
            "preprocessing": cfg["preprocessing"],
            "patch_size": list(cfg.get("inference_patch_size") or cfg["patch_size"]),
            "labels": {str(k): v for k, v in cfg["labels"].items()},
            "method": method.name,
            "method_params": method.config,
            "iteration": iteration,
            "training_data": self.data_summary,
            "validation": validation or {},
            # Training augments with rot90/flips in AUGMENT_PLANE of model space (CropDataset), so
            # flips of those axes are test-time augmentations the network is trained to respect.
            "inference": {"tta_flip_axes": list(AUGMENT_PLANE)},
            "model_id": model_id(sd),
            "created": now_iso(),
        }

    def _save_resume(self, method, optimizers, iteration: int, history: dict) -> None:
        payload = self._model_payload(method, iteration, history.get("best"))
        payload.update(
            kind="resume",
            method_state=method.state_dict(),
            optimizers={k: o.state_dict() for k, o in optimizers.items()},
            torch_rng=torch.get_rng_state(),
            history=history,
            config=json.dumps(self.config),
        )
        if self.swa_model is not None:
            payload["swa_state"] = self.swa_model.state_dict()
        save_checkpoint(self.out / "last.pt", payload)

    def _check_resume(self, ck: dict) -> None:
        """Refuse to resume ``last.pt`` with a config other than the one it was trained with."""
        last = self.out / "last.pt"
        for key in ("method_state", "optimizers", "torch_rng", "history", "iteration"):
            if key not in ck:
                raise InputError(f"{last}: not a resume checkpoint (no '{key}')")
        saved = ck.get("config")
        if saved is None:
            return
        try:
            saved = json.loads(saved) if isinstance(saved, str) else dict(saved)
        except (ValueError, TypeError) as exc:
            raise InputError(f"{last}: its saved config cannot be read ({exc})") from None
        diffs = config_differences(saved, json.loads(json.dumps(self.config)))
        if diffs:
            shown = "; ".join(diffs[:8]) + (f"; and {len(diffs) - 8} more" if len(diffs) > 8 else "")
            raise InputError(
                f"{last}: --resume with a config that differs from the run's (saved -> now): {shown}; "
                "resume with the run's config, or train into another --out"
            )

    def _finish_swa(self, method, dataset, iteration: int, val: list) -> dict:
        """BatchNorm statistics for the averaged weights, validation, ``swa.pt``; -> its validation record."""
        from torch.optim.swa_utils import update_bn

        cfg, spec = self.config, self.config["swa"]
        n_batches = int(spec.get("bn_batches", 50))
        bs = int(cfg["batch_size"])
        rng = np.random.default_rng(int(cfg["seed"]) + 1)
        seeds = rng.integers(0, 2**31 - 1, size=(n_batches, bs))
        rows = rng.integers(0, len(dataset.cases), size=(n_batches, bs))
        crops = CropDataset(dataset.cases, dataset.crop_size, dataset.num_classes, augment=True, with_sdm=False)

        def batches():
            for b in range(n_batches):
                yield torch.stack([crops[(int(r), int(s))]["image"] for r, s in zip(rows[b], seeds[b])]).to(self.device)

        net = self.swa_model.module
        update_bn(batches(), net)  # leaves the network in train mode
        net.eval()
        k = int(cfg["network"]["num_classes"])
        rec = {"iteration": iteration, "swa_n_averaged": int(self.swa_model.n_averaged)}
        if val:
            res = validate(
                net,
                val,
                tuple(cfg.get("inference_patch_size") or cfg["patch_size"]),
                k,
                self.device,
                cfg["validation"].get("overlap", 0.5),
            )
            rec.update(swa_val_dice=res["dice"], per_case=res["per_case"])
        payload = self._model_payload(
            method,
            iteration,
            {"dice": rec.get("swa_val_dice"), "iteration": iteration, "per_case": rec.get("per_case", {})}
            if val
            else None,
            model=net,
        )
        payload["swa"] = {
            "start": int(spec["start"]),
            "every": int(spec["every"]),
            "n_averaged": rec["swa_n_averaged"],
            "bn_batches": n_batches,
        }
        save_checkpoint(self.out / "swa.pt", payload)
        return rec

    # ----------------------------------------------------------------- main loop
    def run(self, resume: bool = False, stop_after: int | None = None) -> dict:
        """Train (or, with ``resume``, continue from ``last.pt``) to ``iterations``.

        stop_after: stop, saving ``last.pt`` as on SIGINT, after this many iterations of this call
        (time-sliced training: a later ``resume`` continues exactly where it stopped).
        The output folder is locked for the run (``locking.folder_lock``): a second training into
        it refuses while this one is alive.
        Started by ``torchrun`` with several processes, each rank trains on its shard of the batch
        and gradients are averaged (``distributed``); only rank 0 locks, logs and saves.
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
                return self._run(resume, stop_after)
            with folder_lock(self.out):
                return self._run(resume, stop_after)
        finally:
            self.dist.barrier()
            self.dist.close()

    def _oom_message(self, method, optimizers, batch: dict, iteration: int, history: dict) -> str:
        """After an out-of-memory step: save ``last.pt`` (of the last completed iteration) and find, by
        halving, the largest batch whose step fits; the message names both."""
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
        n_total, n_lab = int(batch["image"].shape[0]), int(batch["n_labeled"])
        fits = 0
        size = n_total // 2
        while size >= 1:
            lab = max(1, round(n_lab * size / n_total)) if n_lab < n_total else size
            rows = list(range(min(lab, n_lab))) + list(range(n_lab, n_lab + size - min(lab, n_lab)))
            sub = {k: (v[rows] if torch.is_tensor(v) and v.shape[:1] == (n_total,) else v) for k, v in batch.items()}
            sub["n_labeled"] = min(lab, n_lab)
            try:
                losses, _ = method.training_step(sub, iteration)
                for loss in losses.values():
                    loss.backward(retain_graph=True)
                fits = size
                break
            except torch.cuda.OutOfMemoryError:
                if self.device.type == "cuda":
                    torch.cuda.empty_cache()
                size //= 2
            finally:
                for opt in optimizers.values():
                    opt.zero_grad(set_to_none=True)
        if self.dist.is_main and iteration > 0:
            self._save_resume(method, optimizers, iteration, history)
        cfg = self.config
        hint = (
            f"a batch of {fits} fits: set batch_size {fits} and labeled_per_batch {max(1, min(fits, round(n_lab * fits / n_total)))}"
            if fits
            else "not even a batch of 1 fits: use smaller patch_size or n_filters, or --device cpu"
        )
        return (
            f"out of GPU memory at iteration {iteration + 1} with batch_size {cfg['batch_size']} "
            f"(patch {list(cfg['patch_size'])}); {hint}" + (" (last.pt saved)" if iteration > 0 else "")
        )

    def _run(self, resume: bool, stop_after: int | None) -> dict:
        cfg = self.config
        self.out.mkdir(parents=True, exist_ok=True)
        torch.manual_seed(int(cfg["seed"]))
        np.random.seed(int(cfg["seed"]) % 2**32)
        ck = None
        if resume and (self.out / "last.pt").exists():  # checked before the data are loaded
            ck = load_checkpoint(self.out / "last.pt")
            self._check_resume(ck)
        elif not resume and (self.out / "last.pt").exists():
            raise InputError(f"{self.out} already holds a training run (last.pt); use --resume or another --out")
        init_ckpt = None
        if cfg.get("init"):
            init_ckpt = load_checkpoint(cfg["init"])
            diffs = architecture_differences(
                init_ckpt.get("arch", "vnet"), dict(init_ckpt.get("network") or {}), cfg["arch"], dict(cfg["network"])
            )
            if diffs:
                raise InputError(
                    f"{cfg['init']}: --init checkpoint's architecture differs from the config's "
                    f"(checkpoint vs config): {'; '.join(diffs)}"
                )
        labeled, unlabeled, val = self._load_data()
        pseudo = set(self._pseudo_names)
        self.data_summary = {
            "n_labeled": len(labeled) - len(self._pseudo_names),
            "n_pseudo_labeled": len(self._pseudo_names),
            "n_unlabeled": len(unlabeled),
            "n_validation": len(val),
            "labeled_cases": [c.name for c in labeled if c.name not in pseudo],
            "pseudo_labeled_cases": self._pseudo_names,
            "validation_cases": [c.name for c in val],
            "source": cfg.get("data") if isinstance(cfg.get("data"), (str, list)) else None,
        }
        method = get_method(cfg["method"])(cfg).to(self.device)
        if init_ckpt is not None:  # fine-tuning: start from a model checkpoint's weights
            from .checkpoint import build_model_from_checkpoint

            init = build_model_from_checkpoint(init_ckpt, cfg["init"])
            try:
                method.model.load_state_dict(init.state_dict())
            except RuntimeError as exc:  # the method changes the network (e.g. a separate SDM decoder)
                raise InputError(
                    f"{cfg['init']}: its weights do not fit method {cfg['method']}'s network "
                    f"({str(exc).splitlines()[0][:200]})"
                ) from None
        dist = self.dist
        dist.broadcast_parameters(method)
        main = dist.is_main
        groups = method.optimizer_groups()
        optimizers = {k: _make_optimizer(p, cfg["optim"][k]) for k, p in groups.items()}
        swa = cfg.get("swa") or None
        if swa is not None:
            from torch.optim.swa_utils import AveragedModel

            swa_start, swa_every = int(swa.get("start", -1)), int(swa.get("every", 0))
            if swa_every < 1 or swa_start < 0:
                raise InputError(f"swa needs start >= 0 and every >= 1 (got {swa})")
            self.swa_model = AveragedModel(method.model, use_buffers=False)
        else:
            self.swa_model = None
        total = int(cfg["iterations"])
        start, history = 0, {"best": None, "validations": []}
        if ck is not None:
            method.load_state_dict(ck["method_state"])
            for k, o in optimizers.items():
                o.load_state_dict(ck["optimizers"][k])
            torch.set_rng_state(ck["torch_rng"])
            start, history = int(ck["iteration"]), ck["history"]
            if self.swa_model is not None and "swa_state" in ck:
                self.swa_model.load_state_dict(ck["swa_state"])
        if dist.enabled:  # identical weights on every rank, different dropout masks
            torch.manual_seed(int(cfg["seed"]) + 1000003 * dist.rank + start)
        if main:
            atomic_write_text(self.out / "config.json", json_dumps(cfg, indent=2))

        cases = labeled + (unlabeled if method.uses_unlabeled else [])
        n_lab = len(labeled)
        lpb = int(cfg["labeled_per_batch"]) if method.uses_unlabeled else int(cfg["batch_size"])
        sampler = TwoStreamBatchSampler(
            range(n_lab),
            range(n_lab, len(cases)),
            int(cfg["batch_size"]) if method.uses_unlabeled else lpb,
            lpb,
            total,
            seed=int(cfg["seed"]),
            start_batch=start,
            rank=dist.rank,
            world_size=dist.world_size,
        )
        patch = tuple(cfg["patch_size"])
        k = int(cfg["network"]["num_classes"])
        dataset = CropDataset(cases, patch, k, augment=True)
        nw = int(cfg["num_workers"])
        # The loader gets its own generator: creating its iterator would otherwise draw from the
        # global torch RNG (which drives dropout), and a resumed run would drift from an
        # uninterrupted one. Crops and augmentation come from the sampler's per-sample seeds.
        loader = DataLoader(
            dataset,
            batch_sampler=sampler,
            num_workers=nw,
            persistent_workers=nw > 0,
            pin_memory=self.device.type == "cuda",
            prefetch_factor=2 if nw > 0 else None,
            generator=torch.Generator().manual_seed(int(cfg["seed"])),
        )

        def _handler(signum, frame):  # save and stop at the end of the current iteration
            self._stop = True

        # SIGBREAK: what CTRL_BREAK_EVENT (the Slicer module's stop request on Windows) raises there.
        stops = (signal.SIGINT, signal.SIGTERM) + ((signal.SIGBREAK,) if hasattr(signal, "SIGBREAK") else ())
        old = {s: signal.signal(s, _handler) for s in stops} if _main_thread() else {}
        from .progress import progress_bar

        bar = progress_bar(
            total=total,
            initial=start,
            desc=f"train {cfg['method']}",
            disable=not (self.progress and main),
            dynamic_ncols=True,
        )
        log = open(self.out / "log.jsonl", "a") if main else open(os.devnull, "w")
        it = start
        t_data = t_step = 0.0
        t_last = time.perf_counter()
        try:
            method.train()
            for batch in loader:
                t0 = time.perf_counter()
                t_data += t0 - t_last
                batch = {
                    kk: (v.to(self.device, non_blocking=True) if torch.is_tensor(v) else v) for kk, v in batch.items()
                }
                batch["n_labeled"] = lpb
                for name, opt in optimizers.items():
                    for g in opt.param_groups:
                        g["lr"] = _lr_at(cfg["optim"][name], it, total)
                try:
                    losses, logs = method.training_step(batch, it)
                    for name, loss in losses.items():
                        optimizers[name].zero_grad(set_to_none=True)
                        loss.backward()
                        dist.average_gradients([q for g in optimizers[name].param_groups for q in g["params"]])
                        optimizers[name].step()
                except torch.cuda.OutOfMemoryError:
                    raise RuntimeError(self._oom_message(method, optimizers, batch, it, history)) from None
                it += 1
                method.after_step(it)
                if swa is not None and it > swa_start and (it - swa_start) % swa_every == 0:
                    self.swa_model.update_parameters(method.model)
                t_last = time.perf_counter()
                t_step += t_last - t0
                bar.update(1)
                if it % int(cfg["log_every"]) == 0 or it == total:
                    rec = {
                        "iteration": it,
                        "lr": optimizers["model"].param_groups[0]["lr"],
                        **logs,
                        "data_s": t_data / max(1, it - start),
                        "step_s": t_step / max(1, it - start),
                    }
                    log.write(json_dumps(rec) + "\n")
                    log.flush()
                    bar.set_postfix(loss=f"{logs.get('loss', float('nan')):.3f}")
                every = int(cfg["validation"].get("every", 0))
                if main and val and every and (it % every == 0 or it == total):
                    res = validate(
                        method.model,
                        val,
                        tuple(cfg.get("inference_patch_size") or patch),
                        k,
                        self.device,
                        cfg["validation"].get("overlap", 0.5),
                    )
                    method.train()
                    rec = {"iteration": it, "val_dice": res["dice"]}
                    history["validations"].append(rec)
                    log.write(json_dumps(rec) + "\n")
                    log.flush()
                    bar.write(f"iteration {it}: validation Dice {res['dice']:.4f}")
                    if history["best"] is None or res["dice"] > history["best"]["dice"]:
                        history["best"] = {"dice": res["dice"], "iteration": it, "per_case": res["per_case"]}
                        save_checkpoint(self.out / "best.pt", self._model_payload(method, it, history["best"]))
                if stop_after is not None and it - start >= int(stop_after) and it < total:
                    self._stop = True
                if main and (it % int(cfg["checkpoint_every"]) == 0 or it == total or self._stop):
                    self._save_resume(method, optimizers, it, history)
                if self._stop:
                    break
        finally:
            bar.close()
            log.close()
            for s, h in old.items():
                signal.signal(s, h)
        if dist.enabled and not self._stop:  # a collective: only where every rank finished the loop
            divergence = dist.parameter_divergence(method)
            if main:
                with open(self.out / "log.jsonl", "a") as f:
                    f.write(json_dumps({"iteration": it, "rank_parameter_divergence": divergence}) + "\n")
                if divergence > 0:
                    warnings.warn(
                        f"parameters differ across the {dist.world_size} ranks by up to {divergence:.3g} "
                        "after training; rank 0's copy is the one saved"
                    )
        # model.pt: the SWA average when configured, else the best validated weights, or the last
        # ones when there is no validation.
        if not main:
            pass
        elif self.swa_model is not None and not self._stop and int(self.swa_model.n_averaged) > 0:
            rec = self._finish_swa(method, dataset, it, val)
            with open(self.out / "log.jsonl", "a") as f:
                f.write(json_dumps({k: v for k, v in rec.items() if k != "per_case"}) + "\n")
            save_checkpoint(self.out / "model.pt", load_checkpoint(self.out / "swa.pt"))
        elif history["best"] is not None:
            save_checkpoint(self.out / "model.pt", load_checkpoint(self.out / "best.pt"))
        else:
            save_checkpoint(self.out / "model.pt", self._model_payload(method, it, None))
        return {"iterations": it, "stopped_early": self._stop, "best": history["best"], "out": str(self.out)}


def _main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()
