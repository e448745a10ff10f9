"""Child processes of the Slicer module: fine-tuning on a case library, and background segmentation.

``fine_tune_config`` turns a model's checkpoint metadata into a training config for
``Training/train.py``: the same method, network, preprocessing, patch and labels as the model,
its weights as the start (``init``), the library folder as data (labeled where ``NAME_label.nrrd``
sits beside ``NAME.nrrd``, unlabeled otherwise). ``fine_tune_command`` builds the command line for
plain Python or for Slicer's launcher (``Slicer --no-main-window --python-script``), so the Slicer
module and a terminal start the same job. The process prints one JSON line at the end; progress is
in ``OUT/log.jsonl`` (one line per logged iteration), which a caller can poll.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path
from typing import Sequence

from .atomic import atomic_write_text
from .io import InputError

REPO = Path(__file__).resolve().parent.parent
TRAIN_SCRIPT = REPO / "Training" / "train.py"


def fine_tune_config(meta: dict, library: str | os.PathLike, iterations: int = 1000, labeled: int | None = None,
                     lr: float | None = None) -> dict:
    """Training config continuing ``meta``'s model on ``library`` (every labeled case labeled by default;
    with three or more, the last labeled one by name is held out for validation).

    The model's method is kept when the library also holds unlabeled cases; with labeled cases only
    the run is supervised (same network and losses minus the unlabeled terms). A self-trained model
    (method ``supervised``, see ``pseudo_labels``) names in ``fine_tune`` the semi-supervised method
    (and its parameters) of the teacher it came from, used instead.

    lr: the model optimizer's learning rate; default a tenth of the paper's (0.001 for SGD, 1e-4 Adam):
    fine-tuning starts from trained weights.
    """
    from .data import find_cases

    library = Path(library)
    if not library.is_dir():
        raise InputError(f"training library folder not found: {library}")
    cases = find_cases(library)
    if not any(c.label is not None for c in cases):
        raise InputError(f"{library} holds no labeled case (NAME.nrrd with NAME_label.nrrd); add a corrected segmentation first")
    own = meta.get("fine_tune") or {"method": meta["method"], "method_params": meta.get("method_params", {})}
    method = own["method"]
    labeled_cases = [c for c in cases if c.label is not None]
    # With 3+ labeled cases the last one (by name) is held out, so the new model can be compared with
    # the old one on a case neither trained on; validated only at the end (model.pt = last weights,
    # not picked on that case).
    validation = {"cases": [labeled_cases[-1].name], "every": int(iterations)} if len(labeled_cases) >= 3 else {"last": 0}
    if all(c.label is not None for c in cases):
        method = "supervised"  # no unlabeled case: the semi-supervised terms have nothing to work on
    opt_type = "adam" if meta.get("arch") == "unet2d" else "sgd"
    base_lr = 1e-4 if opt_type == "adam" else 1e-3
    return {
        "data": str(library), "method": method, "method_params": own.get("method_params", {}) if method == own["method"] else {},
        "arch": meta["arch"], "network": meta["network"], "preprocessing": meta["preprocessing"],
        "patch_size": meta["patch_size"], "labels": meta["labels"], "labeled": labeled,
        "iterations": int(iterations), "validation": validation, "num_workers": 0,
        "batch_size": 4 if meta.get("arch") != "unet2d" else 8,
        "labeled_per_batch": 2 if meta.get("arch") != "unet2d" else 4,
        "optim": {"model": {"type": opt_type, "lr": lr or base_lr, "momentum": 0.9, "weight_decay": 1e-4, "schedule": "constant"}},
        "export_dtype": "float32",
    }


def fine_tune_command(config_path: str | os.PathLike, out: str | os.PathLike, init: str | os.PathLike,
                      python: str | None = None, slicer: str | None = None, threads: int | None = None) -> list[str]:
    """argv for the fine-tuning process: ``slicer`` (Slicer executable, headless) or ``python``."""
    args = ["--config", str(config_path), "--out", str(out), "--init", str(init), "--no-progress"]
    if threads:
        args += ["--threads", str(int(threads))]
    if slicer:
        return [slicer, "--no-main-window", "--python-script", str(TRAIN_SCRIPT), *args]
    import sys

    return [python or sys.executable, str(TRAIN_SCRIPT), *args]


class ChildJob:
    """A child process in its own session (so cancelling reaches its children), output to a file in ``out``."""

    def __init__(self, argv: Sequence[str], out: str | os.PathLike, log_name: str, env: dict | None = None):
        self.out = Path(out)
        self.out.mkdir(parents=True, exist_ok=True)
        self._log = self.out / log_name
        self._stdout = open(self._log, "w")
        self.process = subprocess.Popen(list(argv), stdout=self._stdout, stderr=subprocess.STDOUT, start_new_session=True, env=env)

    def poll(self) -> int | None:
        return self.process.poll()

    def wait(self, timeout: float | None = None) -> int:
        code = self.process.wait(timeout)
        self._stdout.close()
        return code


class FineTuneJob(ChildJob):
    """A running fine-tune: ``progress()`` reads the log, ``cancel()`` stops it (and its children)."""

    def __init__(self, argv: Sequence[str], out: str | os.PathLike, iterations: int):
        super().__init__(argv, out, "fine_tune_stdout.txt")
        self.iterations = int(iterations)

    def progress(self) -> float:
        """Fraction of iterations done (0..1), from the last line of OUT/log.jsonl."""
        log = self.out / "log.jsonl"
        if not log.exists():
            return 0.0
        lines = [ln for ln in log.read_text().splitlines() if ln.strip()]
        done = max((json.loads(ln).get("iteration", 0) for ln in lines[-5:]), default=0)
        return min(1.0, done / max(1, self.iterations))

    def cancel(self) -> None:
        """SIGTERM to the process group (train.py saves last.pt and stops), SIGKILL if it lingers."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
        self._stdout.close()


def start_fine_tune(meta: dict, init: str | os.PathLike, library: str | os.PathLike, out: str | os.PathLike,
                    iterations: int = 1000, python: str | None = None, slicer: str | None = None,
                    threads: int | None = None) -> FineTuneJob:
    """Write OUT/fine_tune_config.json and start the fine-tune process; returns the job."""
    out = Path(out)
    if (out / "last.pt").exists() or (out / "model.pt").exists():
        raise InputError(f"{out} already holds a training run; choose another output folder")
    out.mkdir(parents=True, exist_ok=True)
    cfg_path = out / "fine_tune_config.json"
    atomic_write_text(cfg_path, json.dumps(fine_tune_config(meta, library, iterations), indent=2))
    return FineTuneJob(fine_tune_command(cfg_path, out, init, python, slicer, threads), out, iterations)


class SegmentJob(ChildJob):
    """``python -m SemiSupCardiacSegLib segment`` in a child process (the Slicer module's background
    inference): ``progress()`` parses its ``PROGRESS`` lines, ``cancel()`` kills it and its children.
    The outputs land in ``out`` (the CLI's files), ready for ``Logic.import_outputs``."""

    def __init__(self, input_path: str | os.PathLike, out: str | os.PathLike, model: str | None = None,
                 mc_samples: int = 10, device: str = "auto", python: str | None = None, extra: Sequence[str] = ()):
        import sys

        argv = [python or sys.executable, "-m", "SemiSupCardiacSegLib", "segment", str(input_path), "--out", str(out),
                "--mc-samples", str(int(mc_samples)), "--device", device, "--progress-lines", "--compact", *extra]
        if model:
            argv += ["--model", str(model)]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO)] + [p for p in [os.environ.get("PYTHONPATH")] if p])}
        super().__init__(argv, out, "segment_stdout.txt", env=env)

    def progress(self) -> float:
        lines = [ln for ln in self._log.read_text().splitlines() if ln.startswith("PROGRESS ")] if self._log.exists() else []
        return float(lines[-1].split()[1]) if lines else 0.0

    def error(self) -> str:
        """The child's last 'error: ...' line (the CLI's one-line message), or ''."""
        lines = [ln for ln in self._log.read_text().splitlines() if ln.startswith("error:")] if self._log.exists() else []
        return lines[-1] if lines else ""

    def cancel(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        self._stdout.close()
