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
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from .atomic import atomic_write_text
from .errors import InputError

if TYPE_CHECKING:  # torch-free at import (the Slicer module loads this before torch exists)
    from .model_meta import ModelMeta

REPO = Path(__file__).resolve().parent.parent
TRAIN_SCRIPT = REPO / "Training" / "train.py"
#: A fine-tune's model.pt is (1 - lam) * the start + lam * the fine-tuned weights, lam = this
#: (``average_with_init``; WiSE-FT's default, fixed before measuring). In
#: ``benchmarks/correction_loop.py`` it beat the plain fine-tune on every row measured, most where
#: the corrected cases were ones the model had failed on (a fine-tune on them alone forgets the rest).
FINE_TUNE_AVERAGE = 0.5
#: Iterations of a fine-tune (the module's and ``fine_tune_config``'s default). In
#: ``benchmarks/correction_loop.py`` (new scanner, K = 1 and 8, semi-supervised) 1000 iterations gave
#: no more than 300 (weight-averaged held-out Dice 0.873 / 0.872 vs 0.872 / 0.872) at 3.4x the time
#: (23-25 min vs 6-7 min on 2 cores); 300 keeps a fine-tune within 10 minutes there.
FINE_TUNE_ITERATIONS = 300


def fine_tune_config(
    meta: ModelMeta,
    library: str | os.PathLike,
    iterations: int = FINE_TUNE_ITERATIONS,
    labeled: int | None = None,
    lr: float | None = None,
) -> dict:
    """Training config continuing ``meta``'s model on ``library`` (every labeled case labeled by default;
    with three or more, the last labeled one by name is held out for validation).

    The model's method is kept when the library also holds unlabeled cases; with labeled cases only
    the run is supervised (same network and losses minus the unlabeled terms). A self-trained model
    (method ``supervised``, see ``pseudo_labels``) names in ``fine_tune`` the semi-supervised method
    (and its parameters) of the teacher it came from, used instead.

    lr: the model optimizer's learning rate; default a tenth of the paper's (0.001 for SGD, 1e-4 Adam):
    fine-tuning starts from trained weights. The exported model is the weight average of the start
    and the fine-tuned weights (``FINE_TUNE_AVERAGE``).
    """
    from .data import find_cases

    library = Path(library)
    if not library.is_dir():
        raise InputError(f"training library folder not found: {library}")
    cases = find_cases(library)
    if not any(c.label is not None for c in cases):
        raise InputError(
            f"{library} holds no labeled case (NAME.nrrd with NAME_label.nrrd); add a corrected segmentation first"
        )
    own = meta.fine_tune or {"method": meta.method, "method_params": meta.method_params}
    method = own["method"]
    labeled_cases = [c for c in cases if c.label is not None]
    # With 3+ labeled cases the last one (by name) is held out, so the new model can be compared with
    # the old one on a case neither trained on; validated only at the end (model.pt = last weights,
    # not picked on that case).
    validation = (
        {"cases": [labeled_cases[-1].name], "every": int(iterations)} if len(labeled_cases) >= 3 else {"last": 0}
    )
    if all(c.label is not None for c in cases):
        method = "supervised"  # no unlabeled case: the semi-supervised terms have nothing to work on
    opt_type = "adam" if meta.arch == "unet2d" else "sgd"
    base_lr = 1e-4 if opt_type == "adam" else 1e-3
    return {
        "data": str(library),
        "method": method,
        "method_params": own.get("method_params", {}) if method == own["method"] else {},
        "arch": meta.arch,
        "network": dict(meta.network),
        "preprocessing": meta.preprocessing.to_dict(),
        "patch_size": list(meta.patch_size),
        "labels": meta.label_names(),
        "labeled": labeled,
        "iterations": int(iterations),
        "validation": validation,
        "num_workers": 0,
        "batch_size": 4 if meta.arch != "unet2d" else 8,
        "labeled_per_batch": 2 if meta.arch != "unet2d" else 4,
        "optim": {
            "model": {
                "type": opt_type,
                "lr": lr or base_lr,
                "momentum": 0.9,
                "weight_decay": 1e-4,
                "schedule": "constant",
            }
        },
        "export_dtype": "float32",
        "average_with_init": FINE_TUNE_AVERAGE,
    }


def fine_tune_command(
    config_path: str | os.PathLike,
    out: str | os.PathLike,
    init: str | os.PathLike,
    python: str | None = None,
    slicer: str | None = None,
    threads: int | None = None,
) -> list[str]:
    """argv for the fine-tuning process: ``slicer`` (Slicer executable, headless) or ``python``."""
    args = ["--config", str(config_path), "--out", str(out), "--init", str(init), "--no-progress"]
    if threads:
        args += ["--threads", str(int(threads))]
    if slicer:
        return [slicer, "--no-main-window", "--python-script", str(TRAIN_SCRIPT), *args]
    return [python or sys.executable, str(TRAIN_SCRIPT), *args]


def _process_group_options() -> dict:
    """Popen options that put the child in a process group of its own, so that stopping it reaches
    its children too: a new session on POSIX, CREATE_NEW_PROCESS_GROUP on Windows (the group that
    CTRL_BREAK_EVENT is sent to)."""
    if os.name == "nt":
        return {"creationflags": getattr(subprocess, "CREATE_NEW_PROCESS_GROUP", 0x200)}
    return {"start_new_session": True}


def _stop_signal(process: subprocess.Popen, force: bool) -> None:
    """Ask ``process`` (and its group) to stop: SIGTERM / CTRL_BREAK_EVENT (a training saves
    ``last.pt`` on either), or with ``force`` SIGKILL / TerminateProcess."""
    if process.poll() is not None:
        return
    if os.name == "nt":
        if force:
            process.kill()  # TerminateProcess
        else:
            process.send_signal(getattr(signal, "CTRL_BREAK_EVENT", 1))
        return
    try:
        os.killpg(process.pid, signal.SIGKILL if force else signal.SIGTERM)
    except ProcessLookupError:  # ended between poll and kill
        pass


def _library_env() -> dict:
    """The environment of a ``python -m SemiSupCardiacSegLib`` child: this checkout first on PYTHONPATH
    (a module loaded from a checkout has the library beside it, not installed)."""
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO)] + [p for p in [os.environ.get("PYTHONPATH")] if p])}


class ChildJob:
    """A child process in its own process group, its output in ``out/log_name``.

    ``poll()`` never blocks: it returns None while the child runs and its exit code once it ended
    (closing the log file then). ``request_stop()`` asks it to stop and returns at once; a child
    still running ``grace_s`` later is killed by the next ``poll()``. ``cancel()`` is the blocking
    form for scripts (stop, wait, kill after the grace time)."""

    def __init__(
        self, argv: Sequence[str], out: str | os.PathLike, log_name: str, env: dict | None = None, grace_s: float = 30.0
    ):
        self.out = Path(out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.argv = list(argv)
        self._log = self.out / log_name
        self._stdout = open(self._log, "w")
        self.grace_s = float(grace_s)
        self._kill_at: float | None = None
        try:
            self.process = subprocess.Popen(
                self.argv, stdout=self._stdout, stderr=subprocess.STDOUT, env=env, **_process_group_options()
            )
        except OSError:
            self._stdout.close()
            raise

    @property
    def log_path(self) -> Path:
        return self._log

    @property
    def stop_requested(self) -> bool:
        return self._kill_at is not None

    def poll(self) -> int | None:
        code = self.process.poll()
        if code is None:
            if self._kill_at is not None and time.monotonic() >= self._kill_at:
                _stop_signal(self.process, force=True)
            return None
        self._stdout.close()
        return code

    def request_stop(self) -> None:
        if self.process.poll() is None and self._kill_at is None:
            _stop_signal(self.process, force=False)
            self._kill_at = time.monotonic() + self.grace_s

    def wait(self, timeout: float | None = None) -> int:
        code = self.process.wait(timeout)
        self._stdout.close()
        return code

    def cancel(self) -> None:
        """Stop and wait: SIGTERM (CTRL_BREAK on Windows), then a kill after ``grace_s``."""
        self.request_stop()
        try:
            self.process.wait(self.grace_s)
        except subprocess.TimeoutExpired:
            _stop_signal(self.process, force=True)
            self.process.wait()
        self._stdout.close()

    def error(self) -> str:
        """The child's last 'error: ...' line (the one-line message of the CLI and train.py); for a
        child that died without one (a crash, a missing module), the last line of its output; ''
        when it printed nothing."""
        if not self._log.exists():
            return ""
        lines = [ln.strip() for ln in self._log.read_text(errors="replace").splitlines() if ln.strip()]
        errors = [ln for ln in lines if ln.startswith("error:")]
        return errors[-1] if errors else (lines[-1] if lines else "")


class FineTuneJob(ChildJob):
    """A running fine-tune: ``progress()`` reads OUT/log.jsonl; stopping saves ``last.pt``."""

    def __init__(self, argv: Sequence[str], out: str | os.PathLike, iterations: int):
        super().__init__(argv, out, "fine_tune_stdout.txt")
        self.iterations = int(iterations)

    def progress(self) -> float:
        """Fraction of iterations done (0..1), from the last lines of OUT/log.jsonl."""
        log = self.out / "log.jsonl"
        if not log.exists():
            return 0.0
        done = 0
        for ln in log.read_text().splitlines()[-5:]:
            try:
                done = max(done, int(json.loads(ln).get("iteration", 0)))
            except (ValueError, AttributeError):  # a line being written
                continue
        return min(1.0, done / max(1, self.iterations))


def start_fine_tune(
    meta: ModelMeta,
    init: str | os.PathLike,
    library: str | os.PathLike,
    out: str | os.PathLike,
    iterations: int = FINE_TUNE_ITERATIONS,
    python: str | None = None,
    slicer: str | None = None,
    threads: int | None = None,
) -> FineTuneJob:
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
    inference): ``progress()`` parses its ``PROGRESS`` lines; stopping it ends it at once (nothing
    to save). The outputs land in ``out`` (the CLI's files), ready for ``Logic.import_outputs``.

    roi_mask: a label file on the input's grid; only its nonzero voxels are segmented (``segment --roi-mask``).
    es_input: an end-systolic frame segmented by the same child (``segment --es``; cine models)."""

    def __init__(
        self,
        input_path: str | os.PathLike,
        out: str | os.PathLike,
        model: str | None = None,
        mc_samples: int = 10,
        device: str = "auto",
        python: str | None = None,
        extra: Sequence[str] = (),
        roi_mask: str | os.PathLike | None = None,
        es_input: str | os.PathLike | None = None,
    ):
        argv = [
            python or sys.executable,
            "-m",
            "SemiSupCardiacSegLib",
            "segment",
            str(input_path),
            "--out",
            str(out),
            "--mc-samples",
            str(int(mc_samples)),
            "--device",
            device,
            "--progress-lines",
            "--compact",
            *extra,
        ]
        if model:
            argv += ["--model", str(model)]
        if roi_mask is not None:
            argv += ["--roi-mask", str(roi_mask)]
        if es_input is not None:
            argv += ["--es", str(es_input)]
        super().__init__(argv, out, "segment_stdout.txt", env=_library_env(), grace_s=0.0)

    def progress(self) -> float:
        return _last_progress(self._log)


def _last_progress(log: Path) -> float:
    """The fraction of the last ``PROGRESS <fraction>`` line of a child's output (0 before the first)."""
    if not log.exists():
        return 0.0
    lines = [ln for ln in log.read_text(errors="replace").splitlines() if ln.startswith("PROGRESS ")]
    try:
        return float(lines[-1].split()[1]) if lines else 0.0
    except (IndexError, ValueError):  # a line being written
        return 0.0


class SuggestJob(ChildJob):
    """``python -m SemiSupCardiacSegLib suggest`` on a training library, in a child process: its
    unlabeled cases segmented into ``out/cases/`` (reused when done earlier by the same model) and
    ranked into ``out/suggestions.json``; the library's manifest remembers the scores."""

    def __init__(
        self,
        library: str | os.PathLike,
        out: str | os.PathLike,
        model: str | None = None,
        mc_samples: int = 10,
        device: str = "auto",
        python: str | None = None,
    ):
        argv = [python or sys.executable, "-m", "SemiSupCardiacSegLib", "suggest", "--data", str(library)]
        argv += ["--out", str(out), "--mc-samples", str(int(mc_samples)), "--device", device, "--progress-lines"]
        argv += ["--quiet"] + (["--model", str(model)] if model else [])
        super().__init__(argv, out, "suggest_stdout.txt", env=_library_env(), grace_s=0.0)

    def progress(self) -> float:
        return _last_progress(self._log)


class AdaptJob(ChildJob):
    """``python -m SemiSupCardiacSegLib adapt`` in a child process: ``model`` with its batch-norm
    statistics re-estimated on the images of ``data`` (a training library's labeled and unlabeled
    cases; no label read), written to ``out_model`` (a new file: an existing one is refused)."""

    def __init__(
        self,
        data: str | os.PathLike,
        out_model: str | os.PathLike,
        model: str | None = None,
        device: str = "auto",
        python: str | None = None,
    ):
        self.model_path = Path(out_model)
        argv = [python or sys.executable, "-m", "SemiSupCardiacSegLib", "adapt", "--data", str(data)]
        argv += ["--out", str(self.model_path), "--device", device, "--progress-lines", "--quiet"]
        argv += ["--model", str(model)] if model else []
        super().__init__(argv, self.model_path.parent, "adapt_stdout.txt", env=_library_env(), grace_s=0.0)

    def progress(self) -> float:
        return _last_progress(self._log)


class EvaluateJob(ChildJob):
    """``python -m SemiSupCardiacSegLib evaluate`` of one model on labeled cases, in a child process
    (the before/after comparison of a fine-tune; the GUI never evaluates in its own thread)."""

    def __init__(
        self,
        model: str | os.PathLike | None,
        cases: Sequence[str | os.PathLike],
        out_json: str | os.PathLike,
        device: str = "auto",
        python: str | None = None,
    ):
        self.result_path = Path(out_json)
        argv = [
            python or sys.executable,
            "-m",
            "SemiSupCardiacSegLib",
            "evaluate",
            "--data",
            *[str(c) for c in cases],
            "--out",
            str(out_json),
            "--device",
            device,
            "--quiet",
        ]
        if model:
            argv += ["--model", str(model)]
        super().__init__(
            argv, self.result_path.parent, self.result_path.stem + "_stdout.txt", env=_library_env(), grace_s=0.0
        )

    def progress(self) -> float:
        return 0.0


class JobRunner:
    """One child job at a time, polled by its owner (the Slicer Widget's single QTimer).

    ``start(job, on_done, label)`` runs ``job``; when it ends, ``on_done(code, job)`` is called once
    (code 0 success, else the exit code; a stopped job reports its code with ``job.stop_requested``).
    ``cancel()`` asks the job to stop without waiting; ``poll()`` returns True while a job runs.
    """

    def __init__(self) -> None:
        self.job: ChildJob | None = None
        self.label = ""
        self._on_done = None

    @property
    def busy(self) -> bool:
        return self.job is not None

    def start(self, job: ChildJob, on_done, label: str) -> ChildJob:
        if self.job is not None:
            job.cancel()
            raise RuntimeError(f"another job is running ({self.label}); cancel it first")
        self.job, self._on_done, self.label = job, on_done, label
        return job

    def progress(self) -> float:
        return self.job.progress() if self.job is not None else 0.0

    def poll(self) -> bool:
        job = self.job
        if job is None:
            return False
        code = job.poll()
        if code is None:
            return True
        on_done, self.job, self._on_done, self.label = self._on_done, None, None, ""
        on_done(code, job)
        return self.job is not None  # on_done may have started the next step

    def cancel(self) -> None:
        if self.job is not None:
            self.job.request_stop()

    def shutdown(self, timeout_s: float = 10.0) -> None:
        """End the running job, waiting up to ``timeout_s`` before killing it (module cleanup)."""
        job, self.job, self._on_done = self.job, None, None
        if job is not None:
            job.grace_s = min(job.grace_s, timeout_s)
            job.cancel()
