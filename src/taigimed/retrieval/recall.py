"""Retrieval quality: recall@k on questions whose reference passage is known.

``data/knowledge/questions.jsonl`` holds questions (Taigi Hàn-jī and Mandarin, worded unlike
the passages) with the id of the passage that answers them, or ``null`` for off-topic
questions nothing should answer confidently. Each line has a ``split``: ``tune`` questions may
be used to choose weights and the confidence rule; ``heldout`` ones never are, and are reported
apart so the numbers show what tuning did not see. ``also`` lists other passages (an approved
review answer on the same point) that count as right too; a hit at rank r is the first
right passage at rank r.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from taigimed.retrieval.config import Confidence
from taigimed.retrieval.index import HybridIndex
from taigimed.retrieval.knowledge import KnowledgeError

SPLITS = ("tune", "heldout")
KS = (1, 3, 5)


@dataclass(frozen=True)
class Question:
    id: str
    question: str
    passage: str | None  # None: off-topic, nothing should be confident
    split: str
    also: tuple[str, ...] = ()  # other passages that answer it as well (e.g. an approved answer)

    def answers(self) -> set[str]:
        return {self.passage, *self.also} if self.passage else set()


def read_questions(path: str | Path) -> list[Question]:
    """Read the recall set; bad lines raise with ``file:line``."""
    path = Path(path)
    problems, out = [], []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            obj = json.loads(line)
            question = Question(
                obj["id"], obj["question"], obj["passage"], obj["split"], tuple(obj.get("also", ()))
            )
        except (json.JSONDecodeError, KeyError, TypeError) as err:
            problems.append(f"{where}: needs id, question, passage (id or null), split: {err}")
            continue
        if question.split not in SPLITS:
            problems.append(f"{where}: split must be one of {SPLITS}, got {question.split!r}")
            continue
        out.append(question)
    if problems:
        raise KnowledgeError(problems)
    return out


def evaluate_retrieval(
    index: HybridIndex, questions: list[Question], confidence: Confidence, ks: tuple = KS
) -> dict[str, Any]:
    """Per split: recall@k and MRR over answerable questions; how often the confidence rule
    accepts the right passage, a wrong one, or an off-topic question."""
    named = {pid for q in questions for pid in q.answers()}
    unknown = sorted(named - {p.id for p in index.passages})
    if unknown:
        raise KnowledgeError([f"questions name passages not in the index: {unknown}"])
    report: dict[str, Any] = {}
    depth = max(ks)
    for split in SPLITS:
        rows = [q for q in questions if q.split == split]
        answerable = [q for q in rows if q.passage]
        off_topic = [q for q in rows if not q.passage]
        hits_at = {k: 0 for k in ks}
        reciprocal = 0.0
        accepted_right = accepted_wrong = accepted_off = 0
        misses = []
        for q in rows:
            hits = index.search(q.question, depth)
            ids = [h.passage.id for h in hits]
            confident = confidence.accepts(hits[0] if hits else None)
            if q.passage is None:
                accepted_off += confident
                continue
            right = [rank for rank, pid in enumerate(ids, start=1) if pid in q.answers()]
            first = right[0] if right else None
            for k in ks:
                hits_at[k] += first is not None and first <= k
            reciprocal += 1.0 / first if first else 0.0
            if confident:
                accepted_right += first == 1
                accepted_wrong += first != 1
            if first != 1:
                misses.append({"id": q.id, "want": q.passage, "got": ids[:3]})
        n = len(answerable) or 1
        report[split] = {
            "questions": len(answerable),
            "off_topic": len(off_topic),
            **{f"recall@{k}": round(hits_at[k] / n, 3) for k in ks},
            "mrr": round(reciprocal / n, 3),
            "confident_right": round(accepted_right / n, 3),
            "confident_wrong": round(accepted_wrong / n, 3),
            "off_topic_confident": round(accepted_off / (len(off_topic) or 1), 3),
            "misses_at_1": misses,
        }
    return report
