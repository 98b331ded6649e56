"""Serving load benchmark: continuous batching vs one request at a time, through the guard.

For each predictor mode -- ``batched`` (max_batch_size=16) and ``baseline`` (max_batch_size=1,
the naive one-request-at-a-time server) -- this starts the real predictor and guard processes
on 127.0.0.1, then runs closed-loop async clients at concurrency 1, 4 and 16. Every request asks
for exactly ``--max-tokens`` tokens (``ignore_eos``) so both modes do the same work.

Per level: output tokens/s, requests/s, p50/p95 latency, error rate. Top level:
``speedup`` = batched / baseline output tokens/s at concurrency 16, ``error_rate`` over all
levels, and ``guard_overhead_ms_p50``: the median extra latency of going through the guard,
from paired identical requests sent straight to the predictor and through the guard.

    python bench/serve_load.py                      # SmolLM2, writes bench/results/serve_load.json
    python bench/serve_load.py --model tiny-random-llama --out /tmp/x.json   # quick check
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
from _servers import QUESTIONS, start

REPO = Path(__file__).resolve().parents[1]
MODEL_NAME = "taigimed"


def body(i: int, max_tokens: int) -> dict:
    # With a system message of its own the guard adds none, so the predictor sees the same
    # prompt whether the request comes straight or through the guard (a fair pairing).
    return {
        "model": MODEL_NAME,
        "messages": [
            {"role": "system", "content": "You are a careful health educator."},
            {"role": "user", "content": QUESTIONS[i % len(QUESTIONS)]},
        ],
        "max_tokens": max_tokens,
        "temperature": 0,
        "ignore_eos": True,
    }


async def run_level(url: str, concurrency: int, per_client: int, max_tokens: int) -> dict:
    """Closed loop: each client sends its requests one after another."""
    latencies: list[float] = []
    tokens = errors = 0

    async def client(cid: int, http: httpx.AsyncClient) -> None:
        nonlocal tokens, errors
        for k in range(per_client):
            started = time.perf_counter()
            try:
                resp = await http.post(
                    f"{url}/openai/v1/chat/completions", json=body(cid * per_client + k, max_tokens)
                )
            except httpx.HTTPError:
                errors += 1
                continue
            latencies.append(time.perf_counter() - started)
            if resp.status_code != 200:
                errors += 1
                continue
            tokens += resp.json()["usage"]["completion_tokens"]

    limits = httpx.Limits(max_connections=concurrency + 4)
    async with httpx.AsyncClient(timeout=900, limits=limits) as http:
        started = time.perf_counter()
        await asyncio.gather(*(client(c, http) for c in range(concurrency)))
        wall = time.perf_counter() - started
    n = concurrency * per_client
    lat = sorted(latencies)
    return {
        "concurrency": concurrency,
        "requests": n,
        "errors": errors,
        "error_rate": errors / n,
        "wall_s": round(wall, 3),
        "output_tokens": tokens,
        "output_tokens_per_s": round(tokens / wall, 3),
        "requests_per_s": round((n - errors) / wall, 4),
        "latency_p50_s": round(percentile(lat, 50), 4),
        "latency_p95_s": round(percentile(lat, 95), 4),
    }


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    k = (len(values) - 1) * q / 100
    lo, hi = int(k), min(int(k) + 1, len(values) - 1)
    return values[lo] + (values[hi] - values[lo]) * (k - lo)


async def guard_overhead(predictor: str, guard: str, pairs: int) -> dict:
    """Paired identical requests, straight to the predictor and through the guard."""
    diffs, internal = [], []
    async with httpx.AsyncClient(timeout=300) as http:
        for i in range(pairs + 2):
            req = body(i, 2)
            t0 = time.perf_counter()
            direct = await http.post(f"{predictor}/openai/v1/chat/completions", json=req)
            t1 = time.perf_counter()
            via = await http.post(f"{guard}/openai/v1/chat/completions", json=req)
            t2 = time.perf_counter()
            if i < 2 or direct.status_code != 200 or via.status_code != 200:
                continue  # the first pairs warm caches and connections
            diffs.append((t2 - t1) - (t1 - t0))
            internal.append(float(via.headers["x-taigimed-guard-overhead-ms"]))
    return {
        "pairs": len(diffs),
        "end_to_end_ms_p50": round(statistics.median(diffs) * 1000, 3),
        "internal_ms_p50": round(statistics.median(internal), 3),
    }


def run_mode(name: str, model_dir: str, args: argparse.Namespace, tmp: Path) -> dict:
    batch = 16 if name == "batched" else 1
    overrides = [
        f"predictor.max_batch_size={batch}",
        "predictor.max_queue=64",
        f"predictor.torch_threads={args.threads}",
    ]
    predictor = start(
        "taigimed.serve.predictor",
        ["--model-dir", model_dir, "--model-name", MODEL_NAME, "--model-version", name, *overrides],
        tmp,
    )
    guard = start(
        "taigimed.serve.guard",
        [
            "--predictor-url",
            predictor.url,
            "--model-version",
            name,
            f"review.store_url=sqlite:///{tmp / (name + '.db')}",
            "review.confidence_threshold=0.0",
        ],
        tmp,
        {"TAIGIMED_API_TOKENS": ""},
    )
    try:
        asyncio.run(run_level(guard.url, 1, 1, args.max_tokens))  # warm-up
        levels = []
        for c in args.levels:
            per_client = max(1, max(c, args.min_requests) // c)
            result = asyncio.run(run_level(guard.url, c, per_client, args.max_tokens))
            print(f"  {name:8s} c={c:<3d} {json.dumps(result)}", flush=True)
            levels.append(result)
        overhead = None
        if name == "batched":
            overhead = asyncio.run(guard_overhead(predictor.url, guard.url, args.overhead_pairs))
            print(f"  guard overhead {overhead}", flush=True)
        return {"max_batch_size": batch, "levels": levels, "guard_overhead": overhead}
    finally:
        guard.stop()
        predictor.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2-135m-instruct", help="model name or dir")
    parser.add_argument("--levels", default="1,4,16", help="concurrency levels")
    parser.add_argument("--max-tokens", type=int, default=32, help="tokens per answer")
    parser.add_argument(
        "--min-requests", type=int, default=8, help="requests per level (at least 1 per client)"
    )
    parser.add_argument("--overhead-pairs", type=int, default=30)
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads in the predictor (1: on a shared 2-core machine, 2 threads thrash)",
    )
    parser.add_argument("--out", type=Path, default=REPO / "bench/results/serve_load.json")
    args = parser.parse_args()
    args.levels = [int(x) for x in args.levels.split(",")]

    sys.path.insert(0, str(REPO / "src"))
    from taigimed.models import resolve_model
    from taigimed.utils import git_commit, write_json

    model_dir = str(resolve_model(args.model))
    load_start = os.getloadavg()
    started = time.time()
    with tempfile.TemporaryDirectory(prefix="serve-load-") as tmp:
        modes = {m: run_mode(m, model_dir, args, Path(tmp)) for m in ("batched", "baseline")}
    top = max(args.levels)

    def tps(mode: str) -> float:
        return next(x for x in modes[mode]["levels"] if x["concurrency"] == top)[
            "output_tokens_per_s"
        ]

    all_levels = [lvl for m in modes.values() for lvl in m["levels"]]
    result = {
        "benchmark": "serve_load",
        "speedup": round(tps("batched") / tps("baseline"), 3),
        "speedup_definition": f"batched / baseline output tokens/s at concurrency {top}",
        "error_rate": sum(x["errors"] for x in all_levels) / sum(x["requests"] for x in all_levels),
        "guard_overhead_ms_p50": modes["batched"]["guard_overhead"]["end_to_end_ms_p50"],
        "guard_overhead_internal_ms_p50": modes["batched"]["guard_overhead"]["internal_ms_p50"],
        "targets": {"speedup": ">= 3", "error_rate": "0", "guard_overhead_ms_p50": "<= 5"},
        "model": args.model,
        "max_tokens": args.max_tokens,
        "modes": modes,
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "torch_threads": args.threads,
            "loadavg_start": [round(x, 2) for x in load_start],
            "loadavg_end": [round(x, 2) for x in os.getloadavg()],
            "note": "CPU shared with other jobs during the run; see loadavg",
        },
        "duration_s": round(time.time() - started, 1),
        "git_commit": git_commit(REPO),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_json(args.out, result)
    print(json.dumps({k: result[k] for k in ("speedup", "error_rate", "guard_overhead_ms_p50")}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
