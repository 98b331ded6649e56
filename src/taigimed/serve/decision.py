"""What the guard decides, as pure functions: no HTTP, no storage, no metrics, no clock.

Two decisions, one before and one after the model:

* ``before_model(question, policy)``: red-flag escalation or prescription referral (the model
  is not called), or ``None``: ask the model;
* ``after_model(question, draft, token_logprobs, policy, review)``: the confidence of the
  answer, whether a clinician must see it first, and the text the client receives.

The proxy (``taigimed.serve.proxy``) calls these and does the I/O around them; the eval safety
suite can call the same functions with the served policy (``policy_from_settings``), so what
is scored is what users get.

Extension points (each is one function here plus its test):

* a new guardrail rule before the model: a phrase list in ``taigimed.guardrails`` (data), or a
  new step in ``before_model`` returning a ``PreModelDecision`` with its own ``Action``;
* a new reason to hold an answer (a confidence signal, a triage chain): one more entry in
  ``review_reasons``, which returns the reasons as short machine-readable strings.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from taigimed import guardrails, quality
from taigimed.serve.config import PolicySettings, ReviewSettings
from taigimed.triage.chain import TriageChain
from taigimed.triage.chain import pre_model_decision as triage_decision


class Action(StrEnum):
    """What the guard did with a question; the value is the client-visible ``status``, the
    ``taigimed_answers_total{status}`` label and the review store's session status."""

    ANSWERED = "answered"  # the model's answer, with the disclaimer
    ESCALATED = "escalated"  # red flag: call 119 / emergency room, model not called
    REFERRED = "referred"  # prescription or dose: see a doctor or pharmacist, model not called
    NEEDS_REVIEW = "needs_review"  # the model answered; a clinician must approve it first

    @property
    def model_called(self) -> bool:
        return self in (Action.ANSWERED, Action.NEEDS_REVIEW)


# The guardrails' pre-model actions and the guard action each one is. A new guardrails action
# must be added here: an unknown one is an error, never silently another status.
_GUARDRAIL_ACTIONS = {"escalate": Action.ESCALATED, "refer": Action.REFERRED}


@dataclass(frozen=True)
class PreModelDecision:
    """A question answered without the model."""

    action: Action
    text: str  # what the client receives (already finished: disclaimer added per policy)
    categories: list[str] = field(default_factory=list)  # red-flag categories that matched


@dataclass(frozen=True)
class AnswerDecision:
    """What to do with one model answer."""

    action: Action  # ANSWERED or NEEDS_REVIEW
    draft: str  # the model's words, PII scrubbed (stored with the session)
    client_text: str  # what the client receives now: the finished answer or the pending note
    confidence: float | None
    review_reasons: list[str]

    @property
    def held(self) -> bool:
        return self.action is Action.NEEDS_REVIEW


def policy_from_settings(settings: PolicySettings) -> guardrails.GuardPolicy:
    """The guardrail policy the guard serves, from ``serve.yaml``'s ``policy`` section."""
    return guardrails.GuardPolicy(
        escalate_red_flags=settings.escalate_red_flags,
        refer_prescriptions=settings.refer_prescriptions,
        add_disclaimer=settings.add_disclaimer,
    )


def policy_record(policy: guardrails.GuardPolicy) -> dict[str, Any]:
    """The policy as recorded beside a model (metrics meta, registry): its switches and a hash
    of its phrase lists, so a registry entry says which guard the gate held."""
    phrases = {
        "red_flags": policy.red_flags,
        "referral_patterns": list(policy.referral_patterns),
        # The triage chain's other rules (paired facts, mention-only words, medicines).
        "red_flag_pairs": [list(p) for p in policy.red_flag_pairs],
        "mention_only": list(guardrails.MENTION_ONLY),
        "info_frames": list(guardrails.INFO_FRAMES),
        "medicines": [list(guardrails.MEDICINES), list(guardrails.MEDICINE_QUESTIONS)],
        # Everything else the rules read: a change to any of them changes what the guard does.
        "drug_names": list(guardrails.DRUG_NAMES),
        "exceptions": guardrails.RED_FLAG_EXCEPTIONS,
        "resolved": [list(guardrails.RESOLVED_FRAMES), list(guardrails.WELL_NOW)],
        "now_cues": list(guardrails.NOW_CUES),
        "harmless": [
            list(guardrails.HARMLESS_SYMPTOM_PHRASES),
            list(guardrails.HARMLESS_MEDICINE_PHRASES),
        ],
        "frame_window": guardrails.FRAME_WINDOW,
    }
    text = json.dumps(phrases, sort_keys=True, ensure_ascii=False)
    return {
        "escalate_red_flags": policy.escalate_red_flags,
        "refer_prescriptions": policy.refer_prescriptions,
        "add_disclaimer": policy.add_disclaimer,
        "phrases_sha256": hashlib.sha256(text.encode("utf-8")).hexdigest(),
    }


def chain_from_settings(settings: PolicySettings, policy: guardrails.GuardPolicy) -> TriageChain:
    """The triage chain the guard serves (``policy.triage`` in ``serve.yaml``), model loaded
    once: one embedding per request afterwards."""
    chain = TriageChain(settings.triage, policy)
    chain.triage_turns(["暖機"])  # load the embedder now, not on the first user's request
    if chain.reader is not None:
        chain.reader.scores("暖機")  # and the reader's first forward pass (it reads few requests)
    return chain


def before_model(
    user_turns: str | list[str],
    policy: guardrails.GuardPolicy,
    chain: TriageChain | None = None,
) -> PreModelDecision | None:
    """Escalation or referral, or None: ask the model.

    With a ``chain`` (what the guard serves), every user turn of the conversation is triaged
    by ``taigimed.triage`` (rules on each turn, the detector once), so a red flag said earlier
    keeps the conversation escalated; without one, the phrase rules read the last message.
    """
    turns = [user_turns] if isinstance(user_turns, str) else list(user_turns)
    if chain is None:
        decision = guardrails.pre_model_decision(turns[-1], policy)
    else:
        decision, _ = triage_decision(turns, chain, policy)
    if decision is None:
        return None
    try:
        action = _GUARDRAIL_ACTIONS[decision.action]
    except KeyError:
        raise ValueError(f"guardrails action {decision.action!r} has no guard Action") from None
    return PreModelDecision(action, decision.text, list(decision.triage.categories))


def question_script(question: str) -> str:
    """``tailo`` for a mostly-Latin question (its answer may be Latin too), else ``hanji``."""
    return "tailo" if quality.latin_share(question) > 0.5 else "hanji"


def confidence(
    token_logprobs: list[float],
    draft: str = "",
    question: str = "",
    system_prompt: str = "",
) -> tuple[float | None, quality.AnswerSignals]:
    """(score, signals): exp(mean token log-prob) lowered for degenerate output.

    Mean log-prob alone is highest when the model parrots its own prompt; the detectors of
    ``taigimed.quality`` (echo, loop, broken character, off-script, Simplified) are what the
    eval gate uses too. ``None`` when the predictor sent no log-probs.
    """
    signals = quality.answer_signals(draft, question, system_prompt, question_script(question))
    return quality.confidence(token_logprobs, signals), signals


def review_reasons(
    question: str,
    score: float | None,
    review: ReviewSettings,
    flags: list[str] | None = None,
) -> list[str]:
    """Why a clinician must see this answer first; empty = answer at once."""
    reasons = []
    if score is not None and score < review.confidence_threshold:
        reasons.append(f"low_confidence<{review.confidence_threshold}")
        # why it is low, when a detector lowered it (threshold 0 still holds nothing)
        reasons += [f"degenerate:{flag}" for flag in flags or []]
    norm = guardrails.normalise(question)
    reasons += [f"topic:{t}" for t in review.topics if guardrails.normalise(t) in norm]
    return reasons


def after_model(
    question: str,
    draft: str,
    token_logprobs: list[float],
    policy: guardrails.GuardPolicy,
    review: ReviewSettings,
    system_prompt: str = "",
    finish_reason: str | None = None,
    extra_reasons: tuple[str, ...] = (),
) -> AnswerDecision:
    """Confidence, review decision and client text for one model answer.

    ``extra_reasons`` hold it for reasons found elsewhere (retrieval found nothing to ground it
    on). An answer cut at ``max_tokens`` ends at its last whole character (a backend that sent
    the first bytes of a character as U+FFFD does not reach the person with it).
    """
    if finish_reason == "length":
        draft = quality.trim_partial_char(draft)
    score, signals = confidence(token_logprobs, draft, question, system_prompt)
    reasons = review_reasons(question, score, review, signals.flags) + list(extra_reasons)
    draft = guardrails.scrub_pii(draft)
    if reasons:
        text = guardrails.finish(review.pending_message, policy)
        return AnswerDecision(Action.NEEDS_REVIEW, draft, text, score, reasons)
    return AnswerDecision(Action.ANSWERED, draft, guardrails.finish(draft, policy), score, [])


def live_stream_tail(
    streamed: str, held: bool, policy: guardrails.GuardPolicy, review: ReviewSettings
) -> str:
    """What a live stream appends after the words it already showed: the disclaimer, and for a
    held answer a note that a clinician will check it (its words cannot be taken back)."""
    streamed = streamed.rstrip()
    tail = guardrails.finish(streamed, policy)[len(streamed) :]
    if held:
        tail = "\n\n" + review.pending_message + tail
    return tail


def session_answer(
    session: dict[str, Any], policy: guardrails.GuardPolicy, review: ReviewSettings
) -> str | None:
    """What a client may read of a stored session: never a held draft."""
    if session["status"] == "rejected":
        return guardrails.finish(review.rejected_message, policy)
    if session["final_answer"] is not None:
        return guardrails.finish(session["final_answer"], policy)
    return None
