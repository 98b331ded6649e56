"""MedQA scoring against lm-evaluation-harness: same questions, prompt, continuation and model.

lm-eval runs the task written as YAML in ``bench/lm_eval_tasks/taigimed_medqa.yaml`` (a local
JSONL through the ``json`` dataset builder, no hub) with its ``hf`` backend on CPU, fp32, batch
size 8; taigimed runs ``taigimed evaluate``'s mcq task (:func:`taigimed.eval.mcq.evaluate_mcq`,
``configs/demo-cpu/eval.yaml`` settings: 8 questions per pass, prompt KV cache shared by the
options). Both load SmolLM2-135M-Instruct from the same converted directory. Per data set, the
arms run back to back after a 2-question warm-up of each, the order alternating between sets.

What is compared:

* speed: questions/s of the whole scoring call (taigimed: read + encode + score + summarise;
  lm-eval: ``simple_evaluate`` on an already loaded model: dataset, requests, scoring, metrics;
  the task index and model loading are outside both);
* correctness: both accuracies (lm-eval ``acc`` = taigimed ``normalize=none``, ``acc_norm`` =
  ``normalize=chars``: the same per-option log-likelihoods, divided the same way), how many
  items each pair scores the same (same predicted option), the largest difference between the
  two per-option log-likelihoods, whether lm-eval's rendered prompts and choices equal
  taigimed's, and how many continuations lm-eval tokenises differently (it encodes prompt +
  continuation together and splits; taigimed encodes them apart).

Data: the first 32 questions of ``data/demo/medqa_demo.jsonl``, plus a fixed seeded sample of
``../shared/data/medqa_tw/dev.jsonl`` when present (skipped with a line when absent).
Writes ``bench/results/eval_vs_lm_eval.json``. Needs ``.venv-bench`` (``make bench-env``)::

    .venv-bench/bin/python bench/eval_vs_lm_eval.py [--shared-questions 40]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import _common
import yaml

from taigimed.eval.config import MCQConfig
from taigimed.eval.mcq import (
    continuation_text,
    encode,
    evaluate_mcq,
    load_mcq,
    prompt_text,
    summarise,
)
from taigimed.models import SMOLLM2_NAME, load_causal_lm, load_tokenizer, resolve_model
from taigimed.utils import REPO_ROOT, setup_logging, write_json

RESULT = _common.RESULTS / "eval_vs_lm_eval.json"
MCQ_PROMPT = "mcq.system_prompt=你是一位台灣的醫學專家，請回答下面的醫學選擇題。"
TASK_YAML = REPO_ROOT / "bench" / "lm_eval_tasks" / "taigimed_medqa.yaml"
GOAL = 2.0
MAX_ACCURACY_GAP = 0.01  # accuracies within 1 point
MIN_AGREEMENT = 0.95  # >= 95% of items scored the same
BATCH = 8


def eval_config() -> MCQConfig:
    """The demo eval's mcq settings (configs/demo-cpu/eval.yaml), summed log-probs."""
    from taigimed.config import load_config
    from taigimed.eval.config import EvalConfig

    # The base model has no taigimed.json, so the prompt is set here, as the YAML task states it
    # (tests/unit/test_bench_peers.py holds the two equal).
    cfg = load_config(EvalConfig, REPO_ROOT / "configs/demo-cpu/eval.yaml", [MCQ_PROMPT]).mcq
    return dataclasses.replace(cfg, normalize="none", max_questions=0)


def sample_file(source: Path, n: int, seed: int | None, out: Path) -> Path:
    """The first ``n`` lines (seed None) or a seeded sample in file order, as its own JSONL.

    Both arms then read exactly this file (lm-eval has no "first n" of its own that we trust
    to match; ``--limit`` would do, but one file keeps the comparison obvious).
    """
    lines = source.read_text(encoding="utf-8").splitlines()
    if seed is None:
        picked = list(range(min(n, len(lines))))
    else:
        picked = sorted(random.Random(seed).sample(range(len(lines)), min(n, len(lines))))
    out.write_text("".join(lines[i] + "\n" for i in picked), encoding="utf-8")
    return out


def task_dir(name: str, data: Path, where: Path) -> Path:
    """The committed task YAML with this run's task name and absolute data file."""
    spec = yaml.safe_load(TASK_YAML.read_text(encoding="utf-8"))
    spec["task"] = name
    spec["dataset_kwargs"] = {"data_files": {"test": str(data.resolve())}}
    folder = where / name
    folder.mkdir(parents=True)
    (folder / f"{name}.yaml").write_text(yaml.safe_dump(spec, allow_unicode=True), "utf-8")
    return folder


def run_taigimed(model: Any, tokenizer: Any, data: Path, cfg: MCQConfig) -> dict[str, Any]:
    started = time.perf_counter()
    items = load_mcq(data, max_questions=cfg.max_questions)
    result = evaluate_mcq(model, tokenizer, items, cfg, progress=False)
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "items": items, "result": result}


def run_lm_eval(lm: Any, task: str, task_manager: Any, limit: int | None = None) -> dict[str, Any]:
    from lm_eval import simple_evaluate

    started = time.perf_counter()
    out = simple_evaluate(
        model=lm,
        tasks=[task],
        task_manager=task_manager,
        batch_size=BATCH,
        log_samples=True,
        bootstrap_iters=0,
        verbosity="ERROR",
        limit=limit,
    )
    seconds = time.perf_counter() - started
    samples = sorted(out["samples"][task], key=lambda s: s["doc_id"])
    return {"seconds": seconds, "metrics": out["results"][task], "samples": samples}


def loglikelihoods(sample: dict[str, Any]) -> list[float]:
    """Per-choice log-likelihoods from a logged lm-eval sample."""
    values = []
    for resp in sample["filtered_resps"]:
        first = resp[0] if isinstance(resp, list | tuple) else resp
        values.append(float(first))
    return values


def argmax(values: list[float]) -> int:
    return max(range(len(values)), key=lambda i: (values[i], -i))


def compare(
    tokenizer: Any, ours: dict[str, Any], peer: dict[str, Any], cfg: MCQConfig
) -> dict[str, Any]:
    """Accuracies, per-item agreement, log-likelihood gaps, prompt and tokenisation checks."""
    items = ours["items"]
    samples = peer["samples"]
    if len(items) != len(samples):
        raise RuntimeError(f"taigimed scored {len(items)} items, lm-eval {len(samples)}")
    encoded = [encode(tokenizer, item, cfg) for item in items]
    raw = [row["scores"] for row in ours["result"].rows]  # normalize=none: summed log-probs
    chars_cfg = dataclasses.replace(cfg, normalize="chars")
    chars = summarise(items, [encode(tokenizer, i, chars_cfg) for i in items], raw, chars_cfg)
    tokens_cfg = dataclasses.replace(cfg, normalize="tokens")
    tokens = summarise(items, [encode(tokenizer, i, tokens_cfg) for i in items], raw, tokens_cfg)
    same_sum = same_norm = prompt_same = choices_same = split_differs = 0
    max_gap = 0.0
    acc_peer = acc_norm_peer = 0.0
    disagreements = []
    for item, enc, sample, row_sum, row_chars in zip(
        items, encoded, samples, ours["result"].rows, chars.rows, strict=True
    ):
        lls = loglikelihoods(sample)
        max_gap = max(max_gap, *(abs(a - b) for a, b in zip(lls, row_sum["scores"], strict=True)))
        contexts = [arg[0] for arg in sample["arguments"]]
        conts = [arg[1] for arg in sample["arguments"]]
        prompt_same += all(c == prompt_text(tokenizer, item, cfg) for c in contexts)
        ours_conts = [continuation_text(k, v, cfg.continuation) for k, v in item.options.items()]
        choices_same += conts == ours_conts
        for context, cont, ids in zip(contexts, conts, enc.options, strict=True):
            whole = tokenizer(context + cont, add_special_tokens=False)["input_ids"]
            ctx = tokenizer(context, add_special_tokens=False)["input_ids"]
            split_differs += whole[len(ctx) :] != ids
        letters = item.letters
        peer_sum = letters[argmax(lls)]
        norm = [ll / len(c) for ll, c in zip(lls, conts, strict=True)]
        peer_norm = letters[argmax(norm)]
        acc_peer += float(sample["acc"])
        acc_norm_peer += float(sample["acc_norm"])
        same_sum += peer_sum == row_sum["predicted"]
        same_norm += peer_norm == row_chars["predicted"]
        if peer_sum != row_sum["predicted"] or peer_norm != row_chars["predicted"]:
            disagreements.append(
                {
                    "id": item.id,
                    "taigimed_sum": row_sum["predicted"],
                    "lm_eval_acc": peer_sum,
                    "taigimed_chars": row_chars["predicted"],
                    "lm_eval_acc_norm": peer_norm,
                    "taigimed_logprobs": row_sum["scores"],
                    "lm_eval_logprobs": [round(x, 4) for x in lls],
                }
            )
    n = len(items)
    acc_ours = ours["result"].metrics["medqa_accuracy"]
    acc_norm_ours = chars.metrics["medqa_accuracy"]
    figures = {
        "questions": n,
        "accuracy": {
            "sum (lm-eval acc)": {"taigimed": acc_ours, "lm_eval": acc_peer / n},
            "per char (lm-eval acc_norm)": {
                "taigimed": acc_norm_ours,
                "lm_eval": acc_norm_peer / n,
            },
            "per token (taigimed's default, for reference)": {
                "taigimed": tokens.metrics["medqa_accuracy"]
            },
        },
        "same_prediction_share": {"sum": same_sum / n, "per_char": same_norm / n},
        "max_abs_loglikelihood_difference": round(max_gap, 5),
        "prompts_identical": f"{prompt_same}/{n}",
        "choices_identical": f"{choices_same}/{n}",
        "continuations_tokenised_differently": split_differs,
        "tied_questions_taigimed": ours["result"].metrics["medqa_tied_questions"],
        "disagreements": disagreements,
    }
    gaps = [
        abs(v["taigimed"] - v["lm_eval"]) for v in figures["accuracy"].values() if "lm_eval" in v
    ]
    figures["correct"] = max(gaps) <= MAX_ACCURACY_GAP and min(
        figures["same_prediction_share"].values()
    ) >= (MIN_AGREEMENT)
    return figures


def bench_one(
    name: str,
    data: Path,
    model: Any,
    tokenizer: Any,
    lm: Any,
    tm_dir: Path,
    cfg: MCQConfig,
    peer_first: bool,
) -> dict[str, Any]:
    """Both arms once on one file, back to back, then the comparison."""
    from lm_eval.tasks import TaskManager

    task = f"taigimed_medqa_{name}"
    task_manager = TaskManager(include_path=str(task_dir(task, data, tm_dir)))
    # warm-up, not timed: first-call allocations, and the json builder's dataset cache
    warm = load_mcq(data, max_questions=2)
    evaluate_mcq(model, tokenizer, warm, cfg, progress=False)
    run_lm_eval(lm, task, task_manager, limit=2)
    if peer_first:
        peer = run_lm_eval(lm, task, task_manager)
        ours = run_taigimed(model, tokenizer, data, cfg)
    else:
        ours = run_taigimed(model, tokenizer, data, cfg)
        peer = run_lm_eval(lm, task, task_manager)
    n = len(ours["items"])
    figures = compare(tokenizer, ours, peer, cfg)
    speedup = round(peer["seconds"] / ours["seconds"], 3)
    print(
        f"{name}: {n} questions; taigimed {n / ours['seconds']:.2f} q/s, lm-eval "
        f"{n / peer['seconds']:.2f} q/s (x{speedup}); accuracy {figures['accuracy']}, "
        f"same prediction {figures['same_prediction_share']}, "
        f"max log-lik gap {figures['max_abs_loglikelihood_difference']}",
        flush=True,
    )
    return {
        "data": str(data.relative_to(REPO_ROOT)) if data.is_relative_to(REPO_ROOT) else name,
        "order": "lm-eval, then taigimed" if peer_first else "taigimed, then lm-eval",
        "speedup_vs_lm_eval": speedup,
        "taigimed": {
            "seconds": round(ours["seconds"], 2),
            "questions_per_s": round(n / ours["seconds"], 3),
        },
        "lm_eval": {
            "seconds": round(peer["seconds"], 2),
            "questions_per_s": round(n / peer["seconds"], 3),
        },
        "lm_eval_metrics": {
            k: v for k, v in peer["metrics"].items() if isinstance(v, int | float | str)
        },
        **figures,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--demo-questions", type=int, default=32, help="first N demo questions")
    parser.add_argument("--shared-questions", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=RESULT)
    args = parser.parse_args()
    skip = _common.missing_module_line("lm_eval", "eval_vs_lm_eval")
    if skip:
        print(skip)
        return 0
    setup_logging("WARNING")
    from lm_eval.models.huggingface import HFLM

    cfg = eval_config()
    model_dir = resolve_model(SMOLLM2_NAME)
    tokenizer = load_tokenizer(model_dir)
    model = load_causal_lm(model_dir, device="cpu")
    lm = HFLM(pretrained=str(model_dir), dtype="float32", device="cpu", batch_size=BATCH)
    work = Path(tempfile.mkdtemp(prefix="bench-lm-eval-"))
    sets = {"demo": sample_file(_common.DEMO_MEDQA, args.demo_questions, None, work / "demo.jsonl")}
    skipped = None
    if _common.SHARED_MEDQA_DEV.is_file():
        sets["medqa_tw_dev_sample"] = sample_file(
            _common.SHARED_MEDQA_DEV, args.shared_questions, args.seed, work / "dev_sample.jsonl"
        )
    else:
        skipped = f"{_common.SHARED_MEDQA_DEV} is absent: the shared dev sample is skipped"
        print(f"SKIP shared MedQA-TW sample: {skipped}")
    results = {}
    with _common.LoadSampler() as load:
        for i, (name, data) in enumerate(sets.items()):
            results[name] = bench_one(name, data, model, tokenizer, lm, work, cfg, i % 2 == 1)
    results["demo"]["data"] = f"first {args.demo_questions} questions of data/demo/medqa_demo.jsonl"
    if "medqa_tw_dev_sample" in results:
        results["medqa_tw_dev_sample"]["data"] = (
            f"{args.shared_questions} questions of ../shared/data/medqa_tw/dev.jsonl "
            f"(random.Random({args.seed}).sample of line numbers, file order)"
        )
    output = {
        "speedup_vs_lm_eval": min(r["speedup_vs_lm_eval"] for r in results.values()),
        "goal": GOAL,
        "correct": all(r["correct"] for r in results.values()),
        "correctness_rule": f"accuracies within {MAX_ACCURACY_GAP:.0%} and >= "
        f"{MIN_AGREEMENT:.0%} of items with the same predicted option",
        "sets": results,
        "skipped": skipped,
        "load": load.summary(),
        "setup": {
            "model": SMOLLM2_NAME,
            "dtype": "float32",
            "device": "cpu",
            "lm_eval_backend": "hf",
            "lm_eval_batch_size": BATCH,
            "taigimed_batch_questions": cfg.batch_questions,
            "taigimed_share_prompt_cache": cfg.share_prompt_cache,
            "continuation": cfg.continuation,
            "task_yaml": str(TASK_YAML.relative_to(REPO_ROOT)),
            "timing": "one timed run of each arm per set, back to back after a 2-question "
            "warm-up of each; the order alternates between sets",
            **_common.environment(),
        },
    }
    output["meets_goal"] = output["correct"] and output["speedup_vs_lm_eval"] >= GOAL
    write_json(args.out, output)
    print(
        json.dumps({k: output[k] for k in ("speedup_vs_lm_eval", "correct", "meets_goal")})
        + f" load {output['load']['load_avg_1min_mean']} -> {args.out}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
