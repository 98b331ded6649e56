"""Packing: rows fill up, data order is reproducible, and examples cannot see each other."""

from __future__ import annotations

import pytest
import torch

from taigimed.train.formatting import IGNORE_INDEX, TokenizedExample
from taigimed.train.packing import (
    DataPlan,
    collate_packed,
    collate_padded,
    first_fit_decreasing,
    make_batch,
)
from taigimed.train.qlora import load_base_model
from taigimed.train.recipe import token_loss


def example(name: str, length: int, seed: int) -> TokenizedExample:
    """Random ids; the second half is the 'assistant' part that carries loss."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(10, 1000, (length,), generator=g).tolist()
    labels = [IGNORE_INDEX] * (length // 2) + ids[length // 2 :]
    return TokenizedExample(name, ids, labels)


def test_first_fit_decreasing_respects_capacity_and_places_every_example_once():
    lengths = [50, 120, 7, 64, 64, 100, 3, 128, 90, 33]
    bins = first_fit_decreasing(lengths, capacity=128)
    assert sorted(i for b in bins for i in b) == list(range(len(lengths)))
    assert all(sum(lengths[i] for i in b) <= 128 for b in bins)
    # 659 tokens need at least 6 rows of 128; FFD finds that here.
    assert len(bins) == 6


def test_data_plan_is_a_pure_function_of_seed_and_cursor():
    lengths = [(i * 37) % 90 + 10 for i in range(40)]
    a = DataPlan(lengths, batch_size=3, packing=True, capacity=128, seed=7)
    b = DataPlan(lengths, batch_size=3, packing=True, capacity=128, seed=7)
    other = DataPlan(lengths, batch_size=3, packing=True, capacity=128, seed=8)
    cursors = range(3 * a.batches_per_epoch)  # three epochs
    assert [a.rows(c) for c in cursors] == [b.rows(c) for c in cursors]
    assert [a.rows(c) for c in cursors] != [other.rows(c) for c in cursors]
    # One epoch visits every example exactly once, in both modes.
    for packing in (True, False):
        plan = DataPlan(lengths, 3, packing, 128, seed=1)
        seen = [i for c in range(plan.batches_per_epoch) for row in plan.rows(c) for i in row]
        assert sorted(seen) == list(range(40))


def test_packing_removes_most_padding():
    lengths = [(i * 53) % 200 + 20 for i in range(64)]
    padded = DataPlan(lengths, 4, False, 256, seed=0)
    packed = DataPlan(lengths, 4, True, 256, seed=0)
    assert padded.padding_fraction() > 0.25
    assert packed.padding_fraction() < 0.1
    assert packed.batches_per_epoch < padded.batches_per_epoch


def test_packed_collation_restarts_positions_and_blocks_cross_example_attention():
    a, b = example("a", 5, 1), example("b", 3, 2)
    batch = collate_packed([[a, b], [b]], pad_id=0)
    assert batch.position_ids[0].tolist() == [0, 1, 2, 3, 4, 0, 1, 2]
    mask = batch.attention_mask[0, 0]
    assert mask[6, 5] and mask[6, 6] and not mask[6, 7]  # causal inside b
    assert not mask[5:, :5].any()  # b never sees a
    assert batch.labels[0, 5] == IGNORE_INDEX  # no loss term across the boundary
    assert batch.real_tokens == 11
    assert batch.input_ids[1, 3:].eq(0).all() and batch.labels[1, 3:].eq(IGNORE_INDEX).all()


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_packed_logits_equal_each_example_run_alone(tiny_model_dir, attn):
    """The no-leak proof: packing changes nothing any example's tokens compute."""
    model = load_base_model(tiny_model_dir, attn_implementation=attn).eval()
    examples = [example("a", 40, 1), example("b", 25, 2), example("c", 50, 3)]
    packed = collate_packed([examples], pad_id=0)
    with torch.no_grad():
        mask = packed.attention_mask
        if attn == "eager":
            from taigimed.train.packing import additive_mask

            mask = additive_mask(mask, torch.float32)
        together = model(
            input_ids=packed.input_ids, attention_mask=mask, position_ids=packed.position_ids
        ).logits[0]
        start = 0
        for e in examples:
            alone = model(input_ids=torch.tensor([e.input_ids])).logits[0]
            torch.testing.assert_close(
                together[start : start + len(e)], alone, atol=1e-5, rtol=1e-5
            )
            start += len(e)


def test_packed_and_padded_losses_agree_on_the_same_examples(tiny_model_dir):
    model = load_base_model(tiny_model_dir).eval()
    examples = [example("a", 40, 1), example("b", 25, 2), example("c", 50, 3)]
    with torch.no_grad():
        packed = token_loss(model, collate_packed([examples], pad_id=0))
        padded = token_loss(model, collate_padded(examples, pad_id=0))
    torch.testing.assert_close(packed, padded, atol=1e-4, rtol=1e-5)


def test_make_batch_reports_real_tokens_without_padding():
    examples = [example(str(i), 10 + 7 * i, i) for i in range(6)]
    plan = DataPlan([len(e) for e in examples], 2, False, 128, seed=0)
    total = sum(make_batch(plan, examples, c, 0).real_tokens for c in range(3))
    assert total == sum(len(e) for e in examples)
