"""Whole stages on the tiny Llama: learning, artifacts, merge exactness, resume, stage chaining.

One uninterrupted stage-1 run (module fixture) is the reference that the other tests compare
against: the resumed run must reproduce its loss curve, and stage 2 must start from its merged
weights.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from taigimed.config import ConfigError, load_config
from taigimed.models import load_causal_lm, resolve_model
from taigimed.train.config import TrainConfig
from taigimed.train.recipe import SimulatedCrash, StageRecipe, train_stage

ANSWERS = {
    1: ["Lim tsuí, hioh-khùn.", "Khì khuànn i-sing.", "Tsiah ioh-á ài tsiàu sî."],
    2: ["Guá thâu-khak thiànn.", "I tsa-hng huat-sio.", "Nâ-âu thiànn."],
}
SETTINGS = [
    "base_model=tiny-random-llama",
    "max_seq_len=96",
    "batch_size=2",
    "lora.rank=8",
    "lora.alpha=16",
    "lora.dropout=0.1",  # dropout on: resume must restore the RNG to reproduce the curve
    "lora.target_modules=[q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj]",
    "stage1.learning_rate=0.01",
    "stage1.max_steps=8",
    "stage2.learning_rate=0.01",
    "stage2.max_steps=3",
    "warmup_steps=0",
    "checkpoint_every=2",
    "eval_examples=4",
]


def write_chat(path: Path, stage: int, n: int) -> None:
    rows = []
    for i in range(n):
        answer = ANSWERS[stage][i % 3]
        messages = [{"role": "user", "content": f"Question {i % 5}?"}]
        if i % 4 == 0:  # some multi-turn examples, so packing sees different lengths
            messages += [{"role": "assistant", "content": answer}, {"role": "user", "content": "?"}]
        messages.append({"role": "assistant", "content": answer})
        rows.append({"id": f"s{stage}-{i}", "script": "tailo", "messages": messages})
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    data = tmp_path_factory.mktemp("data")
    for stage in (1, 2):
        write_chat(data / f"stage{stage}_train.jsonl", stage, 24)
        write_chat(data / f"stage{stage}_val.jsonl", stage, 4)
    return data


def config(*extra: str) -> TrainConfig:
    return load_config(TrainConfig, None, [*SETTINGS, *extra])


@pytest.fixture(scope="module")
def stage1(data_dir, tiny_model_dir, tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("run") / "stage1"
    metrics = train_stage(config(), 1, data_dir, out, tiny_model_dir)
    return out, metrics


def test_loss_decreases_on_a_tiny_model(stage1):
    _, metrics = stage1
    losses = [p["loss"] for p in metrics["loss_curve"]]
    assert len(losses) == 8
    # A random 64-wide model behind a frozen final norm and tiny tied embeddings cannot move
    # its logits far: a steady drop of a few tenths of a nat is what learning looks like here.
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3 - 0.2
    assert metrics["val_loss_after"] < metrics["val_loss_before"] - 0.2


def test_stage_writes_every_artifact(stage1):
    out, metrics = stage1
    assert (out / "adapter" / "adapter_model.safetensors").is_file()
    assert resolve_model(out / "merged") == out / "merged"  # a model dir the others accept
    assert (out / "merged" / "model.safetensors").is_file()
    assert "<|im_start|>" in (out / "merged" / "chat_template.jinja").read_text()
    assert (out / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    saved = json.loads((out / "metrics.json").read_text())
    for key in ("loss_curve", "tokens_per_s", "trainable_params", "peak_memory_mb"):
        assert saved[key], key
    # SmolLM2's template opens every chat with the same system prompt: the stage trained with
    # it held once per packed row, and says so.
    assert saved["share_prefix"] is True
    assert 0 < saved["computed_tokens"] < saved["train_tokens"]
    card = (out / "MODEL_CARD.md").read_text()
    assert f"{saved['computed_tokens']:,} of {saved['train_tokens']:,} tokens computed" in card
    for fact in (
        metrics["base_weights_sha256"],
        metrics["merged_weights_sha256"],
        metrics["data"]["stage1_train.jsonl"]["sha256"],
        metrics["git_commit"],
        "lora:",
        "not tracked (MLFLOW_TRACKING_URI unset)",
        "| base model licence | Apache-2.0 (SmolLM2 tokenizer; random weights) |",
    ):
        assert fact in card


def test_merged_logits_match_base_plus_adapter(stage1, tiny_model_dir):
    from peft import PeftModel

    out, _ = stage1
    ids = torch.tensor([list(range(200, 260))])
    base = load_causal_lm(tiny_model_dir)
    with torch.no_grad():
        before = base(input_ids=ids).logits
        with_adapter = PeftModel.from_pretrained(base, out / "adapter").eval()(input_ids=ids).logits
        merged = load_causal_lm(out / "merged")(input_ids=ids).logits
    assert (with_adapter - before).abs().max() > 1e-2  # the adapter changed something
    assert (merged - with_adapter).abs().max() < 1e-4


def test_resume_after_a_kill_reproduces_the_uninterrupted_run(
    stage1, data_dir, tiny_model_dir, tmp_path
):
    _, reference = stage1
    out = tmp_path / "stage1"
    with pytest.raises(SimulatedCrash):
        train_stage(config("stop_after_steps=5"), 1, data_dir, out, tiny_model_dir)
    # The kill left complete checkpoints (the last two kept) and no half-written outputs.
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-000002", "step-000004"]
    assert not (out / "adapter").exists() and not (out / "merged").exists()
    with pytest.raises(ConfigError, match="pass --resume"):
        train_stage(config(), 1, data_dir, out, tiny_model_dir)

    resumed = train_stage(config(), 1, data_dir, out, tiny_model_dir, resume=True)
    assert resumed["resumed_from_step"] == 4
    got = [p["loss"] for p in resumed["loss_curve"]]
    want = [p["loss"] for p in reference["loss_curve"]]
    assert got == pytest.approx(want, abs=1e-5)
    assert resumed["val_loss_after"] == pytest.approx(reference["val_loss_after"], abs=1e-5)


def test_resume_refuses_changed_settings(stage1, data_dir, tiny_model_dir, tmp_path):
    out = tmp_path / "stage1"
    with pytest.raises(SimulatedCrash):
        train_stage(config("stop_after_steps=2"), 1, data_dir, out, tiny_model_dir)
    with pytest.raises(ConfigError, match="seed changed"):
        train_stage(config("seed=1"), 1, data_dir, out, tiny_model_dir, resume=True)


def test_stage2_starts_from_stage1_merged_weights(stage1, data_dir, tmp_path):
    from safetensors.torch import load_file

    stage1_out, stage1_metrics = stage1
    merged1 = stage1_out / "merged"
    recipe = StageRecipe(config(), 2, data_dir, tmp_path / "stage2", merged1)
    recipe.preflight()
    recipe.setup()
    # Tensor by tensor, the model stage 2 trains is stage 1's merged model (LoRA B is zero).
    initial = {
        name.replace(".base_layer", ""): tensor
        for name, tensor in recipe.model.get_base_model().state_dict().items()
        if "lora_" not in name
    }
    for name, tensor in load_file(merged1 / "model.safetensors").items():
        assert torch.equal(initial[name], tensor), name
    ids = torch.tensor([list(range(300, 340))])
    with torch.no_grad():
        recipe.model.eval()
        torch.testing.assert_close(
            recipe.model(input_ids=ids).logits, load_causal_lm(merged1)(input_ids=ids).logits
        )

    metrics = train_stage(config(), 2, data_dir, tmp_path / "stage2-run", merged1)
    assert metrics["base_weights_sha256"] == stage1_metrics["merged_weights_sha256"]
    assert metrics["merged_weights_sha256"] != stage1_metrics["merged_weights_sha256"]
    card = (tmp_path / "stage2-run" / "MODEL_CARD.md").read_text()
    assert stage1_metrics["merged_weights_sha256"] in card
    # stage 2's base is stage 1's merge: the licence is still the original base's
    assert "| base model licence | Apache-2.0 (SmolLM2 tokenizer; random weights) |" in card


def test_mlflow_run_gets_params_metrics_artifacts_and_id_in_card(
    data_dir, tiny_model_dir, tmp_path, monkeypatch
):
    mlflow = pytest.importorskip("mlflow")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", (tmp_path / "mlruns").as_uri())
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # file store: no server for the test
    out = tmp_path / "stage1"
    metrics = train_stage(config("stage1.max_steps=2"), 1, data_dir, out, tiny_model_dir)
    run_id = metrics["mlflow_run_id"]
    assert run_id and run_id in (out / "MODEL_CARD.md").read_text()
    client = mlflow.tracking.MlflowClient()
    run = client.get_run(run_id)
    assert run.data.params["lora.rank"] == "8"
    assert run.info.status == "FINISHED"
    assert [m.step for m in client.get_metric_history(run_id, "loss")] == [1, 2]
    artifacts = {a.path for a in client.list_artifacts(run_id)}
    assert {"metrics.json", "loss.png", "MODEL_CARD.md"} <= artifacts
