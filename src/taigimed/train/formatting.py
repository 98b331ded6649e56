"""Chat examples -> token ids and labels, with the loss on assistant tokens only.

The text is rendered with the base model's own chat template (``apply_chat_template``), so the
model is trained on exactly the format it will be prompted with when served. Which characters
belong to an assistant turn is found by rendering prefixes of the conversation: the assistant
turn ``i`` spans from the end of ``render(messages[:i], add_generation_prompt=True)`` to the end
of ``render(messages[:i + 1])`` (trailing whitespace dropped). Every token whose first
character falls in such a span is a target; every other token (system prompt, user turns, role
headers) gets label -100 and adds nothing to the loss. The turn's end-of-turn token
(``<|im_end|>``, ``<|eot_id|>``) is inside the span, so the model learns to stop.

This works for any template whose rendering of a prefix is a prefix of the whole rendering;
a template that rewrites earlier turns (some "thinking" templates do) is rejected with a clear
error instead of silently mislabelling.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from taigimed.utils import iter_jsonl

log = logging.getLogger(__name__)

IGNORE_INDEX = -100
ROLES = ("system", "user", "assistant")


@dataclass
class TokenizedExample:
    """One conversation as model input: ids, labels (-100 = no loss) and where it came from."""

    id: str
    input_ids: list[int]
    labels: list[int]

    def __len__(self) -> int:
        return len(self.input_ids)

    @property
    def target_tokens(self) -> int:
        return sum(1 for label in self.labels if label != IGNORE_INDEX)


@dataclass
class FormatReport:
    """What happened to each line of one file: kept, truncated, or dropped (with ids)."""

    path: str
    kept: int = 0
    truncated: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "kept": self.kept,
            "truncated": len(self.truncated),
            "dropped_no_target_left": self.dropped,
        }


def check_messages(messages: Any, where: str) -> list[dict[str, str]]:
    """Validate the INTERFACES.md chat shape; raise ``ValueError`` naming ``where`` otherwise."""
    if not isinstance(messages, list) or not messages:
        raise ValueError(f"{where}: 'messages' must be a non-empty list")
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise ValueError(f"{where}: messages[{i}] must be an object with role and content")
        role, content = message.get("role"), message.get("content")
        if role not in ROLES:
            raise ValueError(f"{where}: messages[{i}].role must be one of {ROLES}, got {role!r}")
        if not isinstance(content, str):
            raise ValueError(f"{where}: messages[{i}].content must be a string")
        if role == "assistant" and not content.strip():
            raise ValueError(f"{where}: messages[{i}] is an empty assistant message")
    roles = {m["role"] for m in messages}
    if "user" not in roles or "assistant" not in roles:
        raise ValueError(f"{where}: needs at least one user and one assistant message")
    return [{"role": m["role"], "content": m["content"]} for m in messages]


def render(tokenizer: Any, messages: list[dict[str, str]], generation_prompt: bool = False) -> str:
    """The chat template's text for ``messages`` (not tokenised)."""
    return tokenizer.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=generation_prompt
    )


def assistant_spans(
    tokenizer: Any, messages: list[dict[str, str]], where: str = "<example>"
) -> tuple[str, list[tuple[int, int]]]:
    """The rendered conversation and the ``[start, end)`` character span of each assistant turn."""
    text = render(tokenizer, messages)
    spans = []
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        before = render(tokenizer, messages[:i], generation_prompt=True) if i else ""
        upto = render(tokenizer, messages[: i + 1])
        if not text.startswith(before) or not text.startswith(upto) or len(upto) < len(before):
            raise ValueError(
                f"{where}: the chat template does not render a conversation prefix as a prefix "
                "of the whole conversation, so assistant tokens cannot be located; use a "
                "template that renders turns append-only"
            )
        end = len(upto.rstrip())
        if end > len(before):
            spans.append((len(before), end))
    return text, spans


def tokenize_chat(
    tokenizer: Any, messages: list[dict[str, str]], max_len: int, where: str = "<example>"
) -> tuple[list[int], list[int], bool]:
    """``(input_ids, labels, truncated)``: labels copy the ids inside assistant spans, else -100.

    Special tokens are not added by the tokenizer: the chat template already writes BOS where
    the model expects it (Llama 3), and adding it again would train on a doubled BOS.
    """
    text, spans = assistant_spans(tokenizer, messages, where)
    encoding = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids = list(encoding["input_ids"])
    labels = [IGNORE_INDEX] * len(ids)
    for index, (start, _end) in enumerate(encoding["offset_mapping"]):
        if any(span_start <= start < span_end for span_start, span_end in spans):
            labels[index] = ids[index]
    truncated = len(ids) > max_len
    return ids[:max_len], labels[:max_len], truncated


def load_sft_examples(
    path: str | Path, tokenizer: Any, max_len: int
) -> tuple[list[TokenizedExample], FormatReport]:
    """Read and tokenise one stage JSONL file.

    A malformed line raises with ``file:line`` (prepared data is expected to be valid; a bad
    line means the data step has a bug). An example whose assistant tokens all fall beyond
    ``max_len`` cannot teach anything and is dropped, but listed by id in the report and logged.
    """
    path = Path(path)
    report = FormatReport(str(path))
    examples = []
    for line, record in iter_jsonl(path):
        where = f"{path}:{line}"
        if not isinstance(record, dict):
            raise ValueError(f"{where}: each line must be a JSON object")
        example_id = str(record.get("id", f"line-{line}"))
        messages = check_messages(record.get("messages"), where)
        ids, labels, truncated = tokenize_chat(tokenizer, messages, max_len, where)
        example = TokenizedExample(example_id, ids, labels)
        if example.target_tokens == 0:
            report.dropped.append(example_id)
            continue
        if truncated:
            report.truncated.append(example_id)
        examples.append(example)
        report.kept += 1
    if report.dropped:
        log.warning(
            "%s: dropped %d examples whose answers start after max_seq_len=%d: %s",
            path,
            len(report.dropped),
            max_len,
            ", ".join(report.dropped[:10]),
        )
    if report.truncated:
        log.info("%s: truncated %d examples to %d tokens", path, len(report.truncated), max_len)
    if not examples:
        raise ValueError(f"{path}: no usable training examples (empty file, or all too long)")
    return examples, report
