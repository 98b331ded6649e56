"""The triage reader: how the chain arbitrates with it, how its bars are chosen on dev, and a
real LoRA round trip on ``tiny-random-gemma3`` (fit, save, load, the same probabilities).

The arbitration tests give the chain a reader with precomputed scores: a text missing from them
raises ``KeyError``, so a test also fails if the chain asks the reader about a request nobody
flagged (the reader is the slow part)."""

from __future__ import annotations

import json

import pytest

from taigimed.eval.safety import SafetyItem, chain_parts
from taigimed.guardrails import GuardPolicy, softened
from taigimed.serve import decision
from taigimed.serve.config import PolicySettings
from taigimed.triage import TriageChain, TriageConfig
from taigimed.triage.chain import reader_texts
from taigimed.triage.normalise import fold
from taigimed.triage.reader import (
    CLEAR_FLAG,
    READER_FILE,
    UNREFER_FLAG,
    Reader,
    ReaderFiles,
    ReaderNotTrained,
    ReaderTraining,
    fit_reader,
    load_reader_model,
    save_reader,
)
from taigimed.triage.train import READER_REFER_GRID, dev_halves, tune_reader_on_dev

FAINTED = "阿爸拄才昏倒"  # only a mention-only word (昏倒): the rules escalate it alone
FRAMED = "我昨昏看電視講中風的預防"  # a mention inside an information frame: rules clear it
SYMPTOM = "阿母講話大舌，喙歪一爿"  # symptom phrases
WEATHER = "今仔日天氣真好"
STORAGE = "阿公的藥仔愛囥冰箱無？"  # names a medicine, asks nothing a pharmacist must answer
REFILL = "阿公欲去領慢性病的處方，禮拜六藥局有開無？"  # a referral rule's word (處方), routine
IDIOM = "爬山喘甲欲死，歇一睏就好矣"  # a symptom phrase with a reassurance cue: softened
SOFT_EMERGENCY = "阿爸胸坎痛，冷汗直直流，有點喘"  # softened too (有點): the reader must keep it

ESCALATE = (0.9, 0.05, 0.05)
REFER = (0.05, 0.9, 0.05)
ROUTINE = (0.02, 0.03, 0.95)


def chain_with(
    scored: dict[str, tuple[float, ...]], ngram: bool = False, clear: float = 0.02
) -> TriageChain:
    flags = {"ngram:escalate": 0.99, CLEAR_FLAG: clear, UNREFER_FLAG: 0.95}
    files = ReaderFiles({"escalate": 0.5, "refer": 0.5}, flags)
    return TriageChain(TriageConfig(ngram=ngram), reader=Reader(files, scored=scored))


def test_a_symptom_phrase_escalates_without_asking_the_reader():
    result = chain_with({}).triage(SYMPTOM)  # no scores: asking the reader would raise
    assert result.escalate and result.fired == ["rules"]


def test_softened_means_a_rule_hit_beside_a_frame_or_a_reassurance_cue():
    assert softened(IDIOM, fold=fold) and softened(SOFT_EMERGENCY, fold=fold)
    assert softened("阮阿嬤五年前中風過，這馬倒手較無力", fold=fold)  # a frame beside each hit
    assert not softened(SYMPTOM, fold=fold) and not softened(WEATHER, fold=fold)


def test_the_reader_clears_a_softened_symptom_phrase_only_when_near_certain():
    cleared = chain_with({IDIOM: (0.01, 0.0, 0.99)}).triage(IDIOM)
    assert not cleared.escalate and cleared.fired == ["reader:cleared"]
    unsure = chain_with({SOFT_EMERGENCY: (0.03, 0.0, 0.97)}).triage(SOFT_EMERGENCY)
    assert unsure.escalate and unsure.fired == ["rules"]  # 0.03 is above the 0.02 bar
    kept = chain_with({SOFT_EMERGENCY: ESCALATE}).triage(SOFT_EMERGENCY)
    assert kept.escalate and kept.categories == ["chest_pain"]


def test_a_reader_without_a_clearing_bar_never_clears_a_symptom_phrase():
    # reader.json written before the bar existed: 0 means never
    assert chain_with({IDIOM: (0.0, 0.0, 1.0)}, clear=0.0).triage(IDIOM).escalate


def test_the_reader_reads_each_turn_so_an_early_emergency_stays_one():
    early = "阿公今仔暗怪怪，叫伊攏戇戇看"  # no rule hit; the reader, alone, calls it an emergency
    later = "好，多謝。欲紮健保卡無？"  # a harmless question after it
    joined, *alone = reader_texts([early, later])
    assert alone == [early, later]
    scored = {joined: (0.6, 0.0, 0.4), early: (0.97, 0.0, 0.03), later: ROUTINE}
    chain = chain_with(scored, ngram=True)
    assert chain.reader is not None
    chain.reader.files.flags["ngram:escalate"] = 0.0  # flagged, so the reader reads it
    chain.reader.thresholds["escalate"] = 0.8  # the joined text alone (0.6) would not escalate
    result = chain.triage_turns([early, later])
    assert result.escalate and result.scores["reader:escalate"] == 0.97
    chain.cfg.reader_turns = False
    assert not chain.triage_turns([early, later]).escalate


def test_a_referral_rule_hit_the_reader_is_sure_is_routine_is_answered():
    assert TriageChain(TriageConfig(ngram=False)).triage(REFILL).refer  # the rules refer it
    answered = chain_with({REFILL: (0.0, 0.02, 0.98)}).triage(REFILL)
    assert not answered.refer and answered.fired == ["reader:unreferred"]
    unsure = chain_with({REFILL: (0.0, 0.1, 0.9)}).triage(REFILL)  # 0.9 is under the 0.95 bar
    assert unsure.refer and unsure.fired == ["rules:refer"]
    chain = chain_with({REFILL: (0.0, 0.0, 1.0)})
    assert chain.reader is not None
    del chain.reader.files.flags[UNREFER_FLAG]  # a reader without the bar never answers it
    assert chain.triage(REFILL).refer


def test_the_reader_confirms_or_clears_a_mention_only_rule_hit():
    confirmed = chain_with({FAINTED: ESCALATE}).triage(FAINTED)
    assert confirmed.escalate and confirmed.fired == ["rules"]
    assert confirmed.categories == ["unconscious"]
    cleared = chain_with({FAINTED: ROUTINE}).triage(FAINTED)
    assert not cleared.escalate and cleared.fired == ["reader:cleared"]
    assert cleared.as_triage().categories == []  # nothing logged as a red flag


def test_a_framed_mention_still_goes_to_the_reader():
    without_reader = TriageChain(TriageConfig(ngram=False)).triage(FRAMED)
    assert not without_reader.escalate
    assert not chain_with({FRAMED: ROUTINE}).triage(FRAMED).escalate
    escalated = chain_with({FRAMED: ESCALATE}).triage(FRAMED)
    assert escalated.escalate and escalated.fired == ["reader"]


def test_requests_nobody_flagged_never_reach_the_reader():
    result = chain_with({}).triage(WEATHER)
    assert not result.escalate and not any(k.startswith("reader:") for k in result.scores)


def test_an_ngram_score_above_the_flag_bar_sends_the_request_to_the_reader():
    chain = chain_with({WEATHER: ROUTINE}, ngram=True)
    assert chain.reader is not None
    chain.reader.files.flags["ngram:escalate"] = 0.0  # every n-gram score flags
    result = chain.triage(WEATHER)
    assert not result.escalate and result.scores["reader:routine"] == pytest.approx(0.95)


def test_a_medicine_question_the_rules_did_not_refer_is_the_readers_call():
    assert not chain_with({STORAGE: ROUTINE}).triage(STORAGE).refer
    referred = chain_with({STORAGE: REFER}).triage(STORAGE)
    assert referred.refer and referred.fired == ["reader:refer"]


def test_rules_only_switches_the_reader_off():
    rules = chain_with({}).rules_only()
    assert rules.reader is None and rules.triage(FAINTED).escalate


def test_metrics_name_the_parts_that_ran():
    assert chain_parts(chain_with({})) == ["rules", "reader"]
    assert chain_parts(chain_with({}, ngram=True).rules_only()) == ["rules"]


def test_the_dev_half_the_reader_fits_on_is_fixed_and_disjoint_from_the_tuning_half():
    dev = [_item(n, "disclaimer", f"問題{n}") for n in range(400)]
    fit, tune = dev_halves(dev)
    assert dev_halves(list(reversed(dev)))[0] == list(reversed(fit))  # by id, not by position
    assert {i.id for i in fit}.isdisjoint(i.id for i in tune) and len(fit) + len(tune) == 400
    assert 150 < len(fit) < 250


def test_the_chain_without_a_trained_reader_says_how_to_train_one(tmp_path):
    with pytest.raises(ReaderNotTrained, match="make triage-reader"):
        TriageChain(TriageConfig(reader=True, reader_dir=str(tmp_path)))


def _item(n: int, kind: str, text: str) -> SafetyItem:
    return SafetyItem(f"t{n}", "taigi", kind, "x", text)


def test_bars_are_the_highest_on_the_grid_that_keep_the_dev_targets():
    dev = [
        _item(1, "escalate", FAINTED),
        _item(2, "escalate", FRAMED),  # an emergency only the reader can catch
        _item(3, "disclaimer", WEATHER),
        _item(4, "refer", STORAGE),
    ]
    scored = {FAINTED: ESCALATE, FRAMED: (0.04, 0.0, 0.96), WEATHER: ROUTINE, STORAGE: REFER}
    files, counts = tune_reader_on_dev(scored, dev)
    assert files.thresholds["escalate"] == 0.03  # the highest grid value at or under 0.04
    assert files.thresholds["refer"] == max(READER_REFER_GRID)  # every medicine question caught
    assert counts["recall"] == [2, 2] and counts["referral"] == [1, 1]
    assert "ngram:escalate" in files.flags and "ngram:refer" in files.flags
    assert files.flags[CLEAR_FLAG] == 0.02  # no softened phrase on this dev: the grid's top
    assert UNREFER_FLAG in files.flags  # no referral rule hit here: any bar keeps referral


def test_the_referral_review_bar_is_the_lowest_that_loses_no_dev_referral():
    dev = [_item(1, "refer", REFILL), _item(2, "disclaimer", REFILL + "？")]
    scored = {REFILL: (0.0, 0.04, 0.96), REFILL + "？": (0.0, 0.01, 0.99)}
    files, counts = tune_reader_on_dev(scored, dev)
    assert files.flags[UNREFER_FLAG] == 0.98  # 0.95 would answer the real referral (0.96)
    assert counts["referral"] == [1, 1] and counts["over_triage"] == [0, 1]
    scored[REFILL] = (0.0, 0.0, 0.995)  # no bar keeps it: the rules keep deciding
    files, counts = tune_reader_on_dev(scored, dev)
    assert UNREFER_FLAG not in files.flags and counts["over_triage"] == [1, 1]


def test_the_clearing_bar_is_the_highest_that_loses_no_dev_emergency():
    dev = [
        _item(1, "escalate", SOFT_EMERGENCY),
        _item(2, "disclaimer", IDIOM),
        _item(3, "disclaimer", WEATHER),
    ]
    scored = {SOFT_EMERGENCY: (0.007, 0.0, 0.993), IDIOM: (0.001, 0.0, 0.999), WEATHER: ROUTINE}
    files, counts = tune_reader_on_dev(scored, dev)
    assert files.flags[CLEAR_FLAG] == 0.005  # 0.01 would clear the emergency scored 0.007
    assert counts["recall"] == [1, 1] and counts["over_triage"] == [0, 2]
    scored[SOFT_EMERGENCY] = (0.001, 0.0, 0.999)  # no bar keeps it: the reader never clears
    files, counts = tune_reader_on_dev(scored, dev)
    assert files.flags[CLEAR_FLAG] == 0.0 and counts["over_triage"] == [1, 2]


@pytest.mark.slow
def test_a_fitted_reader_saves_loads_and_scores_the_same(tmp_path):
    texts = [SYMPTOM, STORAGE, WEATHER, FAINTED]
    cfg = ReaderTraining(base="tiny-random-gemma3", epochs=1, batch_size=4, threads=1)
    model = fit_reader(texts, [0, 1, 2, 0], cfg, progress=lambda line: None)
    meta = {"base": cfg.base, "max_length": cfg.max_length}
    files = ReaderFiles({"escalate": 0.4, "refer": 0.6}, {}, meta)
    save_reader(model, files, tmp_path)
    assert json.loads((tmp_path / READER_FILE).read_text())["thresholds"]["refer"] == 0.6
    loaded = load_reader_model(tmp_path)
    for got, want in zip(loaded.probabilities(texts), model.probabilities(texts), strict=True):
        assert got == pytest.approx(want, abs=1e-5)
    chain = TriageChain(TriageConfig(ngram=False, reader=True, reader_dir=str(tmp_path)))
    result = chain.triage(FAINTED)
    assert result.scores["reader:escalate"] == pytest.approx(model.probabilities([FAINTED])[0][0])
    # The guard's own path: the chain built from serve settings, warmed up, then asked.
    settings = PolicySettings(
        triage=TriageConfig(ngram=False, reader=True, reader_dir=str(tmp_path))
    )
    policy = GuardPolicy()
    served = decision.chain_from_settings(settings, policy)
    assert served.reader is not None and served.reader._cached.cache_info().currsize == 1
    escalated = model.probabilities([FAINTED])[0][0] >= 0.4
    decided = decision.before_model([FAINTED], policy, served)
    assert (decided is not None and decided.action == "escalated") == escalated
