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


def test_packing_removes_all_padding():
    lengths = [(i * 53) % 200 + 20 for i in range(64)]
    examples = [example(str(i), n, i) for i, n in enumerate(lengths)]
    padded = DataPlan(lengths, 4, False, 256, seed=0)
    packed = DataPlan(lengths, 4, True, 256, seed=0)
    assert padded.padding_fraction() > 0.25
    assert packed.batches_per_epoch < padded.batches_per_epoch
    for cursor in range(packed.batches_per_epoch):
        batch = make_batch(packed, examples, cursor, pad_id=0)
        assert batch.input_ids.shape[0] == 1  # one row ...
        assert batch.real_tokens == batch.input_ids.numel() <= 4 * 256  # ... of real tokens only


def test_packed_collation_restarts_positions_and_records_each_example():
    a, b, c = example("a", 5, 1), example("b", 3, 2), example("c", 4, 3)
    batch = collate_packed([[a, b], [c]])
    assert batch.segment_lengths == (5, 3, 4)
    assert batch.position_ids[0].tolist() == [0, 1, 2, 3, 4, 0, 1, 2, 0, 1, 2, 3]
    assert batch.input_ids[0].tolist() == a.input_ids + b.input_ids + c.input_ids
    # No loss term predicts an example's first token (from the previous example's last).
    assert batch.labels[0, [0, 5, 8]].eq(IGNORE_INDEX).all()
    assert batch.real_tokens == 12 and batch.attention_mask.eq(1).all()


def run_packed(model, packed):
    """Logits of a packed row, with the segment lengths that keep examples apart."""
    return model(
        input_ids=packed.input_ids,
        attention_mask=packed.attention_mask,
        position_ids=packed.position_ids,
        segment_lengths=packed.segment_lengths,
    ).logits[0]


def test_packed_logits_equal_each_example_run_alone(tiny_model_dir):
    """The no-leak proof: packing changes nothing any example's tokens compute."""
    model = load_base_model(tiny_model_dir).eval()
    examples = [example("a", 40, 1), example("b", 25, 2), example("c", 50, 3)]
    with torch.no_grad():
        together = run_packed(model, collate_packed([examples[:2], examples[2:]]))
        start = 0
        for e in examples:
            alone = model(input_ids=torch.tensor([e.input_ids])).logits[0]
            torch.testing.assert_close(
                together[start : start + len(e)], alone, atol=1e-5, rtol=1e-5
            )
            start += len(e)


def test_without_segment_lengths_the_same_row_would_leak(tiny_model_dir):
    """The check above can fail: plain causal attention over the row mixes examples."""
    model = load_base_model(tiny_model_dir).eval()
    first, second = example("a", 40, 1), example("b", 25, 2)
    packed = collate_packed([[first, second]])
    with torch.no_grad():
        leaky = model(input_ids=packed.input_ids, position_ids=packed.position_ids).logits[0]
        alone = model(input_ids=torch.tensor([second.input_ids])).logits[0]
    assert not torch.allclose(leaky[40:], alone, atol=1e-3)


def test_packed_batch_with_a_model_without_packed_attention_fails_clearly(tiny_model_dir):
    model = load_base_model(tiny_model_dir, attn_implementation="eager")
    batch = collate_packed([[example("a", 10, 1), example("b", 12, 2)]])
    with pytest.raises(ValueError, match=r"per-example attention.*packing=false"):
        token_loss(model, batch)


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_packed_and_padded_losses_agree_on_the_same_examples(tiny_model_dir, attn):
    """Same examples, same summed loss, whichever batching (eager: the padded baseline)."""
    packed_model = load_base_model(tiny_model_dir).eval()
    padded_model = load_base_model(tiny_model_dir, attn_implementation=attn).eval()
    examples = [example("a", 40, 1), example("b", 25, 2), example("c", 50, 3)]
    with torch.no_grad():
        packed = token_loss(packed_model, collate_packed([examples]))
        padded = token_loss(padded_model, collate_padded(examples, pad_id=0))
    torch.testing.assert_close(packed, padded, atol=1e-4, rtol=1e-5)


def test_make_batch_reports_real_tokens_without_padding():
    examples = [example(str(i), 10 + 7 * i, i) for i in range(6)]
    plan = DataPlan([len(e) for e in examples], 2, False, 128, seed=0)
    total = sum(make_batch(plan, examples, c, 0).real_tokens for c in range(3))
    assert total == sum(len(e) for e in examples)
