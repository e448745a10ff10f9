"""Training defaults (every value states its source) and the recursive config merge."""

from __future__ import annotations

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
    "precision": "auto",  # training arithmetic (training.precision): bf16 autocast where the hardware has bf16 units
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
