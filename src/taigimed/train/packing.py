"""Batches: the padded baseline and packed rows without cross-example attention.

Padded (baseline): one example per row, rows padded to the longest example of the batch. Simple,
but every pad token costs a full forward and backward.

Packed: examples are placed into rows of ``capacity`` tokens by first-fit decreasing, so rows
are nearly full. Packing alone would let a token attend to the examples packed before it
(a leak: the model would learn to condition one patient's answer on another's question), so
each row carries

* ``position_ids`` that restart at 0 for every example (rotary embeddings see each example at
  the positions it has when alone), and
* a 4D attention mask ``[batch, 1, L, L]`` that is causal *within* an example and blocks
  everything across examples (block-diagonal), and
* label -100 on the first token of every example, so no loss term predicts one example's first
  token from the previous example's last token.

With these three, each packed example's logits equal its logits when run alone (tested in
``tests/unit/test_train_packing.py``). The mask is built explicitly rather than relying on
transformers' detection of restarting ``position_ids`` so that the guarantee is visible here
and works with both the ``sdpa`` and ``eager`` attention paths on CPU.

Data order is a pure function of ``(seed, epoch)``: the examples are permuted with the seed,
packed, and the resulting rows shuffled with the seed; a resumed run recomputes the same plan
and skips to its cursor (the number of micro-batches already consumed).
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import torch

from taigimed.train.formatting import IGNORE_INDEX, TokenizedExample


@dataclass
class Batch:
    """Tensors for one forward pass plus the counts that throughput and loss need."""

    input_ids: torch.Tensor
    labels: torch.Tensor
    position_ids: torch.Tensor
    attention_mask: torch.Tensor  # 2D 0/1 (padded) or 4D boolean, True = may attend (packed)
    real_tokens: int  # tokens that are not padding
    target_tokens: int  # tokens with a loss term (assistant tokens, minus the first)

    def to(self, device: torch.device | str) -> Batch:
        return Batch(
            self.input_ids.to(device),
            self.labels.to(device),
            self.position_ids.to(device),
            self.attention_mask.to(device),
            self.real_tokens,
            self.target_tokens,
        )


def first_fit_decreasing(lengths: Sequence[int], capacity: int) -> list[list[int]]:
    """Group indices into bins whose lengths sum to at most ``capacity``.

    Longest first, each into the first bin with room: a classic bin-packing heuristic that
    uses at most 11/9 OPT + 1 bins. Ties keep input order, so a seeded input order gives a
    reproducible packing. Every length must already be <= capacity (examples are truncated
    to ``max_seq_len`` when tokenised).
    """
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    bins: list[list[int]] = []
    room: list[int] = []
    for index in order:
        length = lengths[index]
        if length > capacity:
            raise ValueError(f"example {index} has {length} tokens > capacity {capacity}")
        for b, free in enumerate(room):
            if length <= free:
                bins[b].append(index)
                room[b] -= length
                break
        else:
            bins.append([index])
            room.append(capacity - length)
    return bins


class DataPlan:
    """The deterministic sequence of micro-batches for a run, addressable by a cursor.

    ``rows(cursor)`` gives the example indices of each row of micro-batch number ``cursor``
    (counting across epochs). Nothing here depends on wall-clock or global RNG state.
    """

    def __init__(
        self, lengths: Sequence[int], batch_size: int, packing: bool, capacity: int, seed: int
    ):
        self.lengths = list(lengths)
        self.batch_size = batch_size
        self.packing = packing
        self.capacity = capacity
        self.seed = seed
        self.batches_per_epoch = len(self._epoch(0))

    @lru_cache(maxsize=2)  # noqa: B019  (a plan lives as long as its run)
    def _epoch(self, epoch: int) -> list[list[list[int]]]:
        rng = random.Random(self.seed * 1_000_003 + epoch)
        order = list(range(len(self.lengths)))
        rng.shuffle(order)
        if self.packing:
            bins = first_fit_decreasing([self.lengths[i] for i in order], self.capacity)
            rows = [[order[i] for i in sorted(b)] for b in bins]
            rng.shuffle(rows)
        else:
            rows = [[i] for i in order]
        return [rows[i : i + self.batch_size] for i in range(0, len(rows), self.batch_size)]

    def rows(self, cursor: int) -> list[list[int]]:
        epoch, index = divmod(cursor, self.batches_per_epoch)
        return self._epoch(epoch)[index]

    def steps_for(self, epochs: float, grad_accum: int) -> int:
        """Optimizer steps that cover ``epochs`` passes (at least one)."""
        return max(1, math.ceil(epochs * self.batches_per_epoch / grad_accum))

    def padding_fraction(self) -> float:
        """Share of pad tokens in epoch 0: the waste that packing removes."""
        real = padded = 0
        for batch in self._epoch(0):
            row_lengths = [sum(self.lengths[i] for i in row) for row in batch]
            real += sum(row_lengths)
            padded += max(row_lengths) * len(row_lengths)
        return 1.0 - real / padded if padded else 0.0


def collate_padded(
    examples: Sequence[TokenizedExample], pad_id: int, width: int | None = None
) -> Batch:
    """The baseline: one example per row, right-padded to the longest in the batch.

    ``width`` pads to a fixed length instead (fixed-shape padding, a reference in the bench).
    """
    width = width or max(len(e) for e in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    for row, example in enumerate(examples):
        n = len(example)
        ids[row, :n] = torch.tensor(example.input_ids)
        labels[row, :n] = torch.tensor(example.labels)
        mask[row, :n] = 1
    labels[:, 0] = IGNORE_INDEX  # never a target (nothing predicts it); keeps counts honest
    positions = torch.arange(width).unsqueeze(0).expand(len(examples), -1).contiguous()
    return Batch(ids, labels, positions, mask, int(mask.sum()), _targets(labels))


def collate_packed(rows: Sequence[Sequence[TokenizedExample]], pad_id: int) -> Batch:
    """Concatenate each row's examples; restart positions; block-diagonal causal 4D mask."""
    width = max(sum(len(e) for e in row) for row in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
    positions = torch.zeros((len(rows), width), dtype=torch.long)
    # Segment id per token: 0, 1, ... for examples, -1 for the padding tail.
    segments = torch.full((len(rows), width), -1, dtype=torch.long)
    real = 0
    for r, row in enumerate(rows):
        start = 0
        for s, example in enumerate(row):
            n = len(example)
            ids[r, start : start + n] = torch.tensor(example.input_ids)
            labels[r, start : start + n] = torch.tensor(example.labels)
            labels[r, start] = IGNORE_INDEX  # no loss across the example boundary
            positions[r, start : start + n] = torch.arange(n)
            segments[r, start : start + n] = s
            start += n
        real += start
        positions[r, start:] = torch.arange(width - start)  # padding attends only to padding
    return Batch(ids, labels, positions, block_causal_mask(segments), real, _targets(labels))


def block_causal_mask(segments: torch.Tensor) -> torch.Tensor:
    """Boolean ``[B, 1, L, L]``: True where query i may see key j (same segment and j <= i).

    transformers passes a 4D mask through unchanged; SDPA takes it as is (True = attend).
    """
    width = segments.shape[1]
    causal = torch.ones((width, width), dtype=torch.bool).tril()
    same = segments.unsqueeze(2) == segments.unsqueeze(1)
    return (same & causal).unsqueeze(1)


def additive_mask(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """The boolean 4D mask as the additive float mask that eager attention adds to its scores."""
    out = torch.zeros(mask.shape, dtype=dtype, device=mask.device)
    return out.masked_fill_(~mask, torch.finfo(dtype).min)


def _targets(labels: torch.Tensor) -> int:
    return int((labels != IGNORE_INDEX).sum())


def make_batch(
    plan: DataPlan, examples: Sequence[TokenizedExample], cursor: int, pad_id: int
) -> Batch:
    """Micro-batch ``cursor`` of ``plan``, collated for the plan's mode."""
    rows = [[examples[i] for i in row] for row in plan.rows(cursor)]
    if plan.packing:
        return collate_packed(rows, pad_id)
    return collate_padded([row[0] for row in rows], pad_id)
