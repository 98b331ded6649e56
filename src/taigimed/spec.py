"""The model spec: one small file, ``taigimed.json``, that training writes into the merged model
directory and every later stage reads, so values that cross stages are declared once.

It holds the base model id, the system prompt the model was trained with (found in the training
data, not in a config file that may have drifted), the chat template, the maximum sequence
length, and the fingerprints of the data and config. Training also bakes the trained prompt
into the merged tokenizer's chat template as the default system message, so any server that
renders the model's own template (the transformers predictor, vLLM) prompts it with the text it
was trained on when a client sends no system message. A serve-time prompt is an explicit
override (``ServeConfig.system_prompt``) and is shown as one in the model card.

The registry carries the file with the model, and records beside it the guard policy and
safety suite version that the gate held (``Registry.register``).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from taigimed.utils import iter_jsonl, write_json

SPEC_FILE = "taigimed.json"
SPEC_VERSION = 1

# The preamble that makes the trained prompt the template's default system message.
_PROMPT_START = "{#- taigimed:default-system-prompt -#}"
_PROMPT_END = "{#- /taigimed:default-system-prompt -#}"
_PREAMBLE = re.compile(re.escape(_PROMPT_START) + r".*?" + re.escape(_PROMPT_END), re.S)


class SpecError(ValueError):
    """A model spec that is missing where required, unreadable, or contradicts the model."""


@dataclass
class ModelSpec:
    base_model: str  # the id stage 1 started from (stage 2 inherits it from stage 1's spec)
    system_prompt: str  # the system message of the training data ("" when it had none)
    max_seq_len: int  # tokens per training sequence
    chat_template: str | None = None  # the merged tokenizer's template (prompt baked in)
    stage: int = 0
    fingerprints: dict[str, str] = field(default_factory=dict)
    spec_version: int = SPEC_VERSION

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def spec_path(model_dir: str | Path) -> Path:
    return Path(model_dir) / SPEC_FILE


def write_spec(model_dir: str | Path, spec: ModelSpec) -> Path:
    path = spec_path(model_dir)
    write_json(path, spec.to_dict())
    return path


def read_spec(model_dir: str | Path | None) -> ModelSpec | None:
    """The spec of a model directory, or None when it has none (a base model, a test model)."""
    if model_dir is None:
        return None
    path = spec_path(model_dir)
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if data.get("spec_version") != SPEC_VERSION:
            raise SpecError(f"{path}: spec_version {data.get('spec_version')!r} is not 1")
        return ModelSpec(**data)
    except (json.JSONDecodeError, TypeError) as err:
        raise SpecError(f"{path}: not a taigimed model spec ({err})") from None


def trained_system_prompt(train_file: str | Path) -> str:
    """The system message the training examples carry (the most common one; "" if none)."""
    prompts: Counter[str] = Counter()
    for _, record in iter_jsonl(Path(train_file)):
        messages = record.get("messages") or []
        if messages and messages[0].get("role") == "system":
            prompts[messages[0].get("content") or ""] += 1
    return prompts.most_common(1)[0][0] if prompts else ""


def with_default_system_prompt(template: str | None, prompt: str) -> str | None:
    """``template`` with ``prompt`` as the system message when the conversation has none.

    Idempotent: an earlier stage's preamble is replaced, not stacked.
    """
    if not template:
        return template
    bare = _PREAMBLE.sub("", template)
    if not prompt:
        return bare
    literal = json.dumps(prompt, ensure_ascii=False)  # a valid Jinja string literal
    preamble = (
        f"{_PROMPT_START}{{%- if not messages or messages[0]['role'] != 'system' %}}"
        f"{{%- set messages = [{{'role': 'system', 'content': {literal}}}] + messages %}}"
        f"{{%- endif %}}{_PROMPT_END}"
    )
    return preamble + bare


def fingerprint(obj: Any) -> str:
    """SHA-256 of a JSON-serialisable value (a config as a dict), stable across key order."""
    text = json.dumps(obj, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def resolve_max_len(configured: int, spec: ModelSpec | None, fallback: int) -> tuple[int, str]:
    """A length setting where 0 means "the model's": (value, where it came from)."""
    if configured:
        return configured, "config"
    if spec is not None:
        return spec.max_seq_len, SPEC_FILE
    return fallback, "default"


def serving_card(
    spec: ModelSpec | None, system_prompt_override: str = "", max_model_len: int | None = None
) -> dict[str, Any]:
    """What a server says about the model it serves (the ``taigimed`` object of its model list):
    the trained values from the spec, and any serve-time override shown as one."""
    if system_prompt_override:
        prompt, source = system_prompt_override, "override"
    elif spec is not None:
        prompt, source = spec.system_prompt, SPEC_FILE
    else:
        prompt, source = None, "the tokenizer's own template (no taigimed.json)"
    card: dict[str, Any] = {"system_prompt": prompt, "system_prompt_source": source}
    if spec is not None:
        card.update(
            base_model=spec.base_model,
            trained_max_seq_len=spec.max_seq_len,
            fingerprints=spec.fingerprints,
        )
    if max_model_len is not None:
        card["max_model_len"] = max_model_len
    return card
