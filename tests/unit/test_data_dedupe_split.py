"""Duplicates, deterministic splits and the stage-2 replay fraction."""

from __future__ import annotations

import random
from dataclasses import dataclass

import pytest

from taigimed.data.dedupe import DuplicateIndex, jaccard, shingles
from taigimed.data.normalise import dedupe_key
from taigimed.data.split import build_stage2_mix, holdout, replay_count, split_train_val


def test_exact_and_near_duplicates_are_found_and_distinct_texts_are_not():
    index = DuplicateIndex(ngram=3, threshold=0.8, min_chars=12)
    index.add("q1", "依台灣成人的標準，健康體位的 BMI 範圍為何？18.5 到 24")
    assert index.match("依台灣成人的標準, 健康體位的  BMI 範圍為何? 18.5到24 ")[0] == "exact"
    stem = "一位六十五歲男性突然胸口劇痛並冒冷汗，持續超過{}十分鐘，下列處置何者最優先？"
    index.add("q2", stem.format("二"))
    near = index.match(stem.format("三"))
    assert near is not None and near[0] == "near" and near[1] == "q2" and near[2] >= 0.8
    assert index.match("下列何者是糖尿病典型的三多症狀？吃多喝多尿多") is None


def test_short_texts_are_compared_exactly_only():
    index = DuplicateIndex(min_chars=12)
    index.add("w1", "止瀉劑")
    assert index.match("止瀉藥") is None
    assert index.match("止瀉劑")[0] == "exact"


def test_prefix_filter_finds_every_pair_a_brute_force_scan_finds():
    rng = random.Random(0)
    alphabet = "血壓糖尿病發燒咳嗽頭痛腹肚疼藥仔醫生急診心臟肺肝腎"
    base = ["".join(rng.choice(alphabet) for _ in range(40)) for _ in range(60)]
    texts = base + [t[:-3] + "病人" for t in base[:20]] + [t[5:] for t in base[20:30]]
    index = DuplicateIndex(threshold=0.7).fit(texts)
    found = {}
    for i, t in enumerate(texts):
        hit = index.match(t)
        if hit is None:
            index.add(str(i), t)
        else:
            found[i] = hit
    grams = [shingles(dedupe_key(t), 3) for t in texts]
    kept: list[int] = []
    brute = set()
    for i in range(len(texts)):
        if any(
            dedupe_key(texts[i]) == dedupe_key(texts[j]) or jaccard(grams[i], grams[j]) >= 0.7
            for j in kept
        ):
            brute.add(i)
        else:
            kept.append(i)
    assert set(found) == brute
    assert len(brute) >= 25


@dataclass
class Item:
    id: str


def test_holdout_depends_on_seed_and_ids_not_on_input_order():
    items = [Item(f"id{i:03d}") for i in range(100)]
    held, rest = holdout(items, 10, seed=7)
    held_shuffled, _ = holdout(list(reversed(items)), 10, seed=7)
    assert [x.id for x in held] == [x.id for x in held_shuffled]
    assert len(rest) == 90 and not {x.id for x in held} & {x.id for x in rest}
    assert [x.id for x in holdout(items, 10, seed=8)[0]] != [x.id for x in held]


def test_split_train_val_keeps_at_least_one_val_item():
    train, val = split_train_val([Item("a"), Item("b"), Item("c")], 0.05, seed=1)
    assert len(val) == 1 and len(train) == 2


@pytest.mark.parametrize("n_taigi", [1, 7, 40, 609, 5000])
@pytest.mark.parametrize("fraction", [0.0, 0.1, 0.2, 0.5])
@pytest.mark.parametrize("n_stage1", [3, 1000])
def test_replay_fraction_holds_within_one_point(n_taigi, fraction, n_stage1):
    taigi = [{"id": f"t{i}", "source": "taigi"} for i in range(n_taigi)]
    stage1 = [{"id": f"m{i}", "source": "medqa"} for i in range(n_stage1)]
    mixed, n_replay, repeated = build_stage2_mix(taigi, stage1, fraction, seed=3)
    assert n_replay == replay_count(n_taigi, fraction)
    assert sum(ex["id"].startswith("replay:") for ex in mixed) == n_replay
    assert len({ex["id"] for ex in mixed}) == len(mixed)  # repeats get distinct ids
    assert repeated == max(0, n_replay - n_stage1)
    if n_taigi >= 40:  # with tiny sets the rounding step itself is more than a point
        assert abs(n_replay / len(mixed) - fraction) <= 0.01


def test_stage2_mix_is_shuffled_and_reproducible():
    taigi = [{"id": f"t{i}"} for i in range(100)]
    stage1 = [{"id": f"m{i}"} for i in range(100)]
    a, _, _ = build_stage2_mix(taigi, stage1, 0.2, seed=3)
    b, _, _ = build_stage2_mix(taigi, stage1, 0.2, seed=3)
    assert a == b
    assert [ex["id"] for ex in a[:25]] != [ex["id"] for ex in taigi[:25]]
