"""``taigimed ui-demo`` (``make ui``): the served champion with held answers waiting on the desk.

So a person can try both pages at once: it serves the registry's champion (or ``--model``)
with ``taigimed serve`` on 127.0.0.1, in a review store of its own (``runs/ui-demo/``), asks a
few questions on the review topics so that answers are waiting for a clinician, and prints the
chat URL, the desk URL and a one-off reviewer token made for this run. Ctrl-C stops it all.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import secrets
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from taigimed.utils import REPO_ROOT

# Questions on the default review topics (ServeConfig.review.topics), so each one is held.
HELD_QUESTIONS = (
    "我懷孕五個月，最近腳足腫，按怎較好？",
    "阮阿爸咧做化療，食袂落，會使食啥物？",
    "我咧洗腎，一工會使啉偌濟水？",
)
ROUTINE_QUESTION = "我這兩工咧咳嗽，喉嚨嘛小可仔痛，愛按怎照顧家己？"


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "ui-demo",
        help="serve the champion with answers waiting for review; print the page URLs",
        description="Start the champion (predictor + guard) on 127.0.0.1 with its own review "
        "store, ask a few questions that are held for review, and print the patient chat URL, "
        "the review desk URL and a reviewer token for this run. Ctrl-C stops it.",
    )
    parser.add_argument("--model", help="model directory or name (default: the champion)")
    parser.add_argument("--registry", default=str(REPO_ROOT / "runs" / "registry"))
    parser.add_argument("--port", type=int, default=8080, help="guard port (%(default)s)")
    parser.add_argument("--predictor-port", type=int, default=8081, help="(%(default)s)")
    parser.add_argument("--store-dir", type=Path, default=REPO_ROOT / "runs" / "ui-demo")
    parser.add_argument("--max-tokens", type=int, default=64, help="per seeded answer")
    parser.add_argument("--ready-timeout", type=float, default=300)
    parser.set_defaults(func=run_ui_demo)


def pick_model(explicit: str | None, registry_root: str) -> tuple[str, str]:
    """(model, version): ``--model`` as given, else the champion, else packaged SmolLM2."""
    if explicit:
        return explicit, "ui-demo"
    from taigimed.pipeline.steps import local_model_dir
    from taigimed.registry import Registry

    if Path(registry_root).is_dir():
        registry = Registry(registry_root)
        champion = registry.champion()
        if champion is not None:
            model_dir = local_model_dir(registry.storage_uri(champion))
            if model_dir is not None:
                return str(model_dir), champion
    print("no local champion (run `make demo` first): serving SmolLM2-135M-Instruct as it is")
    from taigimed.models import SMOLLM2_NAME

    return SMOLLM2_NAME, "base"


def seed(base: str, questions: tuple[str, ...], max_tokens: int) -> list[dict]:
    """Ask each question through the guard; return the ``taigimed`` tags."""
    import httpx

    tags = []
    for question in questions:
        body = {"messages": [{"role": "user", "content": question}], "max_tokens": max_tokens}
        resp = httpx.post(f"{base}/openai/v1/chat/completions", json=body, timeout=600)
        resp.raise_for_status()
        tags.append(resp.json()["taigimed"])
    return tags


def run_ui_demo(args: argparse.Namespace) -> int:
    from taigimed.demo import wait_until_ready

    signal.signal(signal.SIGTERM, _interrupt)  # stop the servers on SIGTERM too
    model, version = pick_model(args.model, args.registry)
    token = secrets.token_urlsafe(12)
    store = args.store_dir.resolve() / "review.db"
    store.parent.mkdir(parents=True, exist_ok=True)
    store.unlink(missing_ok=True)  # a fresh queue each run
    base = f"http://127.0.0.1:{args.port}"
    command = [
        sys.executable, "-m", "taigimed.cli", "serve", "--model", model,
        "--model-version", version, "--host", "127.0.0.1",
        "--port", str(args.port), "--predictor-port", str(args.predictor_port),
        f"review.store_url=sqlite:///{store}",
    ]  # fmt: skip
    env = {**os.environ, "TAIGIMED_API_TOKENS": "", "TAIGIMED_REVIEWER_TOKENS": token}
    server = subprocess.Popen(command, env=env, start_new_session=True)
    try:
        wait_until_ready(f"{base}/v2/health/ready", server, args.ready_timeout)
        questions = (ROUTINE_QUESTION, *HELD_QUESTIONS)
        print(f"== asking {len(questions)} questions so answers wait for review", flush=True)
        tags = seed(base, questions, args.max_tokens)
        held = sum(t["status"] == "needs_review" for t in tags)
        print(f"== {held} answers are waiting for a clinician", flush=True)
        print(f"patient chat   {base}/ui/", flush=True)
        print(f"review desk    {base}/ui/review", flush=True)
        print(f"reviewer token {token}   (this run only)", flush=True)
        print("Ctrl-C stops it.", flush=True)
        return server.wait()
    except KeyboardInterrupt:
        return 0
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            server.wait(timeout=20)


def _interrupt(*_: Any) -> None:
    raise KeyboardInterrupt
