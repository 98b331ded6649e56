"""The peer benchmarks' own pieces that must stay in step with taigimed's code.

bench/lm_eval_tasks/taigimed_medqa.yaml restates taigimed's MCQ prompt in lm-eval's Jinja so the
two scorers can be compared; if the eval config's system prompt or the prompt layout changes,
the comparison would silently measure different prompts. These tests render the YAML the way
lm-evaluation-harness does (jinja2, StrictUndefined) without needing lm-eval installed.
"""

from __future__ import annotations

import ast
import json

import pytest
import yaml
from jinja2 import BaseLoader, Environment, StrictUndefined

from taigimed.config import load_config
from taigimed.eval.config import EvalConfig
from taigimed.eval.mcq import continuation_text, load_mcq, prompt_text
from taigimed.models import load_tokenizer


@pytest.fixture(scope="module")
def task(repo_root):
    return yaml.safe_load((repo_root / "bench/lm_eval_tasks/taigimed_medqa.yaml").read_text())


def render(template: str, doc: dict) -> str:
    env = Environment(loader=BaseLoader(), undefined=StrictUndefined, keep_trailing_newline=True)
    return env.from_string(template).render(**doc)


def test_lm_eval_yaml_prompt_and_choices_equal_taigimed_mcq(task, repo_root, smollm2_dir):
    """Every demo question: same prompt text, same continuations, same target, in order."""
    # the bench sets this prompt for the base model (bench/eval_vs_lm_eval.py MCQ_PROMPT)
    prompt = "mcq.system_prompt=你是一位台灣的醫學專家，請回答下面的醫學選擇題。"
    cfg = load_config(EvalConfig, repo_root / "configs/demo-cpu/eval.yaml", [prompt]).mcq
    tokenizer = load_tokenizer(smollm2_dir)
    path = repo_root / "data/demo/medqa_demo.jsonl"
    docs = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    items = load_mcq(path)
    assert task["target_delimiter"] == ""
    for doc, item in zip(docs, items, strict=True):
        assert render(task["doc_to_text"], doc) == prompt_text(tokenizer, item, cfg)
        choices = ast.literal_eval(render(task["doc_to_choice"], doc))
        assert choices == [
            continuation_text(k, v, cfg.continuation) for k, v in item.options.items()
        ]
        assert int(render(task["doc_to_target"], doc)) == item.letters.index(item.answer_idx)


def test_lm_eval_yaml_skips_absent_options_like_the_json_builder_fills_them(task):
    """datasets' json builder gives a 4-option question E=None when others have E."""
    options = {"A": "a", "B": "b", "C": "c", "E": None}
    doc = {"question": "Q?", "options": options, "answer_idx": "B"}
    text = render(task["doc_to_text"], doc)
    assert "\nA. a\nB. b\nC. c<|im_end|>" in text and "E." not in text
    assert ast.literal_eval(render(task["doc_to_choice"], doc)) == ["A. a", "B. b", "C. c"]
