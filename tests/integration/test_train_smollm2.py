"""Both stages on the real SmolLM2-135M through the CLI, a handful of steps each."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from taigimed.cli import main
from taigimed.utils import REPO_ROOT

QUESTIONS = ["頭殼疼欲按怎？", "嗽三工矣，愛看醫生無？", "血壓懸愛注意啥物？"]
ANSWERS = [
    "加啉水，歇睏。若是無較好，愛去看醫生。",
    "若是發燒、喘袂過，愛緊去看醫生。",
    "少食鹹，定定量血壓，照醫生的吩咐食藥仔。",
]


def write_stage(data: Path, stage: int) -> None:
    for split, n in (("train", 16), ("val", 4)):
        rows = [
            {
                "id": f"s{stage}-{split}-{i}",
                "script": "hanji",
                "messages": [
                    {"role": "user", "content": QUESTIONS[i % 3] * (1 + i % 2)},
                    {"role": "assistant", "content": ANSWERS[(i + stage) % 3]},
                ],
            }
            for i in range(n)
        ]
        text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
        (data / f"stage{stage}_{split}.jsonl").write_text(text)


@pytest.mark.slow
def test_two_stages_on_smollm2_via_cli(tmp_path, smollm2_dir):
    data = tmp_path / "data"
    data.mkdir()
    write_stage(data, 1)
    write_stage(data, 2)
    config = REPO_ROOT / "configs" / "demo-cpu" / "train.yaml"
    small = [
        "max_seq_len=128",
        "stage1.max_steps=3",
        "stage2.max_steps=3",
        "eval_examples=4",
        "checkpoint_every=2",
    ]
    run = tmp_path / "run"
    for stage in (1, 2):
        args = [
            "train",
            "--stage",
            str(stage),
            "--config",
            str(config),
            "--data",
            str(data),
            "--out",
            str(run / f"stage{stage}"),
            *small,
        ]
        assert main(args) == 0
    m1 = json.loads((run / "stage1" / "metrics.json").read_text())
    m2 = json.loads((run / "stage2" / "metrics.json").read_text())
    # Stage 2 defaulted to stage 1's merged model as its base.
    assert m2["base_dir"] == str(run / "stage1" / "merged")
    assert m2["base_weights_sha256"] == m1["merged_weights_sha256"]
    for m in (m1, m2):
        assert m["steps"] == 3 and m["tokens_per_s"] > 0
        assert m["val_loss_after"] < m["val_loss_before"]
    for name in ("adapter", "merged", "metrics.json", "loss.png", "MODEL_CARD.md", "checkpoints"):
        assert (run / "stage2" / name).exists(), name
