"""Training: the Trainer and its parts (one loop for every method; see ``trainer.Trainer.fit``).

Config (a dict, usually a JSON file in ``configs/``; every default states its source, ``config.DEFAULTS``):
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
           betas, schedule step|poly|exp|constant, step (iterations), gamma (``optim``)
    swa:         optional {"start": S, "every": E, "bn_batches": B}: stochastic weight averaging
                 (Izmailov et al., UAI 2018) of the inference network - the equal-weight mean of its
                 parameters after iterations S + E, S + 2E, ... (``torch.optim.swa_utils.AveragedModel``);
                 at the end BatchNorm statistics are recomputed for the averaged weights over B
                 training batches (``update_bn``, train mode as in torch's recipe), and the averaged
                 network becomes ``swa.pt`` and ``model.pt`` (``callbacks.WeightAveraging``).
    init:        optional model checkpoint to start from (fine-tuning; ``--init``)
    average_with_init: optional lam in (0, 1] (needs ``init``, not with ``swa``): ``model.pt`` is
                 (1 - lam) * the init weights + lam * the last ones (``callbacks.averaged_with``)
Checked before any work (``config_check``): every value of the config (unknown keys, methods,
optimizers, ranges, patch sizes divisible by the network's downsampling factor); with ``resume``,
that the config equals the run's saved one except ``config_check.RESUME_MAY_CHANGE`` (the differing
keys are listed); with ``init``, that the checkpoint's architecture is the config's (the differing
fields are listed).
Outputs in ``out`` (``run_files``): ``last.pt`` (resume), ``best.pt`` / ``model.pt`` (model checkpoints;
``swa.pt`` with ``swa``), ``log.jsonl`` (one JSON line per logged iteration and per validation), ``config.json``.

Parts: ``data`` (cases, split, batches), ``optim`` (optimizers + LambdaLR schedules), ``step`` (one
training step, also used by the benchmarks), ``callbacks`` (logging, validation, SWA, stop requests,
resume checkpoints, rank check), ``validation``, ``run_files``, ``oom``.
"""

from .config import DEFAULTS, merge_config
from .data import split_cases
from .step import train_step
from .trainer import Trainer
from .validation import validate

__all__ = ["DEFAULTS", "Trainer", "merge_config", "split_cases", "train_step", "validate"]
