"""Records -> chat SFT examples (the line format of ``stage*_*.jsonl``) and eval items.

Each Taigi record yields one example per configured direction that its fields allow (a row
without POJ gives no Tâi-lô -> POJ example). Prompts are short and varied a little (two
phrasings per direction, chosen from the record id so reruns give the same file).
"""

from __future__ import annotations

import hashlib

from taigimed.data.normalise import Script, detect_script
from taigimed.data.records import Dialogue, MCQItem, TaigiRow

# direction -> (prompt phrasings, answer template, script of the answer, kinds it applies to)
DIRECTIONS: dict[str, tuple[tuple[str, ...], str, Script, tuple[str, ...]]] = {
    "zh_to_hanji": (
        ("請共這句華語翻做台語漢字：\n{zh}", "這句華語用台語按怎講？請用台語漢字寫：\n{zh}"),
        "{hanji}",
        "hanji",
        ("sentence",),
    ),
    "hanji_to_zh": (
        ("這句台語是啥物意思？請用華語寫出來：\n{hanji}", "請將這句台語翻成華語：\n{hanji}"),
        "{zh}",
        "zh",
        ("sentence",),
    ),
    "hanji_to_tailo": (
        ("請共這句台語漢字寫做台羅拼音：\n{hanji}", "這句台語按怎唸？請用台羅寫：\n{hanji}"),
        "{tailo}",
        "tailo",
        ("sentence", "word"),
    ),
    "tailo_to_hanji": (
        ("請共這句台羅寫做台語漢字：\n{tailo}", "這句台羅的漢字按怎寫？\n{tailo}"),
        "{hanji}",
        "hanji",
        ("sentence",),
    ),
    "tailo_to_poj": (
        ("請共這句台羅轉做白話字（POJ）：\n{tailo}", "台羅「{tailo}」用白話字按怎寫？"),
        "{poj}",
        "poj",
        ("sentence", "word"),
    ),
    "dict_lookup": (
        ("「{zh}」台語按怎講？", "華語的「{zh}」，台語欲按怎講？"),
        "「{zh}」台語講「{hanji}」，台羅寫做 {tailo}。",
        "mixed",
        ("word",),
    ),
    "dict_reverse": (
        ("台語「{hanji}」（{tailo}）是啥物意思？", "「{hanji}」這个台語詞是啥意思？"),
        "「{hanji}」是華語的「{zh}」。",
        "mixed",
        ("word",),
    ),
}
NEEDS = {
    "zh_to_hanji": ("zh", "hanji"),
    "hanji_to_zh": ("zh", "hanji"),
    "hanji_to_tailo": ("hanji", "tailo"),
    "tailo_to_hanji": ("hanji", "tailo"),
    "tailo_to_poj": ("tailo", "poj"),
    "dict_lookup": ("zh", "hanji", "tailo"),
    "dict_reverse": ("zh", "hanji", "tailo"),
}


def pick(options: tuple[str, ...], key: str) -> str:
    """Deterministic choice from a tuple by hashing ``key`` (stable across runs and machines)."""
    digest = hashlib.sha256(key.encode("utf-8")).digest()
    return options[digest[0] % len(options)]


def example(
    ex_id: str, source: str, task: str, script: str, system: str, user: str, assistant: str
) -> dict:
    """One SFT line in the contract's shape."""
    messages = [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]
    if system:
        messages.insert(0, {"role": "system", "content": system})
    return {"id": ex_id, "source": source, "task": task, "script": script, "messages": messages}


def mcq_prompt(item: MCQItem) -> str:
    """Question and lettered options, as the model sees them in training and in the eval."""
    lines = [item.question, ""]
    lines += [f"{k}. {v}" for k, v in item.options.items()]
    lines += ["", "請選出正確的答案。"]
    return "\n".join(lines)


def mcq_examples(item: MCQItem, system: str) -> list[dict]:
    """A MedQA question -> one example answering with the letter and the option text."""
    answer = f"答案：{item.answer_idx}. {item.answer}"
    return [example(item.id, item.source, "medqa_mcq", "zh", system, mcq_prompt(item), answer)]


def taigi_examples(row: TaigiRow, system: str, directions: list[str]) -> list[dict]:
    """A Taigi sentence or dictionary word -> one example per applicable direction."""
    out = []
    fields = {"zh": row.zh, "hanji": row.hanji, "tailo": row.tailo, "poj": row.poj}
    for direction in directions:
        prompts, answer_tpl, script, kinds = DIRECTIONS[direction]
        if row.kind not in kinds or not all(fields[f] for f in NEEDS[direction]):
            continue
        if direction == "tailo_to_poj" and row.poj == row.tailo:
            continue  # nothing to learn when the spellings coincide
        ex_id = f"{row.id}:{direction}"
        user = pick(prompts, ex_id).format(**fields)
        assistant = answer_tpl.format(**fields)
        out.append(example(ex_id, row.source, direction, script, system, user, assistant))
    return out


def dialogue_examples(dialogue: Dialogue, system: str, task: str) -> list[dict]:
    """A chat (or reviewed answer) -> one multi-turn example, tagged by its answers' script."""
    answers = " ".join(m["content"] for m in dialogue.messages if m["role"] == "assistant")
    messages = [dict(m) for m in dialogue.messages]
    if system:
        messages.insert(0, {"role": "system", "content": system})
    return [
        {
            "id": dialogue.id,
            "source": dialogue.source,
            "task": task,
            "script": detect_script(answers),
            "messages": messages,
        }
    ]


def taigi_eval_items(row: TaigiRow) -> tuple[list[dict], list[dict]]:
    """A held-out sentence -> (taigi_lm items, taigi_translation items)."""
    lm = [{"id": f"{row.id}:hanji", "text": row.hanji, "script": "hanji"}]
    if row.tailo:
        lm.append({"id": f"{row.id}:tailo", "text": row.tailo, "script": "tailo"})
    translation = []
    if row.zh:
        translation.append({"id": row.id, "source": row.zh, "reference": row.hanji})
    return lm, translation
