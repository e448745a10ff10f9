"""Two-stream batch sampler: every batch has a fixed number of labeled and of unlabeled samples.

Deterministic by construction: batch ``b`` is a pure function of (seed, b), so a run resumed at
batch ``b`` sees exactly the batches an uninterrupted run would. Labeled cases are visited in
per-epoch random permutations (the labeled stream), unlabeled likewise (the unlabeled stream,
"iterated eternally" as in UA-MT's TwoStreamBatchSampler). Each yielded item is a
``(case_index, sample_seed)`` pair; the dataset draws its crop and augmentation from
``sample_seed``, so the result does not depend on DataLoader worker count or order.
"""

from __future__ import annotations

from typing import Iterator, Sequence

import numpy as np


class TwoStreamBatchSampler:
    """Batches of ``labeled_per_batch`` labeled + ``batch_size - labeled_per_batch`` unlabeled items.

    labeled / unlabeled: dataset indices. Batches ``start_batch`` .. ``num_batches - 1`` are yielded.
    ``rank`` / ``world_size`` shard each batch position across processes (distributed training):
    rank r takes every world_size-th stream position, so ranks never share a sample in a step.
    """

    def __init__(
        self,
        labeled: Sequence[int],
        unlabeled: Sequence[int],
        batch_size: int,
        labeled_per_batch: int,
        num_batches: int,
        seed: int = 0,
        start_batch: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ):
        if labeled_per_batch < 1 or labeled_per_batch > batch_size:
            raise ValueError(f"labeled_per_batch must be in [1, batch_size={batch_size}], got {labeled_per_batch}")
        if len(labeled) == 0:
            raise ValueError("no labeled cases: at least one case needs a label")
        if batch_size > labeled_per_batch and len(unlabeled) == 0:
            raise ValueError("batch asks for unlabeled samples but there are no unlabeled cases")
        self.labeled = np.asarray(labeled, dtype=np.int64)
        self.unlabeled = np.asarray(unlabeled, dtype=np.int64)
        self.batch_size = batch_size
        self.labeled_per_batch = labeled_per_batch
        self.num_batches = num_batches
        self.seed = seed
        self.start_batch = start_batch
        self.rank = rank
        self.world_size = world_size

    def _stream_item(self, pool: np.ndarray, stream: int, position: int) -> int:
        epoch, offset = divmod(position, len(pool))
        perm = np.random.default_rng([self.seed, stream, epoch]).permutation(len(pool))
        return int(pool[perm[offset]])

    def batch(self, b: int) -> list[tuple[int, int]]:
        """The (case_index, sample_seed) items of batch ``b`` for this rank."""
        items = []
        nl, nu = self.labeled_per_batch, self.batch_size - self.labeled_per_batch
        for j in range(nl):
            pos = (b * nl + j) * self.world_size + self.rank
            items.append(self._stream_item(self.labeled, 0, pos))
        for j in range(nu):
            pos = (b * nu + j) * self.world_size + self.rank
            items.append(self._stream_item(self.unlabeled, 1, pos))
        seeds = np.random.default_rng([self.seed, 2, b, self.rank]).integers(0, 2**31 - 1, size=len(items))
        return [(i, int(s)) for i, s in zip(items, seeds)]

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        for b in range(self.start_batch, self.num_batches):
            yield self.batch(b)

    def __len__(self) -> int:
        return max(0, self.num_batches - self.start_batch)
