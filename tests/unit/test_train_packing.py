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
    shared_prefix_length,
)
from taigimed.train.qlora import apply_lora, load_base_model
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
        assert batch.real_tokens == batch.computed_tokens <= 4 * 256  # ... of real tokens only


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
        shared_prefix=packed.shared_prefix,
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


def with_prefix(name: str, prefix: list[int], length: int, seed: int) -> TokenizedExample:
    """A chat-like example: a shared 'system prompt', then its own prompt and answer."""
    own = example(name, length, seed)
    return TokenizedExample(name, prefix + own.input_ids, [IGNORE_INDEX] * len(prefix) + own.labels)


SYSTEM = list(range(500, 530))  # 30 tokens every example below starts with


def test_shared_prefix_stops_before_the_first_target_and_needs_two_examples():
    a, b = with_prefix("a", SYSTEM, 20, 1), with_prefix("b", SYSTEM, 30, 2)
    assert shared_prefix_length([a, b]) == 30
    assert shared_prefix_length([a]) == 0  # nothing to share
    assert shared_prefix_length([a, example("c", 40, 3)]) == 0  # no common start
    # An example whose answer starts inside the common part: the prefix ends two tokens
    # before that target (the token after the prefix must carry no loss either).
    early = TokenizedExample("e", SYSTEM + [7] * 10, [IGNORE_INDEX] * 25 + SYSTEM[25:] + [7] * 10)
    assert shared_prefix_length([a, early]) == 24
    assert shared_prefix_length([a, early], minimum=25) == 0  # too short to be worth it


def test_shared_prefix_row_holds_the_prefix_once_and_keeps_every_target():
    examples = [with_prefix(n, SYSTEM, 10 + 5 * i, i) for i, n in enumerate("abc")]
    plain, shared = collate_packed([examples]), collate_packed([examples], share_prefix=True)
    assert shared.shared_prefix == 30 and shared.segment_lengths == (10, 15, 20)
    assert shared.computed_tokens == 30 + 45 == plain.computed_tokens - 60
    assert shared.real_tokens == plain.real_tokens == sum(len(e) for e in examples)
    assert shared.target_tokens == plain.target_tokens
    assert shared.position_ids[0].tolist()[28:33] == [28, 29, 30, 31, 32]
    assert shared.position_ids[0].tolist()[38:42] == [38, 39, 30, 31]  # b restarts after SYSTEM


def test_shared_prefix_logits_equal_each_example_run_alone(tiny_model_dir):
    """The no-leak proof for a shared prefix: each example sees the prefix and itself only."""
    model = load_base_model(tiny_model_dir).eval()
    examples = [with_prefix(n, SYSTEM, 20 + 7 * i, i) for i, n in enumerate("abc")]
    batch = collate_packed([examples[:2], examples[2:]], share_prefix=True)
    assert batch.shared_prefix == len(SYSTEM)
    with torch.no_grad():
        together = run_packed(model, batch)
        start = len(SYSTEM)
        for e in examples:
            alone = model(input_ids=torch.tensor([e.input_ids])).logits[0]
            torch.testing.assert_close(together[: len(SYSTEM)], alone[: len(SYSTEM)])
            own = len(e) - len(SYSTEM)
            torch.testing.assert_close(
                together[start : start + own], alone[len(SYSTEM) :], atol=1e-5, rtol=1e-5
            )
            start += own


def test_shared_prefix_gives_the_unshared_loss_and_lora_gradient(tiny_model_dir):
    """Backward sums over the one prefix copy exactly what the copies would get apart."""
    from taigimed.train.config import LoraSettings

    lora = LoraSettings(rank=4, alpha=8, dropout=0.0, target_modules=["q_proj", "v_proj"])
    torch.manual_seed(0)
    model = apply_lora(load_base_model(tiny_model_dir), lora)
    for name, param in model.named_parameters():  # LoRA B starts at 0: give it a value
        if "lora_B" in name:
            torch.nn.init.normal_(param, std=0.02)
    examples = [with_prefix(n, SYSTEM, 18 + 9 * i, i) for i, n in enumerate("abcd")]
    results = []
    for share in (False, True):
        model.zero_grad()
        loss = token_loss(model, collate_packed([examples], share_prefix=share))
        loss.backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
        results.append((loss.detach(), grads))
    (plain_loss, plain_grads), (shared_loss, shared_grads) = results
    torch.testing.assert_close(shared_loss, plain_loss, atol=1e-4, rtol=1e-5)
    assert plain_grads and all(g.abs().sum() > 0 for g in plain_grads.values())
    for name, grad in plain_grads.items():
        torch.testing.assert_close(shared_grads[name], grad, atol=1e-5, rtol=1e-4)


def test_shared_prefix_without_the_prefix_mask_would_leak(tiny_model_dir):
    """The check above can fail: running the shared row as plain segments changes logits."""
    model = load_base_model(tiny_model_dir).eval()
    examples = [with_prefix(n, SYSTEM, 20, i) for i, n in enumerate("ab")]
    batch = collate_packed([examples], share_prefix=True)
    with torch.no_grad():
        right = run_packed(model, batch)
        batch.segment_lengths = (batch.shared_prefix, *batch.segment_lengths)
        batch.shared_prefix = 0  # the examples no longer see the prefix
        wrong = run_packed(model, batch)
    assert not torch.allclose(right[30:], wrong[30:], atol=1e-3)
