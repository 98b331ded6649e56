"""The chain's fast detector: character n-grams of folded text, trained on train, tuned on dev."""

from __future__ import annotations

import json

import numpy as np
import pytest

from taigimed.triage import TriageChain, TriageConfig
from taigimed.triage.detector import WeightsError
from taigimed.triage.ngram import (
    CUE_GROUPS,
    CUE_VALUE,
    NgramDetector,
    NgramWeights,
    cues,
    fit_ngram,
    load_ngram_weights,
    ngrams,
)

EMERGENCY = ["救命伊昏去", "伊昏去毋應", "救命喘袂過", "伊喘袂過昏去"]
ROUTINE = ["今仔日天氣好", "我想欲散步", "天氣好欲散步", "今仔日我想食飯"]


@pytest.fixture
def toy():
    texts = EMERGENCY + ROUTINE
    y = np.array([0] * len(EMERGENCY) + [2] * len(ROUTINE))
    weights = fit_ngram(texts, y)
    weights.thresholds = {"escalate": 0.5, "refer": 0.5}
    return weights


def test_ngrams_are_taken_after_folding():
    # Full-width, tone marks and variant characters meet the form the rules use.
    assert ngrams("Ｔshuán") == ngrams("tshuan")
    assert "痛" in ngrams("心肝頭疼")
    assert "，" not in "".join(ngrams("痛，痛"))


def test_only_ngrams_seen_in_two_training_texts_become_features(toy):
    assert "救命" in toy.vocab and "昏去" in toy.vocab
    assert "毋應" not in toy.vocab  # one text holds it: a typo seen once is not a feature


def test_a_repeated_word_scores_as_if_said_once(toy):
    detector = NgramDetector(toy)
    once = detector.scores("救命")
    assert detector.scores("救命" * 3500) == pytest.approx(once)


def test_it_learns_the_emergency_side(toy):
    detector = NgramDetector(toy)
    hit = detector.scores("救命，伊昏去矣")
    assert detector.fires(hit, "escalate")
    assert not detector.fires(detector.scores("今仔日我想欲散步"), "escalate")
    assert sum(hit.values()) == pytest.approx(1.0)


def test_weights_survive_a_json_round_trip(toy):
    again = NgramWeights.from_json(json.loads(json.dumps(toy.to_json())))
    texts = ["救命伊昏去", "今仔日天氣好", "完全無關的字"]
    assert np.allclose(again.probabilities(texts), toy.probabilities(texts), atol=1e-3)
    assert again.thresholds == toy.thresholds


def test_missing_weights_are_a_clear_error(tmp_path):
    with pytest.raises(WeightsError, match="cannot load triage n-gram weights"):
        load_ngram_weights(tmp_path / "nope.json")


def test_the_chain_escalates_on_the_ngram_detector_and_it_can_be_switched_off(toy, tmp_path):
    path = tmp_path / "ngram.json"
    path.write_text(json.dumps(toy.to_json()), encoding="utf-8")
    text = "救命，伊昏去"
    on = TriageChain(TriageConfig(rules=False, ngram_weights=str(path)))
    result = on.triage(text)
    assert result.escalate and result.fired == ["ngram"], result
    assert result.scores["ngram:escalate"] >= 0.5
    assert not on.rules_only().triage(text).escalate
    off = TriageChain(TriageConfig(rules=False, ngram=False, ngram_weights=str(path)))
    assert off.ngram is None and not off.triage(text).escalate


def test_committed_ngram_detector_catches_an_emergency_the_rules_miss():
    """From the dev split's misses of the rules alone (the packaged weights, no embedder)."""
    chain = TriageChain()
    assert chain.detector is None and chain.ngram is not None  # the served default
    text = "發燒到40度，人昏昏沉沉，叫不太醒。"  # dev: sepsis / altered consciousness
    assert not chain.rules_only().triage(text).escalate
    assert chain.triage(text).fired == ["ngram"]
    assert not chain.triage("我想欲知影冬天愛按怎保養皮膚").escalate


def test_cue_groups_are_one_feature_each_and_old_weights_still_load(toy):
    assert cues("小可仔流血，硩一下就停矣") == {"cue:reassure"}
    assert "cue:info" in cues("電視咧講中風的預防")
    assert cues("救命伊昏去") == set()
    assert all(name in toy.vocab for name in CUE_GROUPS)  # fit_ngram adds them
    column = toy.vocab["cue:reassure"]
    assert toy.features(["小可仔頭痛"])[0, column] == pytest.approx(CUE_VALUE)
    # Weights written before cue groups existed hold no cue column and score as they did.
    legacy = toy.to_json()
    legacy["ngrams"] = {g: w for g, w in legacy["ngrams"].items() if g not in CUE_GROUPS}
    old = NgramWeights.from_json(legacy)
    assert old.features(["小可仔頭痛"]).shape[1] == len(toy.vocab) - len(CUE_GROUPS)
