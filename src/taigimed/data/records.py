"""The three kinds of record that readers produce, before they become training examples.

Every record remembers ``where`` (``file:line``) so that a drop or a leak can be traced to the
input line that caused it.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class MCQItem:
    """One multiple-choice exam question (MedQA Taiwan, Mainland or US)."""

    id: str
    source: str
    question: str
    options: dict[str, str]
    answer_idx: str
    answer: str
    flags: dict[str, bool]
    where: str

    def dedupe_text(self) -> str:
        """Question plus options: two questions with one stem but other options differ."""
        return self.question + "".join(self.options[k] for k in sorted(self.options))

    def to_eval(self) -> dict:
        return {
            "id": self.id,
            "question": self.question,
            "options": self.options,
            "answer_idx": self.answer_idx,
            "answer": self.answer,
            "flags": self.flags,
        }


@dataclass
class TaigiRow:
    """One Taigi entry: a sentence (parallel corpus, MOE example) or a dictionary word.

    Fields a source lacks are empty strings. ``hanji`` may hold Hàn-lô (Hàn-jī with some
    romanised syllables), as Taigi is often written.
    """

    id: str
    source: str
    kind: str  # "sentence" | "word"
    where: str
    zh: str = ""
    hanji: str = ""
    tailo: str = ""
    poj: str = ""
    en: str = ""

    def texts(self) -> list[str]:
        return [t for t in (self.zh, self.hanji, self.tailo, self.poj) if t]

    def dedupe_text(self) -> str:
        return "|".join((self.zh, self.hanji, self.tailo))


@dataclass
class Dialogue:
    """A chat: Taigi dialogues, or clinician-approved answers from the review queue."""

    id: str
    source: str
    messages: list[dict[str, str]]
    where: str
    meta: dict = field(default_factory=dict)

    def texts(self) -> list[str]:
        return [m["content"] for m in self.messages if m["role"] != "system"]

    def dedupe_text(self) -> str:
        return "".join(self.texts())


Record = MCQItem | TaigiRow | Dialogue
