"""One model spec from training to serving (taigimed.json).

A tiny stage trains on data carrying the demo profile's system prompt; its merged model then
holds the spec, and the predictor prompts it with the trained text when a client sends no
system message. The served prompt may differ only through an explicit override, which the
model card shows as one.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from taigimed.config import load_config
from taigimed.data.config import DataConfig
from taigimed.eval.config import EvalConfig, with_model_spec
from taigimed.serve import openai_schema as oa
from taigimed.serve.config import PredictorSettings, ServeConfig
from taigimed.serve.exchange import CHAT
from taigimed.serve.metrics import PredictorMetrics
from taigimed.serve.predictor import TransformersLLM
from taigimed.spec import SPEC_FILE, read_spec, serving_card, with_default_system_prompt
from taigimed.train.config import TrainConfig
from taigimed.train.recipe import train_stage
from taigimed.utils import REPO_ROOT

PROFILES = ("demo-cpu", "gpu-8b")
TRAINED_PROMPT = load_config(DataConfig, REPO_ROOT / "configs/demo-cpu/data.yaml").system_prompt


def write_chat(path: Path, n: int) -> None:
    rows = []
    for i in range(n):
        messages = [
            {"role": "system", "content": TRAINED_PROMPT},
            {"role": "user", "content": f"問題 {i % 5}？"},
            {"role": "assistant", "content": "Lim tsuí, hioh-khùn."},
        ]
        rows.append({"id": f"s-{i}", "script": "tailo", "messages": messages})
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_model_dir) -> Path:
    """Stage 1 then stage 2 on the tiny Llama; returns stage 2's merged directory."""
    data = tmp_path_factory.mktemp("data")
    for stage in (1, 2):
        write_chat(data / f"stage{stage}_train.jsonl", 12)
    settings = [
        "base_model=tiny-random-llama",
        "max_seq_len=256",
        "batch_size=4",
        "stage1.max_steps=1",
        "stage2.max_steps=1",
        "eval_examples=0",
        "warmup_steps=0",
    ]
    cfg = load_config(TrainConfig, None, settings)
    run = tmp_path_factory.mktemp("run")
    train_stage(cfg, 1, data, run / "stage1", "tiny-random-llama")
    train_stage(cfg, 2, data, run / "stage2", run / "stage1" / "merged")
    return run / "stage2" / "merged"


def served_prompt_text(model_dir: Path, messages: list[dict]) -> str:
    """What the predictor feeds the model for ``messages`` (its own chat rendering)."""
    llm = TransformersLLM("taigimed", model_dir, PredictorSettings(), PredictorMetrics("t"))
    llm.load()
    try:
        ids = llm.encode_chat([oa.ChatMessage(**m) for m in messages])
        return llm.tokenizer.decode(ids)
    finally:
        llm.stop()


def test_training_writes_the_spec_into_the_merged_model(trained):
    spec = read_spec(trained)
    assert (trained / SPEC_FILE).is_file() and spec is not None
    assert spec.system_prompt == TRAINED_PROMPT
    assert spec.base_model == "tiny-random-llama"  # stage 2 inherits stage 1's base id
    assert spec.max_seq_len == 256 and spec.stage == 2
    assert {"train_sha256", "train_config_sha256", "base_weights_sha256"} <= set(spec.fingerprints)
    assert TRAINED_PROMPT in spec.chat_template
    assert spec.chat_template.count("taigimed:default-system-prompt") == 2  # not stacked


def test_served_prompt_is_the_trained_one_unless_explicitly_overridden(trained):
    """Fails when serving prompts the model with text it was not trained on, silently."""
    spec = read_spec(trained)
    for profile in PROFILES:
        cfg = load_config(ServeConfig, REPO_ROOT / "configs" / profile / "serve.yaml")
        assert cfg.system_prompt == "", f"{profile}/serve.yaml overrides the trained prompt"
    cfg = ServeConfig()
    assert not cfg.system_prompt, "ServeConfig's default must be the trained prompt"
    # The guard adds nothing without an override, so the model's template supplies the prompt.
    ex = CHAT.read(
        json.dumps({"messages": [{"role": "user", "content": "頭殼痛"}]}).encode(),
        cfg,
        _admission(cfg),
        tracker=None,
    )
    assert [m["role"] for m in ex.messages] == ["user"]
    served = served_prompt_text(trained, ex.messages)
    assert spec.system_prompt in served
    assert served_prompt_text(trained, [{"role": "system", "content": "別的"}, *ex.messages])
    assert serving_card(spec)["system_prompt_source"] == SPEC_FILE

    # An explicit override is sent by the guard and shown as one in the card.
    override = ServeConfig(system_prompt="你是另外一个助理。")
    ex = CHAT.read(
        json.dumps({"messages": [{"role": "user", "content": "頭殼痛"}]}).encode(),
        override,
        _admission(override),
        tracker=None,
    )
    assert ex.messages[0] == {"role": "system", "content": "你是另外一个助理。"}
    served = served_prompt_text(trained, ex.messages)
    assert "你是另外一个助理。" in served and spec.system_prompt not in served
    card = serving_card(spec, override.system_prompt)
    assert card["system_prompt_source"] == "override"


def test_eval_reads_prompt_and_lengths_from_the_spec(trained, repo_root):
    spec = read_spec(trained)
    for profile in PROFILES:
        cfg = load_config(EvalConfig, repo_root / "configs" / profile / "eval.yaml")
        resolved, sources = with_model_spec(cfg, spec)
        assert resolved.mcq.system_prompt == TRAINED_PROMPT
        assert resolved.lm.max_tokens == resolved.mcq.max_prompt_tokens == 256
        assert set(sources.values()) == {SPEC_FILE}
    explicit = load_config(EvalConfig, None, ["lm.max_tokens=64", "mcq.system_prompt=x"])
    resolved, sources = with_model_spec(explicit, spec)
    assert resolved.lm.max_tokens == 64 and resolved.mcq.system_prompt == "x"
    assert sources["lm.max_tokens"] == "config"


@pytest.mark.parametrize("profile", PROFILES)
def test_each_profile_declares_the_base_model_and_length_once(profile):
    """data.yaml's tokenizer and max_tokens are the model train.yaml trains and its length
    (the pipeline also passes its base_model to prepare)."""
    data = load_config(DataConfig, REPO_ROOT / "configs" / profile / "data.yaml")
    train = load_config(TrainConfig, REPO_ROOT / "configs" / profile / "train.yaml")
    assert data.tokenizer == train.base_model
    assert data.max_tokens == train.max_seq_len


def test_default_prompt_template_is_idempotent_and_keeps_client_prompts(tiny_model_dir):
    from taigimed.models import load_tokenizer

    tok = load_tokenizer(tiny_model_dir)
    once = with_default_system_prompt(tok.chat_template, 'A「引號」"q"')
    assert with_default_system_prompt(once, 'A「引號」"q"') == once
    tok.chat_template = once
    user = [{"role": "user", "content": "hi"}]
    assert 'A「引號」"q"' in tok.apply_chat_template(user, tokenize=False)
    mine = [{"role": "system", "content": "mine"}, *user]
    text = tok.apply_chat_template(mine, tokenize=False)
    assert "mine" in text and "引號" not in text
    assert with_default_system_prompt(once, "") == with_default_system_prompt(tok.chat_template, "")


def _admission(cfg: ServeConfig):
    from taigimed.serve.admission import Admission
    from taigimed.serve.metrics import GuardMetrics

    return Admission(cfg.limits, GuardMetrics("t"), set(), set())


def test_data_prep_and_eval_flag_figure_questions_with_one_detector():
    """MedQA's figure flag in eval breakdowns is the same test data prep drops items with: a
    question that only mentions an ECG (心電圖) is not a figure question in either."""
    from taigimed.data.normalise import needs_figure
    from taigimed.eval.mcq import derive_flags

    for question in (
        "胸部X光如附圖，最可能的診斷為何？",
        "心電圖顯示 ST 段上升，下一步？",
        "圖A 所示為何",
    ):
        assert derive_flags(question)["figure"] == needs_figure(question), question
    assert not derive_flags("心電圖顯示 ST 段上升，下一步？")["figure"]
