"""Knowledge passages and the one reader every source goes through.

Three kinds of source feed the retrieval index, all as JSONL, all read here:

* ``passages``: the team's knowledge base (``data/knowledge/passages.jsonl``) or a hospital's
  own leaflets in the same format::

    {"id": "KB001", "topic": "cold", "title": "感冒的照顧", "title_zh": "感冒的照顧",
     "hanji": "...", "mandarin": "...", "tailo": "...", "reviewer": null, "source": "..."}

  ``id``, ``topic``, ``title``, ``hanji``, ``reviewer`` (a name, or null when no clinician has
  reviewed it) and ``source`` are required; ``title_zh``, ``mandarin``, ``tailo`` and
  ``approved_at`` are optional.
* ``reviewed``: answers a clinician approved in the review queue, in either export shape the
  platform writes (``data/demo/reviewed_answers.jsonl``: question/answer/reviewer/approved_at,
  or ``/v1/review/export``'s SFT lines: messages/reviewer/reviewed_at). Each becomes a passage
  marked ``origin="clinician_review"``.

A bad record is never skipped silently: every problem in a file is collected and raised
together as one ``KnowledgeError`` whose lines read ``file:line: field: what is wrong``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from taigimed.data.normalise import nfc

Origin = Literal["knowledge", "clinician_review"]
SourceKind = Literal["passages", "reviewed"]

REQUIRED = ("id", "topic", "title", "hanji", "reviewer", "source")
OPTIONAL = ("title_zh", "mandarin", "tailo", "approved_at", "origin", "question")
ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$")
# The disclaimer the guard appends is stripped from approved answers before indexing, so a
# retrieved passage does not carry it twice when the guard answers with it.
DISCLAIMER_MARK = "⚠️"


class KnowledgeError(ValueError):
    """Records that cannot be used; ``problems`` holds one ``file:line: message`` each."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        shown = "\n  ".join(problems[:20])
        more = f"\n  ... and {len(problems) - 20} more" if len(problems) > 20 else ""
        super().__init__(f"{len(problems)} bad knowledge record(s):\n  {shown}{more}")


@dataclass(frozen=True)
class Passage:
    """One retrievable piece of approved knowledge; ``hanji`` is what a user is shown."""

    id: str
    topic: str
    title: str
    hanji: str
    source: str
    reviewer: str | None = None
    approved_at: str | None = None
    title_zh: str = ""
    mandarin: str = ""
    tailo: str = ""
    question: str = ""  # the question a reviewed answer answered (indexed with it)
    origin: Origin = "knowledge"

    def search_text(self) -> str:
        """Everything a question may match: title, the question answered, all three scripts."""
        parts = (self.title, self.title_zh, self.question, self.hanji, self.mandarin, self.tailo)
        return "\n".join(p for p in parts if p)

    def embed_text(self) -> str:
        """What the embedder sees: title and Hàn-jī first (e5 reads the start most closely)."""
        parts = (self.title, self.question, self.hanji, self.mandarin)
        return "。".join(p for p in parts if p)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Passage:
        return cls(**data)


def _text(obj: dict, key: str, problems: list[str], where: str, required: bool = True) -> str:
    value = obj.get(key)
    if value is None and not required:
        return ""
    if not isinstance(value, str) or (required and not value.strip()):
        problems.append(f"{where}: field '{key}' must be a non-empty string, got {value!r}")
        return ""
    return nfc(value.strip())


def parse_passage(obj: Any, where: str, problems: list[str]) -> Passage | None:
    """A knowledge-base or leaflet record -> ``Passage``; problems are appended, not raised."""
    if not isinstance(obj, dict):
        problems.append(f"{where}: expected a JSON object, got {type(obj).__name__}")
        return None
    before = len(problems)
    missing = [k for k in REQUIRED if k not in obj]
    if missing:
        problems.append(f"{where}: missing field(s) {', '.join(missing)} (required: {REQUIRED})")
        return None
    unknown = sorted(set(obj) - set(REQUIRED) - set(OPTIONAL))
    if unknown:
        problems.append(f"{where}: unknown field(s) {', '.join(unknown)}")
    pid = obj["id"]
    if not isinstance(pid, str) or not ID_PATTERN.match(pid):
        problems.append(f"{where}: field 'id' must be letters, digits, '.', '_', ':' or '-'")
    reviewer = obj["reviewer"]
    if reviewer is not None and (not isinstance(reviewer, str) or not reviewer.strip()):
        problems.append(f"{where}: field 'reviewer' must be a name or null, got {reviewer!r}")
    fields = {k: _text(obj, k, problems, where) for k in ("topic", "title", "hanji", "source")}
    optional = {k: _text(obj, k, problems, where, required=False) for k in OPTIONAL[:3]}
    if len(problems) > before:
        return None
    return Passage(
        id=pid,
        reviewer=reviewer,
        approved_at=obj.get("approved_at"),
        question=_text(obj, "question", problems, where, required=False),
        origin=obj.get("origin", "knowledge"),
        **fields,
        **optional,
    )


def strip_disclaimer(answer: str) -> str:
    """An approved answer without the guard's trailing disclaimer (added again when served)."""
    return answer.split(DISCLAIMER_MARK, 1)[0].strip()


def parse_reviewed(obj: Any, where: str, problems: list[str]) -> Passage | None:
    """An approved review-queue answer (either export shape) -> a clinician-approved passage."""
    if not isinstance(obj, dict):
        problems.append(f"{where}: expected a JSON object, got {type(obj).__name__}")
        return None
    status = obj.get("status", "approved")
    if status not in ("approved", "edited", "accepted"):
        problems.append(f"{where}: status {status!r} is not approved; only approved answers load")
        return None
    question, answer = obj.get("question"), obj.get("answer") or obj.get("final_answer")
    messages = obj.get("messages")
    if isinstance(messages, list) and messages:
        users = [
            m.get("content") for m in messages if isinstance(m, dict) and m.get("role") == "user"
        ]
        last = messages[-1] if isinstance(messages[-1], dict) else {}
        question = users[-1] if users else None
        answer = last.get("content") if last.get("role") == "assistant" else None
    reviewer = obj.get("reviewer")
    approved_at = obj.get("approved_at") or obj.get("reviewed_at")
    for key, value in (("question", question), ("answer", answer), ("reviewer", reviewer)):
        if not isinstance(value, str) or not value.strip():
            problems.append(f"{where}: field '{key}' must be a non-empty string, got {value!r}")
            return None
    text = strip_disclaimer(nfc(answer))
    if not text:
        problems.append(f"{where}: the answer is only a disclaimer")
        return None
    session = obj.get("session_id") or str(obj.get("id", "")).removeprefix("review-")
    return Passage(
        id=f"review:{session}" if session else f"review:{where.rsplit(':', 1)[-1]}",
        topic="clinician_review",
        title=nfc(question.strip())[:40],
        hanji=text,
        source=f"clinician review by {reviewer}" + (f" at {approved_at}" if approved_at else ""),
        reviewer=reviewer,
        approved_at=approved_at,
        question=nfc(question.strip()),
        origin="clinician_review",
    )


PARSERS = {"passages": parse_passage, "reviewed": parse_reviewed}


def read_source(path: str | Path, kind: SourceKind = "passages") -> list[Passage]:
    """Read one JSONL file of ``kind``; any bad line (or duplicate id) raises ``KnowledgeError``
    listing every bad line as ``file:line``."""
    path = Path(path)
    if kind not in PARSERS:
        raise KnowledgeError([f"{path}: unknown source kind {kind!r}; use one of {list(PARSERS)}"])
    if not path.is_file():
        raise KnowledgeError([f"{path}: file not found"])
    problems: list[str] = []
    passages: list[Passage] = []
    seen: dict[str, int] = {}
    with path.open(encoding="utf-8-sig") as fh:
        for number, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            where = f"{path}:{number}"
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as err:
                problems.append(f"{where}: invalid JSON: {err.msg} (column {err.colno})")
                continue
            passage = PARSERS[kind](obj, where, problems)
            if passage is None:
                continue
            if passage.id in seen:
                problems.append(
                    f"{where}: id {passage.id!r} already used on line {seen[passage.id]}"
                )
                continue
            seen[passage.id] = number
            passages.append(passage)
    if problems:
        raise KnowledgeError(problems)
    return passages


def read_sources(sources: Iterable[tuple[str | Path, SourceKind]]) -> list[Passage]:
    """Read several sources into one list; ids must be unique across all of them."""
    passages: list[Passage] = []
    where: dict[str, str] = {}
    problems: list[str] = []
    for path, kind in sources:
        for passage in read_source(path, kind):
            if passage.id in where:
                problems.append(f"{path}: id {passage.id!r} is also in {where[passage.id]}")
                continue
            where[passage.id] = str(path)
            passages.append(passage)
    if problems:
        raise KnowledgeError(problems)
    return passages
