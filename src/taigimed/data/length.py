"""Token lengths with the base model's own tokenizer and chat template.

The length filter must count what training will see: the chat template applied, special
tokens included. Rendering is batched (templates ~0.07 ms, encoding ~0.7 ms per example on
one busy core).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tqdm import tqdm


def load_length_tokenizer(name: str) -> Any:
    """The tokenizer of model ``name`` (a taigimed model name or directory)."""
    from taigimed.models import load_tokenizer, resolve_model

    return load_tokenizer(resolve_model(name if not Path(name).is_dir() else Path(name)))


def token_lengths(
    tokenizer: Any, examples: Sequence[dict], batch: int = 512, desc: str = "tokenize"
) -> list[int]:
    """Tokens of each example's ``messages`` after the chat template."""
    lengths: list[int] = []
    has_template = bool(getattr(tokenizer, "chat_template", None))
    for start in tqdm(range(0, len(examples), batch), desc=desc, unit="batch", leave=False):
        chunk = [ex["messages"] for ex in examples[start : start + batch]]
        if has_template:
            texts = tokenizer.apply_chat_template(chunk, tokenize=False)
        else:  # a base model without a template: role-prefixed plain text
            texts = ["\n".join(f"{m['role']}: {m['content']}" for m in msgs) for msgs in chunk]
        ids = tokenizer(texts, add_special_tokens=False)["input_ids"]
        lengths.extend(len(x) for x in ids)
    return lengths
