"""Grounded answering: what the guard asks the model, and what it shows when the model fails.

For a question that passed triage the guard retrieves the top-k passages. When the best one is
confident (``Confidence.accepts``), the model is asked to answer *from* them, in Taigi Hàn-jī;
if its answer fails ``check_answer`` (echo, loop, broken characters, off-language: the
detectors of ``taigimed.quality``, the same ones the gate and the review queue use) the guard
shows the best passage itself, which is approved text. When nothing matches well, the model
answers alone and the answer is held for a clinician as low-confidence.

Pure functions: the guard supplies the index and the messages, and does the HTTP.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from taigimed import quality
from taigimed.data.normalise import is_cjk
from taigimed.retrieval.config import RetrievalConfig
from taigimed.retrieval.index import Hit, HybridIndex

Mode = Literal["grounded", "ungrounded"]

# The instruction the model gets with the passages (Taigi Hàn-jī, as the answer must be).
INSTRUCTION = (
    "你是台語醫療衛教助理。下面是醫護人員審過的衛教資料，請根據資料，用台語漢字簡單回答病人的問題，"
    "毋通做診斷，嘛毋通講資料無寫的藥仔份量。"
)
NO_MATCH_REASON = "retrieval_low_confidence"
MIN_HAN = 8  # fewer Han characters than this is not an answer to show in place of a passage


@dataclass(frozen=True)
class Verdict:
    """``ok`` or the reasons an answer is not fit to show (``echo``, ``loop``, ...)."""

    reasons: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return not self.reasons


def check_answer(
    answer: str, prompt: str, passages: str = "", settings: quality.QualitySettings | None = None
) -> Verdict:
    """The reasons a grounded ``answer`` should not be shown; empty when it may be.

    ``taigimed.quality``'s detectors, with two differences a grounded answer needs: a run
    copied from the prompt that the passages also hold is answering, not echoing (a passage
    may repeat the question's words), and the answer must be Hàn-jī of some length, since the
    alternative is an approved passage that is.
    """
    s = settings or quality.QualitySettings()
    signals = quality.answer_signals(answer, question=prompt, settings=s, allowed=passages)
    reasons = []
    if sum(is_cjk(c) for c in answer) < MIN_HAN:
        reasons.append("too_short")
    if signals.echo:
        reasons.append("echo")
    if signals.repetitive:
        reasons.append("loop")
    if signals.broken:
        reasons.append("broken_characters")
    if signals.simplified or signals.off_script:
        reasons.append("off_language")
    return Verdict(tuple(reasons))


@dataclass(frozen=True)
class Grounding:
    """What retrieval decided for one question."""

    hits: tuple[Hit, ...]
    mode: Mode
    sources: list[dict[str, Any]] = field(default_factory=list)

    @property
    def best(self) -> Hit | None:
        return self.hits[0] if self.hits else None

    def passages_text(self) -> str:
        return "\n".join(h.passage.hanji for h in self.hits)


def ground(index: HybridIndex | None, cfg: RetrievalConfig, question: str) -> Grounding:
    """Retrieve and decide: ``grounded`` when the best hit passes the confidence rule."""
    if index is None:
        return Grounding((), "ungrounded", [])
    hits = tuple(index.search(question, cfg.top_k))
    mode: Mode = "grounded" if cfg.confidence.accepts(hits[0] if hits else None) else "ungrounded"
    return Grounding(hits, mode, [h.source() for h in hits])


def grounded_messages(messages: list[dict[str, Any]], grounding: Grounding) -> list[dict]:
    """The conversation the model gets: one system message with the instruction and the
    passages (replacing the client's system message), then the user/assistant turns."""
    lines = [f"[{i}] {h.passage.title}：{h.passage.hanji}" for i, h in enumerate(grounding.hits, 1)]
    system = {"role": "system", "content": INSTRUCTION + "\n資料：\n" + "\n".join(lines)}
    return [system] + [m for m in messages if m.get("role") != "system"]


def grounded_prompt(question: str, grounding: Grounding) -> str:
    """The completions-route prompt: instruction, passages, then the question."""
    lines = [f"[{i}] {h.passage.title}：{h.passage.hanji}" for i, h in enumerate(grounding.hits, 1)]
    return INSTRUCTION + "\n資料：\n" + "\n".join(lines) + f"\n問：{question}\n答："


def choose_answer(answer: str, grounding: Grounding, prompt_text: str) -> tuple[str, Verdict]:
    """The text to show for a grounded answer: the model's when it passes the checks, else the
    best passage (approved text). ``prompt_text`` is what the model was told (instruction,
    system prompts, question): copying it is an echo, while copying the passages is answering.
    Returns the text and the verdict on the model's own answer."""
    verdict = check_answer(answer, INSTRUCTION + "\n" + prompt_text, grounding.passages_text())
    best = grounding.best
    if verdict.ok or best is None:
        return answer, verdict
    return best.passage.hanji, verdict
