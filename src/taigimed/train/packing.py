"""Batches: the padded baseline, and packed batches without cross-example attention.

Padded (baseline): one example per row, rows padded to the longest example of the batch. Simple,
but every pad token costs a full forward and backward.

Packed: examples are grouped into bins of ``capacity`` tokens by first-fit decreasing, and a
micro-batch of ``batch_size`` bins is flattened into ONE row with no padding at all (the
micro-batch keeps the same token budget as ``batch_size`` padded rows of ``max_seq_len``).
Putting examples side by side would let a token attend to the examples before it (a leak: the
model would learn to condition one patient's answer on another's question), so a packed batch
carries

* ``segment_lengths``, the length of every example in the row, which the attention function
  :func:`packed_sdpa_attention` uses to run causal attention *per example* (each example
  attends only to itself, and costs ``n^2`` rather than a share of ``(sum n)^2``),
* ``position_ids`` that restart at 0 for every example (rotary embeddings see each example at
  the positions it has when alone), and
* label -100 on the first token of every example, so no loss term predicts one example's first
  token from the previous example's last token.

In a sliding-window layer (Gemma 3: 512 tokens in five of every six layers) per-example causal
attention alone would let an example longer than the window see past it; such a segment also
gets the sliding band, so the window holds inside a packed row exactly as alone.

With these three, each packed example's logits equal its logits when run alone (tested in
``tests/unit/test_train_packing.py``, which also shows that plain causal attention over the
same row does leak). Per-example attention is what makes packing pay on CPU: a block-diagonal
4D mask over the whole row gives the same numbers but computes (and masks away) the full
``L x L`` attention and keeps SDPA off its fused causal kernel; measured in
``bench/train_throughput.py`` and docs/training.md.

Shared prefix (``share_prefix``, on by default): chat SFT examples usually open with the same
system prompt and role header -- in the demo data 94 tokens, of a median 178 in stage 2. In a
causal model a common prefix computes the same hidden states in every example, so a packed row
holds it ONCE, followed by each example's remaining tokens; each example's attention sees the
prefix plus itself (a lower-right causal mask), and positions continue from the prefix's end.
Every example's logits are those it has alone, and because backward sums the gradient of every
use of the one prefix copy, the gradient equals the unshared row's (tested, dropout off; with
LoRA dropout on, the examples share the prefix's one dropout draw instead of each drawing its
own). The prefix ends before any target token, so no loss term is lost or moved. Throughput is
still counted in the examples' own tokens: the same data trained in less compute.

Data order is a pure function of ``(seed, epoch)``: the examples are permuted with the seed,
packed, and the resulting bins shuffled with the seed; a resumed run recomputes the same plan
and skips to its cursor (the number of micro-batches already consumed).
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Any

import torch
import torch.nn.functional as F

from taigimed.train.formatting import IGNORE_INDEX, TokenizedExample

# The attention implementation every training model is loaded with (see ``load_base_model``):
# SDPA for ordinary batches, per-example causal SDPA for packed ones.
PACKED_SDPA = "taigimed_packed_sdpa"


@dataclass
class Batch:
    """Tensors for one forward pass plus the counts that throughput and loss need."""

    input_ids: torch.Tensor
    labels: torch.Tensor
    position_ids: torch.Tensor
    attention_mask: torch.Tensor  # 2D 0/1 (1 = real token)
    real_tokens: int  # the examples' own tokens (no padding; a shared prefix counted per example)
    target_tokens: int  # tokens with a loss term (assistant tokens, minus the first)
    # Packed batches only: the length of each example in the single row, in order (without
    # the shared prefix, when there is one).
    segment_lengths: tuple[int, ...] | None = None
    # Packed batches only: tokens at the start of the row that every example shares.
    shared_prefix: int = 0

    @property
    def computed_tokens(self) -> int:
        """Positions the model actually runs: padding included, a shared prefix once."""
        return self.input_ids.numel()

    def to(self, device: torch.device | str) -> Batch:
        """The same batch with its tensors on ``device`` (every other field kept as is)."""
        return replace(
            self,
            input_ids=self.input_ids.to(device),
            labels=self.labels.to(device),
            position_ids=self.position_ids.to(device),
            attention_mask=self.attention_mask.to(device),
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
        """Share of pad tokens in epoch 0: the waste that packing removes (packed: none)."""
        if self.packing:
            return 0.0  # each micro-batch is one row of exactly its examples' tokens
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


# Shorter common prefixes are not worth a second attention call per example.
MIN_SHARED_PREFIX = 16


def shared_prefix_length(
    examples: Sequence[TokenizedExample], minimum: int = MIN_SHARED_PREFIX
) -> int:
    """Tokens every example starts with that a packed row may hold once (0: don't share).

    The prefix stops before the first target of any example and one token earlier still, so
    that the token after it carries no loss either (in the row it follows another example's
    last token, not the prefix). Every example keeps at least one token of its own.
    """
    if len(examples) < 2:
        return 0
    first = examples[0].input_ids
    limit = min(len(e) for e in examples) - 1
    for example in examples:
        targets = (i for i, label in enumerate(example.labels) if label != IGNORE_INDEX)
        limit = min(limit, next(targets, len(example)) - 1)
    length = 0
    while length < limit and all(e.input_ids[length] == first[length] for e in examples):
        length += 1
    return length if length >= minimum else 0


def collate_packed(rows: Sequence[Sequence[TokenizedExample]], share_prefix: bool = False) -> Batch:
    """Flatten every bin's examples into one row; restart positions; record segment lengths.

    With ``share_prefix`` the examples' common prefix (:func:`shared_prefix_length`) opens the
    row once and each example contributes only the tokens after it.
    """
    examples = [example for row in rows for example in row]
    prefix = shared_prefix_length(examples) if share_prefix else 0
    ids: list[int] = list(examples[0].input_ids[:prefix])
    labels: list[int] = [IGNORE_INDEX] * prefix
    positions: list[int] = list(range(prefix))
    for example in examples:
        ids += example.input_ids[prefix:]
        # No loss across the boundary: an example's first own token follows another's last.
        labels += [IGNORE_INDEX, *example.labels[prefix + 1 :]]
        positions += range(prefix, len(example))
    label_tensor = torch.tensor([labels])
    return Batch(
        input_ids=torch.tensor([ids]),
        labels=label_tensor,
        position_ids=torch.tensor([positions]),
        attention_mask=torch.ones((1, len(ids)), dtype=torch.long),
        real_tokens=sum(len(e) for e in examples),
        target_tokens=_targets(label_tensor),
        segment_lengths=tuple(len(e) - prefix for e in examples),
        shared_prefix=prefix,
    )


def packed_sdpa_attention(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    segment_lengths: Sequence[int] | None = None,
    shared_prefix: int = 0,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """transformers attention function: causal SDPA within each segment of a packed row.

    Without ``segment_lengths`` (ordinary padded batches, evaluation, generation) it is
    exactly transformers' ``sdpa``. With them, the single row ``[1, heads, sum(n), dim]`` is
    split into its examples and each runs causal SDPA on its own: no token can see another
    example, and the ``is_causal`` path needs no mask tensor at all. With a ``shared_prefix``
    of ``p`` tokens the row is ``[prefix, example 1, example 2, ...]``: the prefix attends to
    itself, and each example's ``n`` queries to the prefix's keys and its own under a
    lower-right causal ``n x (p + n)`` mask. In a sliding-window layer (Gemma 3 passes
    ``sliding_window``) a segment longer than the window gets the sliding band as well, so a
    packed example never sees further back than it would alone.
    """
    from transformers.integrations.sdpa_attention import repeat_kv, sdpa_attention_forward

    if segment_lengths is None:
        return sdpa_attention_forward(
            module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs
        )
    lengths = [shared_prefix, *segment_lengths] if shared_prefix else list(segment_lengths)
    if query.shape[0] != 1 or sum(lengths) != query.shape[2]:
        raise ValueError(
            f"packed attention wants one row of shared_prefix + sum(segment_lengths)="
            f"{sum(lengths)} tokens, got query shape {tuple(query.shape)}"
        )
    groups = getattr(module, "num_key_value_groups", 1)
    key, value = repeat_kv(key, groups), repeat_kv(value, groups)
    queries, keys, values = (t.split(lengths, dim=2) for t in (query, key, value))
    window = kwargs.get("sliding_window") or None  # a sliding layer's span (Gemma 3), else None
    outputs = []
    for index, (q, k, v) in enumerate(zip(queries, keys, values, strict=True)):
        mask = None
        offset = 0  # the first query's index among this segment's keys
        if shared_prefix and index > 0:  # an example after the prefix: see prefix + itself
            k, v = torch.cat([keys[0], k], dim=2), torch.cat([values[0], v], dim=2)
            offset = shared_prefix
        n = q.shape[2]
        if offset or (window is not None and n > window):
            mask = _segment_mask(n, offset, window, q.device)
        outputs.append(
            F.scaled_dot_product_attention(
                q, k, v, attn_mask=mask, dropout_p=dropout, scale=scaling, is_causal=mask is None
            )
        )
    return torch.cat(outputs, dim=2).transpose(1, 2).contiguous(), None


def _segment_mask(n: int, offset: int, window: int | None, device: torch.device) -> torch.Tensor:
    """``n x (offset + n)`` boolean mask: query ``i`` (at key index ``offset + i``) sees key
    ``j`` when ``j <= offset + i`` and, in a sliding layer, ``offset + i - j < window`` (the
    band transformers' sliding-window masks use), so an example longer than the window attends
    within the window exactly as it would alone."""
    query_at = torch.arange(n, device=device)[:, None] + offset
    key_at = torch.arange(offset + n, device=device)[None, :]
    mask = key_at <= query_at
    if window is not None:
        mask &= query_at - key_at < window
    return mask


def register_packed_attention() -> str:
    """Make :data:`PACKED_SDPA` a valid ``attn_implementation`` (idempotent); return its name.

    Its mask function is SDPA's, so ordinary batches get exactly the masks ``sdpa`` gets; a
    packed batch passes an all-ones 2D mask, for which SDPA's mask function builds nothing.
    """
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(PACKED_SDPA, packed_sdpa_attention)
    AttentionMaskInterface.register(PACKED_SDPA, sdpa_mask)
    return PACKED_SDPA


def _targets(labels: torch.Tensor) -> int:
    return int((labels != IGNORE_INDEX).sum())


def make_batch(
    plan: DataPlan,
    examples: Sequence[TokenizedExample],
    cursor: int,
    pad_id: int,
    share_prefix: bool = False,
) -> Batch:
    """Micro-batch ``cursor`` of ``plan``, collated for the plan's mode."""
    rows = [[examples[i] for i in row] for row in plan.rows(cursor)]
    if plan.packing:
        return collate_packed(rows, share_prefix)
    return collate_padded([row[0] for row in rows], pad_id)
