"""Benchmark: the guard + predictor at 4x capacity for 60 s shed the excess and stay healthy.

Starts a real predictor (the tiny random Llama, so the shared machine is not swamped) and a real
guard on 127.0.0.1, then, through the guard's ``/openai/v1/completions``:

1. **capacity**: ``slots`` closed-loop clients (one per batch slot) for ``--calibrate-s``;
   capacity = completed requests/s, and the p95 latency at capacity;
2. **overload**: open-loop arrivals at ``--factor`` x capacity for ``--duration-s`` (fixed
   spacing, every request with a client timeout); each answer is 200 (accepted) or 429 (shed,
   with Retry-After); anything else is counted;
3. **afterwards**: both processes alive, readiness 200, and the predictor's queue and batch
   gauges back at 0 once idle.

The predictor's wait limit is set from the calibration (``--wait-fraction`` x the p50 latency
at capacity), so an accepted request waits at most about that long for a slot. Writes
``bench/results/overload.json`` with the targets (0 crashes, 0 client timeouts, 429 p95 <= 50 ms,
accepted p95 <= 2x the p95 at capacity, healthy afterwards), whether each was met, and the load
average during the run (the machine is shared: the ratios matter, not the absolute times).

    python bench/overload.py [--duration-s 60] [--factor 4]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import httpx
from _servers import Server, start

from taigimed.models import TINY_NAME, resolve_model
from taigimed.utils import REPO_ROOT, write_json

BODY = {"model": "taigimed", "prompt": "頭殼痛", "max_tokens": 128, "ignore_eos": True}


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def start_pair(tmp: Path, slots: int, wait_s: float, tag: str) -> tuple[Server, Server]:
    no_tokens = {"TAIGIMED_API_TOKENS": "", "TAIGIMED_REVIEWER_TOKENS": ""}
    predictor = start(
        "taigimed.serve.predictor",
        [
            "--model-dir",
            str(resolve_model(TINY_NAME)),
            "--model-name",
            "taigimed",
            "--model-version",
            "bench",
            f"predictor.max_batch_size={slots}",
            "predictor.max_queue=256",  # the door sheds by capacity; this is only a backstop
            "predictor.torch_threads=1",
            f"limits.max_queue_wait_s={wait_s}",
            "limits.max_inflight=512",
        ],
        tmp,
        no_tokens,
    )
    guard = start(
        "taigimed.serve.guard",
        [
            "--predictor-url",
            predictor.url,
            "--model-name",
            "taigimed",
            "--model-version",
            "bench",
            f"review.store_url=sqlite:///{tmp / f'review-{tag}.db'}",
            "limits.max_inflight=512",
            "limits.max_tokens=512",
        ],
        tmp,
        no_tokens,
    )
    return predictor, guard


async def calibrate(url: str, slots: int, seconds: float) -> dict:
    """``slots`` clients back to back: the throughput and latency the server sustains."""
    latencies: list[float] = []
    stop_at = time.perf_counter() + seconds

    async def client_loop(client: httpx.AsyncClient) -> None:
        while time.perf_counter() < stop_at:
            started = time.perf_counter()
            resp = await client.post("/openai/v1/completions", json=BODY)
            if resp.status_code == 200:
                latencies.append(time.perf_counter() - started)

    async with httpx.AsyncClient(base_url=url, timeout=120) as client:
        # one warm-up request per slot so the predictor has measured its slot time
        await asyncio.gather(
            *(client.post("/openai/v1/completions", json=BODY) for _ in range(slots))
        )
        began = time.perf_counter()
        await asyncio.gather(*(client_loop(client) for _ in range(slots)))
        elapsed = time.perf_counter() - began
    return {
        "requests": len(latencies),
        "seconds": round(elapsed, 2),
        "throughput_rps": len(latencies) / elapsed,
        "p50_s": percentile(latencies, 0.5),
        "p95_s": percentile(latencies, 0.95),
    }


async def overload(url: str, rate: float, seconds: float, timeout_s: float) -> dict:
    """Open-loop arrivals at ``rate``/s for ``seconds``; every outcome is counted."""
    n = int(rate * seconds)
    accepted: list[float] = []
    shed: list[float] = []
    retry_after_ok = 0
    counts: dict[str, int] = {}

    async def one(client: httpx.AsyncClient, at: float) -> None:
        nonlocal retry_after_ok
        await asyncio.sleep(max(0.0, at - time.perf_counter()))
        started = time.perf_counter()
        try:
            resp = await client.post("/openai/v1/completions", json=BODY)
            key = str(resp.status_code)
            elapsed = time.perf_counter() - started
            if resp.status_code == 200:
                accepted.append(elapsed)
            elif resp.status_code == 429:
                shed.append(elapsed)
                retry_after_ok += bool(resp.headers.get("retry-after"))
        except httpx.TimeoutException:
            key = "client_timeout"
        except httpx.HTTPError as err:
            key = f"error:{type(err).__name__}"
        counts[key] = counts.get(key, 0) + 1

    limits = httpx.Limits(max_connections=1024, max_keepalive_connections=256)
    async with httpx.AsyncClient(base_url=url, timeout=timeout_s, limits=limits) as client:
        t0 = time.perf_counter() + 0.5
        await asyncio.gather(*(one(client, t0 + i / rate) for i in range(n)))
    return {
        "offered": n,
        "offered_rps": rate,
        "outcomes": counts,
        "accepted": len(accepted),
        "accepted_rps": len(accepted) / seconds,
        "accepted_p50_s": percentile(accepted, 0.5),
        "accepted_p95_s": percentile(accepted, 0.95),
        "shed": len(shed),
        "shed_with_retry_after": retry_after_ok,
        "shed_p50_ms": None if not shed else percentile(shed, 0.5) * 1000,
        "shed_p95_ms": None if not shed else percentile(shed, 0.95) * 1000,
    }


def gauge(url: str, name: str) -> float:
    total = 0.0
    for line in httpx.get(f"{url}/metrics", timeout=10).text.splitlines():
        if line.startswith(name + "{"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def health(predictor: Server, guard: Server) -> dict:
    time.sleep(2.0)  # idle: every abandoned or finished row has left the batch
    result = {
        "predictor_alive": predictor.proc.poll() is None,
        "guard_alive": guard.proc.poll() is None,
        "predictor_ready": httpx.get(f"{predictor.url}/v2/health/ready").status_code == 200,
        "guard_ready": httpx.get(f"{guard.url}/v2/health/ready").status_code == 200,
        "queue_depth_idle": gauge(predictor.url, "taigimed_predictor_queue_depth"),
        "running_idle": gauge(predictor.url, "taigimed_predictor_running_sequences"),
        "guard_inflight_idle": gauge(guard.url, "taigimed_inflight_requests"),
    }
    answer = httpx.post(f"{guard.url}/openai/v1/completions", json=BODY, timeout=60)
    result["answers_after"] = answer.status_code == 200
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slots", type=int, default=4, help="predictor.max_batch_size")
    parser.add_argument("--calibrate-s", type=float, default=20.0)
    parser.add_argument("--duration-s", type=float, default=60.0)
    parser.add_argument("--factor", type=float, default=4.0, help="offered load / capacity")
    parser.add_argument("--wait-fraction", type=float, default=0.25)
    parser.add_argument("--client-timeout-s", type=float, default=60.0)
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "bench/results/overload.json")
    args = parser.parse_args()

    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="taigimed-overload-") as tmp_name:
        tmp = Path(tmp_name)
        # capacity first, on a pair whose wait limit cannot shed a closed loop of `slots`
        predictor, guard = start_pair(tmp, args.slots, 600.0, "calibrate")
        try:
            capacity = asyncio.run(calibrate(guard.url, args.slots, args.calibrate_s))
        finally:
            guard.stop()
            predictor.stop()
        wait_s = round(args.wait_fraction * capacity["p50_s"], 3)
        predictor, guard = start_pair(tmp, args.slots, wait_s, "overload")
        crashed = False
        try:
            asyncio.run(calibrate(guard.url, args.slots, 3.0))  # measure slot time; discarded
            rate = args.factor * capacity["throughput_rps"]
            burst = asyncio.run(overload(guard.url, rate, args.duration_s, args.client_timeout_s))
            after = health(predictor, guard)
        finally:
            crashed = predictor.proc.poll() is not None or guard.proc.poll() is not None
            guard.stop()
            predictor.stop()
    load_after = os.getloadavg()

    ratio = (burst["accepted_p95_s"] or 0) / capacity["p95_s"] if capacity["p95_s"] else None
    targets = {
        "crashes": {"value": int(crashed), "target": 0},
        "client_timeouts": {"value": burst["outcomes"].get("client_timeout", 0), "target": 0},
        "shed_p95_ms": {"value": burst["shed_p95_ms"], "target": 50.0},
        "accepted_p95_over_capacity_p95": {"value": ratio, "target": 2.0},
    }
    met = {
        "crashes": targets["crashes"]["value"] == 0,
        "client_timeouts": targets["client_timeouts"]["value"] == 0,
        "shed_p95_ms": burst["shed_p95_ms"] is not None and burst["shed_p95_ms"] <= 50.0,
        "accepted_p95_over_capacity_p95": ratio is not None and ratio <= 2.0,
        "healthy_after": all(v is True for k, v in after.items() if not k.endswith("_idle"))
        and all(after[k] == 0 for k in after if k.endswith("_idle")),
        "no_other_errors": set(burst["outcomes"]) <= {"200", "429"},
    }
    result = {
        "benchmark": "overload",
        "model": TINY_NAME,
        "request": BODY,
        "slots": args.slots,
        "factor": args.factor,
        "duration_s": args.duration_s,
        "max_queue_wait_s": wait_s,
        "capacity": capacity,
        "overload": burst,
        "after": after,
        "targets": targets,
        "met": met,
        "all_met": all(met.values()),
        "loadavg_before": load_before,
        "loadavg_after": load_after,
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
    }
    write_json(args.out, result)
    print(json.dumps({"met": met, "targets": targets}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
