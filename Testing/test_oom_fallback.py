"""CUDA out-of-memory handling of inference: smaller window batches, then the CPU, with warnings.

No GPU here, so the out-of-memory error is raised by a small real network wrapper whenever it sees
more windows at once than a given "memory" allows; the retry logic under test is the real one."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from SemiSupCardiacSegLib.inference import InferenceSettings, Predictor, run_with_oom_fallback
from SemiSupCardiacSegLib.model_meta import ModelMeta
from SemiSupCardiacSegLib.networks import build_network
from SemiSupCardiacSegLib.preprocessing import Preprocessing
from SemiSupCardiacSegLib.volume import Volume


class LimitedMemory(torch.nn.Module):
    """A V-Net that raises CUDA OOM when asked to encode more than ``max_windows`` windows at once."""

    def __init__(self, max_windows: int):
        super().__init__()
        self.net = build_network("vnet", {"n_filters": 2})
        self.max_windows = max_windows
        self.seen: list[int] = []

    def encode(self, x):
        self.seen.append(x.shape[0])
        if x.shape[0] > self.max_windows:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        return self.net.encode(x)

    def decode(self, feats, **kwargs):
        return self.net.decode(feats, **kwargs)


@pytest.mark.parametrize("localize", [False, True], ids=["whole-volume", "localized"])
def test_inference_retries_with_smaller_window_batch(localize):
    """Both the full pass and the localization's coarse pass (the volume holds > 4 windows, so it
    runs first when ``localize``) halve the window batch on out-of-memory."""
    vol = Volume(np.random.default_rng(0).normal(size=(40, 40, 20)).astype(np.float32), spacing=(2.0, 2.0, 2.0))
    model = LimitedMemory(max_windows=1)
    with pytest.warns(RuntimeWarning, match="window batch of 2"):
        meta = ModelMeta.from_dict(
            {
                "arch": "vnet",
                "network": {"n_filters": 2},
                "preprocessing": Preprocessing(spacing=(2.0, 2.0, 2.0)).to_dict(),
                "patch_size": [16, 16, 16],
                "labels": {"1": "x"},
            },
            "m.pt",
        )
        settings = InferenceSettings(
            (16, 16, 16), mc_samples=1, window_batch=4, device="cpu", postprocess=False, localize=localize
        )
        predictor = Predictor(model, meta, settings)
        pred = predictor.predict(vol)
    seen = predictor.model.seen  # the Predictor runs a batch-norm-folded copy (``networks.fold``)
    assert pred.labels.shape == vol.shape
    assert seen[:3] == [4, 2, 1] and seen[-1] == 1
    assert (pred.localization is not None) == localize
    if localize:  # the full pass after the coarse one starts again at 4 windows and halves again
        assert seen.count(4) == 2 and seen.count(2) == 2


def test_oom_on_gpu_falls_back_to_cpu_and_cpu_oom_is_raised():
    calls = []

    def run(batch, device):
        calls.append((batch, device.type))
        if device.type == "cuda":
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        return "done"

    with pytest.warns(RuntimeWarning, match="falling back to the CPU"):
        out, dev = run_with_oom_fallback(run, 2, torch.device("cuda"))
    assert out == "done" and dev.type == "cpu" and calls == [(2, "cuda"), (1, "cuda"), (1, "cpu")]

    def always(batch, device):
        raise torch.cuda.OutOfMemoryError("out of memory")

    with pytest.raises(torch.cuda.OutOfMemoryError), pytest.warns(RuntimeWarning):
        run_with_oom_fallback(always, 2, torch.device("cpu"))


def test_volume_too_large_for_memory_is_refused_with_numbers():
    from SemiSupCardiacSegLib.errors import InputError
    from SemiSupCardiacSegLib.inference import check_memory, estimate_inference_bytes

    need = estimate_inference_bytes((576, 576, 88), (288, 288, 44), 2)
    assert 1.4e9 < need < 2.4e9  # the measured peak of this case is 1.8 GB (benchmarks/inference_speed.py)
    check_memory((576, 576, 88), (288, 288, 44), 2, available=8 * 2**30)  # fits: no error
    with pytest.raises(
        InputError, match=r"volume too large for available memory: .* needs about .* GiB, 0.5 GiB available"
    ):
        check_memory((2048, 2048, 400), (2048, 2048, 400), 2, available=2**29)


def test_training_out_of_memory_names_the_batch_size_that_fits(phantom_folder, tmp_path):
    """A method whose step runs out of (simulated) GPU memory above 2 samples per batch: the
    Trainer stops with a message naming the batch size that fits and keeps last.pt."""
    from conftest import TINY

    from SemiSupCardiacSegLib.methods import register
    from SemiSupCardiacSegLib.methods.supervised import Supervised
    from SemiSupCardiacSegLib.training import Trainer

    @register("_test_limited_memory")
    class LimitedMemorySupervised(Supervised):  # the real supervised method, with a memory limit
        calls = 0

        def training_step(self, batch, iteration):
            LimitedMemorySupervised.calls += 1
            if iteration >= 3 and batch["image"].shape[0] > 2:
                raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
            return super().training_step(batch, iteration)

    from SemiSupCardiacSegLib.checkpoint import load_checkpoint
    from SemiSupCardiacSegLib.methods import METHODS

    cfg = {
        **TINY,
        "method": "_test_limited_memory",
        "batch_size": 4,
        "labeled_per_batch": 4,
        "iterations": 10,
        "validation": {"last": 0},
        "checkpoint_every": 100,
        "data": str(phantom_folder),
    }
    try:
        with pytest.raises(
            RuntimeError,
            match=r"out of GPU memory at iteration 4 with batch_size 4 .* a batch of 2 fits: "
            r"set batch_size 2 and labeled_per_batch 2 \(last.pt saved\)",
        ):
            Trainer(cfg, tmp_path / "run", device="cpu", progress=False).run()
    finally:
        METHODS.pop("_test_limited_memory")
    assert load_checkpoint(tmp_path / "run" / "last.pt")["iteration"] == 3
