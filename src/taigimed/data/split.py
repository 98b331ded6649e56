"""Deterministic splits and the stage-2 replay mix.

Splits depend only on the seed and the record ids (content hashes), not on file order, so
reordering an input file does not move a question from eval into train.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import TypeVar

T = TypeVar("T")


def seeded_order(items: Sequence[T], seed: int, key=lambda x: x.id) -> list[T]:
    """Items sorted by id, then shuffled with ``seed``: the same order on every machine."""
    ordered = sorted(items, key=key)
    random.Random(seed).shuffle(ordered)
    return ordered


def holdout(
    items: Sequence[T], size: int, seed: int, key=lambda x: x.id
) -> tuple[list[T], list[T]]:
    """``(held_out, rest)`` with ``min(size, len(items))`` items held out by seed."""
    ordered = seeded_order(items, seed, key)
    return ordered[:size], ordered[size:]


def split_train_val(
    items: Sequence[T], fraction: float, seed: int, key=lambda x: x.id
) -> tuple[list[T], list[T]]:
    """``(train, val)``: ``round(n * fraction)`` items for val, at least one when n > 1."""
    n_val = round(len(items) * fraction)
    if fraction > 0 and n_val == 0 and len(items) > 1:
        n_val = 1
    val, train = holdout(items, n_val, seed, key)
    return train, val


def replay_count(n_taigi: int, fraction: float) -> int:
    """Replayed examples R so that R / (n_taigi + R) = fraction (rounded to the nearest)."""
    if fraction <= 0 or n_taigi == 0:
        return 0
    return round(fraction * n_taigi / (1.0 - fraction))


def build_stage2_mix(
    taigi: Sequence[dict], stage1_train: Sequence[dict], fraction: float, seed: int
) -> tuple[list[dict], int, int]:
    """Stage-2 train: Taigi examples plus replayed stage-1 examples, shuffled with ``seed``.

    ``fraction`` is the share of the result that is replay: replay / (taigi + replay). When
    stage 1 has fewer examples than that needs, stage-1 examples are repeated (each copy gets a
    ``#k`` id suffix) so that the fraction still holds. Replayed ids start with ``replay:``.
    Returns ``(examples, n_replay, n_repeated)``.
    """
    wanted = replay_count(len(taigi), fraction)
    replay: list[dict] = []
    repeated = 0
    if wanted and stage1_train:
        pool = seeded_order(stage1_train, seed, key=lambda ex: ex["id"])
        for i in range(wanted):
            original = pool[i % len(pool)]
            copy_no = i // len(pool)
            suffix = f"#{copy_no}" if copy_no else ""
            repeated += bool(copy_no)
            replay.append({**original, "id": f"replay:{original['id']}{suffix}"})
    mixed = list(taigi) + replay
    random.Random(seed).shuffle(mixed)
    return mixed, len(replay), repeated
