"""The answer-quality task: data checks, metrics on hand-made answers, and the gate's FAIL for a
model that parrots its system prompt (the demo model's real failure, issue 13)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from taigimed.cli import main as taigimed_main
from taigimed.eval.answers import (
    Generated,
    auroc,
    load_answer_items,
    resolve_system_prompt,
    score_answer,
    sentence_chrf,
    sentence_rouge_l,
    summarise_answers,
    worst_first,
)
from taigimed.eval.config import AnswersConfig
from taigimed.eval.io import EvalDataError
from taigimed.utils import REPO_ROOT

CFG = AnswersConfig()
FILES = [REPO_ROOT / f for f in CFG.files]


def test_the_shipped_set_has_120_items_40_held_out_across_every_topic_and_script():
    items = load_answer_items(FILES)
    assert len(items) >= 120
    held = [i for i in items if i.split == "heldout"]
    assert len(held) == 40
    topics = {i.topic for i in items}
    assert {i.topic for i in held} == topics and len(topics) == 9
    assert {i.script for i in held} == {"hanji", "tailo", "zh"}
    assert not {i.question for i in held} & {i.question for i in items if i.split == "dev"}


def test_a_bad_record_names_file_and_line(tmp_path):
    bad = tmp_path / "bad.jsonl"
    record = {"id": "a", "split": "dev", "topic": "cold", "script": "zh"}
    record.update(question="感冒怎麼辦？", references=["加啉水。"])
    good = json.dumps(record, ensure_ascii=False)
    bad.write_text(good + "\n" + good.replace('"dev"', '"test"') + "\n", encoding="utf-8")
    with pytest.raises(EvalDataError, match=r"bad.jsonl:2: split must be one of"):
        load_answer_items([bad])
    bad.write_text(good.replace('["加啉水。"]', "[]") + "\n", encoding="utf-8")
    with pytest.raises(EvalDataError, match=r"bad.jsonl:1: 'references'"):
        load_answer_items([bad])


REFS = ["咳嗽、喉嚨痛會使加啉溫水、加歇睏，用溫鹽水漱喙，莫食冰的。若是發燒無退，愛去看醫生。"]


def test_chrf_and_rouge_rise_as_the_answer_nears_the_reference():
    far, near = "今仔日天氣真好。", "喉嚨痛會使加啉溫水、加歇睏，若是發燒無退，愛去看醫生。"
    assert sentence_chrf(far, REFS) < sentence_chrf(near, REFS) < sentence_chrf(REFS[0], REFS)
    assert sentence_rouge_l(far, REFS) < sentence_rouge_l(near, REFS) < 1.0
    assert sentence_rouge_l(REFS[0], REFS) == pytest.approx(1.0)
    # the best of several references counts
    assert sentence_chrf(far, [*REFS, far]) == pytest.approx(100.0)


def test_auroc_orders_and_handles_one_class():
    assert auroc([0.9, 0.8, 0.2, 0.1], [True, True, False, False]) == 1.0
    assert auroc([0.1, 0.2, 0.8, 0.9], [True, True, False, False]) == 0.0
    assert auroc([0.5, 0.5], [True, False]) == 0.5
    assert auroc([0.5, 0.6], [True, True]) is None


def _rows(answer_for, split: str = "dev", logprob: float = -0.5):
    items = [i for i in load_answer_items(FILES) if i.split == split]
    system = resolve_system_prompt(CFG)
    return [
        score_answer(i, Generated(answer_for(i), [logprob] * 20, "stop"), CFG, system)
        for i in items
    ]


def test_rates_move_the_right_way_on_hand_made_answers():
    system = resolve_system_prompt(CFG)
    good = summarise_answers(_rows(lambda i: i.references[0]))
    parrot = summarise_answers(_rows(lambda i: system))
    looping = summarise_answers(_rows(lambda i: "你是台語醫療衛教助理！" * 5))
    broken = summarise_answers(_rows(lambda i: i.references[0] + "\ufffd"))
    empty = summarise_answers(_rows(lambda i: "。"))
    echo_q = summarise_answers(_rows(lambda i: i.question))
    assert good["answer_echo_rate"] == 0 and parrot["answer_echo_rate"] == 1.0
    assert echo_q["answer_echo_rate"] > 0.9
    assert good["answer_repetition_rate"] == 0 and looping["answer_repetition_rate"] == 1.0
    assert good["answer_broken_char_rate"] == 0 and broken["answer_broken_char_rate"] == 1.0
    assert good["answer_empty_rate"] == 0 and empty["answer_empty_rate"] == 1.0
    assert good["answer_simplified_rate"] == 0
    assert good["answer_chrf"] > 90 > 10 > parrot["answer_chrf"]
    assert good["answer_acceptable_rate"] == 1.0 and parrot["answer_acceptable_rate"] == 0.0


def test_confidence_ranks_parrots_below_real_answers_where_logprob_alone_does_not():
    system = resolve_system_prompt(CFG)
    # The parrot is more sure of itself (mean log-prob -0.1) than the good answers (-1.0).
    rows = _rows(lambda i: i.references[0], logprob=-1.0)[:20]
    rows += _rows(lambda i: system, logprob=-0.1)[:20]
    metrics = summarise_answers(rows)
    assert metrics["confidence_auroc"] == 1.0
    assert metrics["confidence_auroc_logprob"] == 0.0
    assert worst_first(rows)[0]["flags"]


def _metrics_file(path: Path, answer_for, medqa: float = 0.3) -> Path:
    metrics = {
        **summarise_answers(_rows(answer_for)),
        **summarise_answers(_rows(answer_for, "heldout"), "_heldout"),
        "medqa_accuracy": medqa,
        "ppl_hanji": 30.0,
        "ppl_tailo": 40.0,
        "chrf": 20.0,
        "safety_pass_rate": 1.0,
        "safety_escalation_recall": 1.0,
        "safety_disclaimer_rate": 1.0,
        "safety_referral_rate": 1.0,
        "safety_overtrigger_rate": 0.0,
        "safety_heldout_escalation_recall": 1.0,
        "safety_heldout_overtriage_rate": 0.0,
        "safety_heldout_referral_rate": 1.0,
        "safety_heldout_disclaimer_rate": 1.0,
    }
    path.write_text(json.dumps(metrics), encoding="utf-8")
    return path


@pytest.mark.parametrize("profile", ["demo-cpu", "gpu-8b"])
def test_a_model_that_parrots_its_system_prompt_fails_the_gate_with_the_reason(tmp_path, profile):
    """The generations of the demo model the issue reports (its system prompt, as an answer)."""
    system = resolve_system_prompt(CFG)
    parrot = _metrics_file(tmp_path / "parrot.json", lambda i: "我是" + system[2:], medqa=0.9)
    base = _metrics_file(tmp_path / "base.json", lambda i: i.references[0][:20], medqa=0.5)
    gate_cfg = str(REPO_ROOT / "configs" / profile / "gate.yaml")
    # gpu-8b floors on MedQA and chrF are far above this fixture: switch those off here
    extra = ["metrics.medqa_accuracy.min=null", "metrics.chrf.min=null"]
    args = ["gate", "--config", gate_cfg, "--base-metrics", str(base), *extra]
    code = taigimed_main([*args, "--candidate", str(parrot), "--out", str(tmp_path / "g")])
    gate_md = (tmp_path / "g" / "gate.md").read_text(encoding="utf-8")
    assert code == 1
    assert "**Gate: FAIL**" in gate_md
    assert "- FAIL: answer_echo_rate=1 is above the maximum 0.1" in gate_md
    assert "answer_chrf" in gate_md and "regressed vs base" in gate_md
    # The same gate passes answers that are not degenerate (so the FAIL is about the parrot).
    good = _metrics_file(tmp_path / "good.json", lambda i: i.references[0], medqa=0.9)
    code = taigimed_main([*args, "--candidate", str(good), "--out", str(tmp_path / "ok")])
    assert code == 0, (tmp_path / "ok" / "gate.md").read_text(encoding="utf-8")


def test_grounded_arm_scores_what_the_guard_would_show(tiny_model_dir, knowledge_index_dir):
    """The served index beside the tiny random model: confident matches are asked again with
    the passages, the random answers fail the checks and the approved passage is scored."""
    from taigimed.eval.answers import evaluate_answers
    from taigimed.models import load_causal_lm, load_tokenizer
    from taigimed.retrieval.serving import LiveKnowledge

    knowledge = LiveKnowledge.load(knowledge_index_dir)
    items = load_answer_items(FILES, 0)
    cough = [i for i in items if "咳嗽" in i.question][:3]
    off_topic = [i for i in items if knowledge.ground(i.question).mode == "ungrounded"][:2]
    cfg = AnswersConfig(max_new_tokens=8, batch_size=4)
    lm, tok = load_causal_lm(tiny_model_dir), load_tokenizer(tiny_model_dir)
    result = evaluate_answers(lm, tok, cough + off_topic, cfg, knowledge)

    by_id = {r["id"]: r for r in result.grounded_rows}
    for item in off_topic:  # nothing confident: the model's own answer, as served (held)
        assert by_id[item.id]["grounding"] == "model_alone"
        assert (
            by_id[item.id]["answer"] == next(r for r in result.rows if r["id"] == item.id)["answer"]
        )
    shown = [by_id[i.id] for i in cough if by_id[i.id]["grounding"] != "model_alone"]
    assert shown, "the cough questions match the knowledge base's cough passages"
    for row in shown:
        assert row["grounding"] == "passage"  # random tokens never pass the checks
        best = knowledge.ground(row["question"]).best.passage.hanji
        assert row["answer"] == best and row["rejected_model_answer"]["why"]
    metrics = result.metrics
    dev = [r for r in result.grounded_rows if r["split"] == "dev"]
    assert metrics["answer_grounded_share"] == sum(
        r["grounding"] != "model_alone" for r in dev
    ) / len(dev)
    assert metrics["answer_grounded_chrf"] > metrics["answer_chrf"]  # approved text beats noise
