"""Multi-process training with torch.distributed, started by ``torchrun`` (NCCL on GPU, gloo on CPU).

``torchrun`` sets RANK, WORLD_SIZE and LOCAL_RANK; ``DistContext.from_env`` joins the process
group when WORLD_SIZE > 1 and is a no-op context otherwise, so the Trainer runs unchanged on one
process. Each rank trains on its own shard of every batch (the two-stream sampler's rank /
world_size), so the global batch is world_size x batch_size.

Gradients are averaged over ranks with one all-reduce per optimizer step on a flattened buffer -
the operation DistributedDataParallel performs inside its reducer. The DDP *wrapper* is not used
because the semi-supervised methods step several optimizers on losses that share one forward
pass (segmenter then discriminator, with the generator's loss reaching the discriminator's
parameters) and run extra no-gradient passes (MC dropout, EMA teacher), which the wrapper's
one-forward-one-backward reducer does not allow. Parameters start identical on every rank (same
seed, then a broadcast from rank 0) and receive identical averaged gradients, so they stay
identical; the EMA teacher, computed from them, stays identical too. Dropout masks differ per rank
(RNG seeded with seed + rank after the networks are built). BatchNorm running statistics are not
synchronized: in training every network uses batch statistics, and only rank 0's (validated,
exported) copy is ever saved. Only rank 0 validates, writes logs and checkpoints and holds the
folder lock.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch


@dataclass
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_env(cls, device_type: str) -> "DistContext":
        """Join the process group torchrun describes (WORLD_SIZE > 1), else a single-process context."""
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world <= 1:
            return cls()
        import torch.distributed as dist

        if not dist.is_initialized():
            dist.init_process_group(backend="nccl" if device_type == "cuda" else "gloo")
        return cls(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))

    def broadcast_parameters(self, module: torch.nn.Module) -> None:
        """Copy rank 0's parameters and buffers to every rank."""
        if not self.enabled:
            return
        import torch.distributed as dist

        for t in list(module.parameters()) + list(module.buffers()):
            dist.broadcast(t.data, src=0)

    def average_gradients(self, params: list[torch.nn.Parameter]) -> None:
        """All-reduce (mean) the gradients of ``params``; a missing gradient counts as zeros."""
        if not self.enabled:
            return
        import torch.distributed as dist

        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat)
        flat /= self.world_size
        offset = 0
        for p, g in zip(params, grads):
            n = g.numel()
            p.grad = flat[offset : offset + n].view_as(p).clone()
            offset += n

    def parameter_divergence(self, module: torch.nn.Module) -> float:
        """Largest |p - p on rank 0| over every parameter of ``module`` on every rank (0.0 alone).

        Checks the promise above: segmenter, discriminator and EMA teacher (a module whose
        parameters take no gradient) are bit-identical across ranks. A collective: every rank calls it.
        """
        if not self.enabled:
            return 0.0
        import torch.distributed as dist

        params = [p.detach().reshape(-1).float() for p in module.parameters()]
        if not params:
            return 0.0
        flat = torch.cat(params)
        ref = flat.clone()
        dist.broadcast(ref, src=0)
        worst = (flat - ref).abs().max().reshape(1)
        dist.all_reduce(worst, op=dist.ReduceOp.MAX)
        return float(worst.item())

    def barrier(self) -> None:
        if self.enabled:
            import torch.distributed as dist

            dist.barrier()

    def close(self) -> None:
        if self.enabled:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()
