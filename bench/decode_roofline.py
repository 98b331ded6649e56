"""Batch-1 decode against the memory-bandwidth roofline, measured in the same run.

At batch 1 every decode step reads every weight once (the tied embedding as the output layer;
the embedding lookup itself reads one row) plus the KV cache so far, and does ~2 FLOPs per
weight: far too few to be compute-bound, so the step cannot be faster than
``bytes read per token / memory bandwidth``. This script

1. measures the bandwidth now, in this run: the best of several copies of a 512 MiB torch
   tensor (bytes read + bytes written, the STREAM "copy" convention), and a read-only sum
   over the same tensor for reference;
2. computes the bytes each decode step reads for SmolLM2-135M-Instruct in fp32 and bf16
   (unique parameter bytes + the mean KV cache of the measured decode);
3. decodes greedily at batch 1 with the predictor's generation path
   (:class:`taigimed.serve.batching.ContinuousBatcher`, ``max_batch_size=1``, the path
   ``taigimed.serve.predictor`` serves) and with a bare transformers loop (the same model
   forward with a KV cache, no batcher) to tell the batcher's overhead from the model's;
4. does the same for the vLLM CPU runtime when its venv exists (``.venv-vllm``, built by the
   serving rehearsal's Makefile target; ``--vllm-python`` to point elsewhere), else prints a
   skip line.

Decode tokens/s exclude the prefill: ``(n - 1) / (time of last token - time of first)``.
The bandwidth and the decode runs take turns (bandwidth, fp32, bf16, bandwidth again), so the
bound is measured under the same load as the decode. Writes
``bench/results/decode_roofline.json``::

    python bench/decode_roofline.py [--tokens 48] [--repeats 2]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import _common
import torch

from taigimed.models import SMOLLM2_NAME, load_causal_lm, load_tokenizer, resolve_model
from taigimed.utils import REPO_ROOT, setup_logging, write_json

RESULT = _common.RESULTS / "decode_roofline.json"
GOAL = 0.6
VLLM_VENV = REPO_ROOT / ".venv-vllm"
PROMPT = "我這兩工頭殼痛閣有淡薄仔發燒，愛注意啥物？"
BYTES = {"float32": 4, "bfloat16": 2}


def copy_bandwidth(mib: int = 512, repeats: int = 5) -> dict[str, float]:
    """Best-of-N copy and read bandwidth of a large tensor, GB/s (10^9 bytes)."""
    n = mib * 2**20 // 4
    src = torch.ones(n, dtype=torch.float32)
    dst = torch.empty_like(src)
    dst.copy_(src)  # touch every page first
    best_copy = best_read = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        dst.copy_(src)
        best_copy = min(best_copy, time.perf_counter() - started)
        started = time.perf_counter()
        src.sum()
        best_read = min(best_read, time.perf_counter() - started)
    size = n * 4
    del src, dst
    return {
        "buffer_mib": mib,
        "copy_gb_s": round(2 * size / best_copy / 1e9, 2),  # read + write
        "read_gb_s": round(size / best_read / 1e9, 2),
    }


def weight_bytes(model: Any) -> int:
    """Bytes of the unique parameters (a tied embedding/output matrix counts once)."""
    seen: set[int] = set()
    total = 0
    for p in model.parameters():
        if p.data_ptr() in seen:
            continue
        seen.add(p.data_ptr())
        total += p.numel() * p.element_size()
    return total


def kv_bytes_per_position(model: Any, dtype_bytes: int) -> int:
    """Keys + values of one position over all layers."""
    c = model.config
    head_dim = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
    kv_heads = getattr(c, "num_key_value_heads", None) or c.num_attention_heads
    return 2 * c.num_hidden_layers * kv_heads * head_dim * dtype_bytes


def prompt_ids(tokenizer: Any) -> list[int]:
    """The predictor's chat encoding of one patient question."""
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": PROMPT}], add_generation_prompt=True, tokenize=False
    )
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def decode_batcher(model: Any, tokenizer: Any, ids: list[int], tokens: int) -> float:
    """Decode tokens/s of one request through the predictor's continuous batcher."""
    from taigimed.serve.batching import ContinuousBatcher, FinishEvent, SamplingParams, TokenEvent

    batcher = ContinuousBatcher(model, tokenizer, max_batch_size=1, batch_wait_ms=0)

    async def one() -> list[float]:
        handle = batcher.submit(ids, SamplingParams(max_tokens=tokens, ignore_eos=True))
        stamps = []
        async for event in handle:
            if isinstance(event, TokenEvent):
                stamps.append(time.perf_counter())
            elif not isinstance(event, FinishEvent):
                raise RuntimeError(f"generation failed: {event}")
        return stamps

    try:
        stamps = asyncio.run(one())
    finally:
        batcher.close()
    return (len(stamps) - 1) / (stamps[-1] - stamps[0])


@torch.inference_mode()
def decode_bare(model: Any, ids: list[int], tokens: int) -> float:
    """Decode tokens/s of a bare greedy loop: model forward + KV cache, nothing else."""
    from transformers import DynamicCache

    cache = DynamicCache()
    out = model(input_ids=torch.tensor([ids]), past_key_values=cache, use_cache=True)
    last = out.logits[:, -1].argmax(-1, keepdim=True)
    started = time.perf_counter()
    for _ in range(tokens - 1):
        out = model(input_ids=last, past_key_values=out.past_key_values, use_cache=True)
        last = out.logits[:, -1].argmax(-1, keepdim=True)
    return (tokens - 1) / (time.perf_counter() - started)


def vllm_arm(python: Path, model_dir: Path, tokens: int, dtypes: list[str]) -> dict[str, Any]:
    """Run bench/_vllm_decode.py in the vLLM venv; its JSON, or the reason it failed."""
    cmd = [str(python), str(Path(__file__).with_name("_vllm_decode.py")), str(model_dir)]
    cmd += ["--tokens", str(tokens), "--dtypes", *dtypes]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "VLLM_CPU_KVCACHE_SPACE": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        return {"error": f"rc={proc.returncode}: {proc.stderr.strip()[-800:]}"}
    return json.loads(lines[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tokens", type=int, default=48, help="tokens generated per run")
    parser.add_argument("--repeats", type=int, default=2, help="decode runs per arm (best kept)")
    parser.add_argument("--vllm-python", type=Path, default=VLLM_VENV / "bin" / "python")
    parser.add_argument("--out", type=Path, default=RESULT)
    args = parser.parse_args()
    setup_logging("WARNING")

    model_dir = resolve_model(SMOLLM2_NAME)
    tokenizer = load_tokenizer(model_dir)
    ids = prompt_ids(tokenizer)
    bandwidth: list[dict[str, float]] = []
    arms: dict[str, dict[str, Any]] = {}
    with _common.LoadSampler() as load:
        bandwidth.append(copy_bandwidth())
        for dtype in ("float32", "bfloat16"):
            model = load_causal_lm(model_dir, dtype=dtype, device="cpu")
            decode_bare(model, ids, 4)  # warm-up
            predictor = max(
                decode_batcher(model, tokenizer, ids, args.tokens) for _ in range(args.repeats)
            )
            bare = max(decode_bare(model, ids, args.tokens) for _ in range(args.repeats))
            weights = weight_bytes(model)
            mean_context = len(ids) + args.tokens / 2
            kv = int(kv_bytes_per_position(model, BYTES[dtype]) * mean_context)
            arms[dtype] = {
                "weight_bytes": weights,
                "kv_bytes_mean": kv,
                "bytes_per_token": weights + kv,
                "predictor_tokens_per_s": round(predictor, 2),
                "bare_transformers_tokens_per_s": round(bare, 2),
            }
            print(f"{dtype}: predictor {predictor:.1f} tokens/s, bare loop {bare:.1f}", flush=True)
            del model
        bandwidth.append(copy_bandwidth())
        vllm: dict[str, Any]
        if args.vllm_python.is_file():
            vllm = vllm_arm(args.vllm_python, model_dir, args.tokens, list(arms))
            bandwidth.append(copy_bandwidth())
        else:
            vllm = {"skipped": f"{args.vllm_python} not found (build .venv-vllm first)"}
            print(f"SKIP vLLM arm: {vllm['skipped']}")

    copy_gb_s = sum(b["copy_gb_s"] for b in bandwidth) / len(bandwidth)
    read_gb_s = sum(b["read_gb_s"] for b in bandwidth) / len(bandwidth)
    for dtype, arm in arms.items():
        bound = copy_gb_s * 1e9 / arm["bytes_per_token"]
        arm["bound_tokens_per_s"] = round(bound, 2)
        arm["bound_tokens_per_s_read_bw"] = round(read_gb_s * 1e9 / arm["bytes_per_token"], 2)
        arm["predictor_share_of_bound"] = round(arm["predictor_tokens_per_s"] / bound, 3)
        arm["bare_share_of_bound"] = round(arm["bare_transformers_tokens_per_s"] / bound, 3)
        arm["predictor_share_of_read_bw_bound"] = round(
            arm["predictor_tokens_per_s"] / arm["bound_tokens_per_s_read_bw"], 3
        )
        peer = vllm.get(dtype, {})
        if "tokens_per_s" in peer:
            peer["share_of_bound"] = round(peer["tokens_per_s"] / bound, 3)
    best = max(a["predictor_share_of_bound"] for a in arms.values())
    output = {
        "predictor_share_of_bound": {d: a["predictor_share_of_bound"] for d, a in arms.items()},
        "goal": GOAL,
        "meets_goal": best >= GOAL,
        "bandwidth_gb_s": {
            "copy": round(copy_gb_s, 2),
            "read": round(read_gb_s, 2),
            "measurements": bandwidth,
        },
        "predictor": arms,
        "vllm": vllm,
        "load": load.summary(),
        "setup": {
            "model": SMOLLM2_NAME,
            "prompt_tokens": len(ids),
            "generated_tokens": args.tokens,
            "repeats": args.repeats,
            "bound": "copy bandwidth (read + write bytes/s) / (unique weight bytes + mean KV "
            "cache bytes) per decode step",
            **_common.environment(),
        },
    }
    write_json(args.out, output)
    print(
        json.dumps(
            {
                "predictor_share_of_bound": output["predictor_share_of_bound"],
                "copy_gb_s": output["bandwidth_gb_s"]["copy"],
                "load": output["load"]["load_avg_1min_mean"],
            }
        )
        + f" -> {args.out}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
