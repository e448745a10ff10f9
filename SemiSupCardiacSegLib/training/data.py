"""Training data: the cases (loaded to model space and split), the two-stream batches that feed the loop."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from ..data import Case, CaseFile, CropDataset, TwoStreamBatchSampler, find_cases, load_case
from ..distributed import DistContext
from ..errors import InputError
from ..methods import get_method
from ..preprocessing import Preprocessing
from ..progress import progress_bar


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


def _sources(value) -> list:
    """A config data entry (one source, a list of them, or none) as a list."""
    return value if isinstance(value, list) else ([value] if value else [])


@dataclass
class TrainingData:
    """The cases of a run, in model space. unlabeled cases carry no label; pseudo_names: the labeled
    cases whose labels are a teacher's (config ``pseudo_labels``), last in ``labeled``."""

    labeled: list[Case]
    unlabeled: list[Case]
    validation: list[Case]
    pseudo_names: list[str]
    source: str | list | None

    @classmethod
    def load(cls, config: dict, progress: bool = True) -> "TrainingData":
        """Find, split (``split_cases``) and load the cases of ``config``; refuses a semi-supervised method
        without unlabeled cases."""
        cases = [c for s in _sources(config["data"]) for c in find_cases(s)]
        pseudo = [c for s in _sources(config.get("pseudo_labels")) for c in find_cases(s)]
        lab, unl, val = split_cases(cases, config, pseudo)
        if get_method(config["method"]).uses_unlabeled and not unl:
            raise InputError(
                f"method {config['method']} learns from unlabeled images, but none is left: {len(cases)} cases, "
                f"{len(lab)} used as labeled, {len(val)} for validation; use --method supervised, a "
                "smaller --labeled or more cases"
            )
        prep = Preprocessing.from_dict(config["preprocessing"])
        k = int(config["network"]["num_classes"])
        files: list[CaseFile] = lab + unl + val
        it = progress_bar(files, desc="loading cases", disable=not progress, leave=False)
        loaded = {c.name: load_case(c, prep, k) for c in it}
        unlabeled = [Case(c.name, loaded[c.name].image, None) for c in unl]
        data = config.get("data")
        return cls(
            [loaded[c.name] for c in lab],
            unlabeled,
            [loaded[c.name] for c in val],
            [c.name for c in pseudo],
            data if isinstance(data, (str, list)) else None,
        )

    def summary(self) -> dict:
        """The checkpoints' ``training_data`` record: counts and case names."""
        pseudo = set(self.pseudo_names)
        return {
            "n_labeled": len(self.labeled) - len(self.pseudo_names),
            "n_pseudo_labeled": len(self.pseudo_names),
            "n_unlabeled": len(self.unlabeled),
            "n_validation": len(self.validation),
            "labeled_cases": [c.name for c in self.labeled if c.name not in pseudo],
            "pseudo_labeled_cases": self.pseudo_names,
            "validation_cases": [c.name for c in self.validation],
            "source": self.source,
        }


@dataclass
class Batches:
    """The loop's batches: ``loader`` yields iterations ``start`` .. ``total - 1``; every batch's first
    ``labeled_per_batch`` rows are labeled; ``dataset``: the crops (SWA's BatchNorm pass reuses its cases)."""

    loader: DataLoader
    dataset: CropDataset
    labeled_per_batch: int


def make_batches(
    data: TrainingData, config: dict, uses_unlabeled: bool, start: int, dist: DistContext, device: torch.device
) -> Batches:
    """Two-stream batches (labeled + unlabeled; only labeled for a supervised method) from iteration ``start``,
    this rank's shard of each."""
    cases = data.labeled + (data.unlabeled if uses_unlabeled else [])
    n_lab = len(data.labeled)
    batch_size = int(config["batch_size"])
    lpb = int(config["labeled_per_batch"]) if uses_unlabeled else batch_size
    sampler = TwoStreamBatchSampler(
        range(n_lab),
        range(n_lab, len(cases)),
        batch_size,
        lpb,
        int(config["iterations"]),
        seed=int(config["seed"]),
        start_batch=start,
        rank=dist.rank,
        world_size=dist.world_size,
    )
    dataset = CropDataset(
        cases,
        tuple(config["patch_size"]),
        int(config["network"]["num_classes"]),
        augment=True,
        intensity=bool(config.get("intensity_augmentation", False)),
        fold=float(config.get("intensity_fold", 0.0)),
        field=float(config.get("background_field", 0.0)),
    )
    nw = int(config["num_workers"])
    # The loader gets its own generator: creating its iterator would otherwise draw from the
    # global torch RNG (which drives dropout), and a resumed run would drift from an
    # uninterrupted one. Crops and augmentation come from the sampler's per-sample seeds.
    loader = DataLoader(
        dataset,
        batch_sampler=sampler,
        num_workers=nw,
        persistent_workers=nw > 0,
        pin_memory=device.type == "cuda",
        prefetch_factor=2 if nw > 0 else None,
        generator=torch.Generator().manual_seed(int(config["seed"])),
    )
    return Batches(loader, dataset, lpb)


def to_device(batch: dict, device: torch.device, labeled_per_batch: int) -> dict:
    """The loader's batch with its tensors on ``device`` and ``n_labeled`` set."""
    out = {k: (v.to(device, non_blocking=True) if torch.is_tensor(v) else v) for k, v in batch.items()}
    out["n_labeled"] = labeled_per_batch
    return out
