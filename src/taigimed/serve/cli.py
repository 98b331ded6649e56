"""``taigimed serve`` (predictor + guard as two local processes) and ``taigimed chat`` (client).

``serve`` mirrors the InferenceService topology on one machine: the predictor process loads the
model, the guard process sits in front of it, both bound to 127.0.0.1 unless told otherwise.
Ctrl-C (or SIGTERM) stops both; if either dies, the other is stopped too.

``chat`` is a small terminal client for the guard: a REPL, or ``--once "question"`` for scripts,
printing the answer, its status, confidence and session id.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

STOP_TIMEOUT_S = 15


def register(subparsers: Any) -> None:
    serve = subparsers.add_parser(
        "serve",
        help="start the predictor and the guard (two local processes)",
        description="Serve a merged model: predictor (OpenAI routes over transformers) and guard "
        "(guardrails, review queue, feedback, metrics) as two processes, like the "
        "InferenceService's predictor and transformer. Ctrl-C stops both.",
    )
    serve.add_argument("--model", required=True, help="merged model directory (or a model name)")
    serve.add_argument("--config", type=Path, help="serve.yaml (e.g. configs/demo-cpu/serve.yaml)")
    serve.add_argument("--host", help="bind address for both (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="guard port (default 8080; 0 = ephemeral)")
    serve.add_argument("--predictor-port", type=int, help="predictor port (default 8081)")
    serve.add_argument("--model-name", help="served model name (default taigimed)")
    serve.add_argument("--model-version", help="model version label on metrics (e.g. v1)")
    serve.add_argument(
        "--index",
        type=Path,
        help="retrieval index folder for grounded answers (default: versions/vN/index beside a "
        "registry model, when present; docs/retrieval.md)",
    )
    serve.add_argument(
        "--ready-timeout", type=float, default=300, help="seconds to wait for both to be ready"
    )
    serve.add_argument("overrides", nargs="*", help="config overrides key=value")
    serve.set_defaults(func=run_serve)

    chat = subparsers.add_parser(
        "chat",
        help="ask the served model questions from the terminal",
        description="A small client for the guard. Without --once it is a REPL: type a question; "
        "/up or /down [comment] rates the last answer, /status shows its session, /quit exits.",
    )
    chat.add_argument("--url", default="http://127.0.0.1:8080", help="guard base URL")
    chat.add_argument("--model", default="taigimed", help="served model name")
    chat.add_argument("--once", metavar="QUESTION", help="ask one question, print, and exit")
    chat.add_argument("--max-tokens", type=int, default=256, help="answer length limit")
    chat.add_argument(
        "--token",
        default=os.environ.get("TAIGIMED_API_TOKEN"),
        help="bearer token (default $TAIGIMED_API_TOKEN)",
    )
    chat.add_argument("--json", action="store_true", help="print the raw JSON response")
    chat.add_argument("--timeout", type=float, default=300, help="request timeout in seconds")
    chat.set_defaults(func=run_chat)


# -- serve ----------------------------------------------------------------------------------


def run_serve(args: argparse.Namespace) -> int:
    from taigimed.config import load_config
    from taigimed.models import ModelResolutionError, resolve_model
    from taigimed.serve.config import ServeConfig

    cfg = load_config(ServeConfig, args.config, args.overrides)
    try:
        model_dir = resolve_model(args.model)
    except ModelResolutionError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    host = args.host or cfg.host
    common = [*(["--config", str(args.config)] if args.config else [])]
    guard_only = _retrieval_override(args.index, cfg.retrieval.index, model_dir)
    names = ["--model-name", args.model_name or cfg.model_name]
    names += ["--model-version", args.model_version or cfg.model_version]
    with tempfile.TemporaryDirectory(prefix="taigimed-serve-") as tmp:
        pfile, gfile = Path(tmp, "predictor.json"), Path(tmp, "guard.json")
        pport = cfg.predictor_port if args.predictor_port is None else args.predictor_port
        predictor = _spawn(
            "taigimed.serve.predictor",
            [
                *("--model-dir", str(model_dir), "--host", host, "--port", str(pport)),
                *("--port-file", str(pfile), *names, *common, *args.overrides),
            ],
        )
        procs = [predictor]
        try:
            pport = _wait_port(pfile, predictor, args.ready_timeout)
            gport = cfg.port if args.port is None else args.port
            guard = _spawn(
                "taigimed.serve.guard",
                [
                    *("--predictor-url", _url(host, pport), "--host", host, "--port", str(gport)),
                    *("--port-file", str(gfile), *names, *common, *args.overrides),
                    *guard_only,
                ],
            )
            procs.append(guard)
            gport = _wait_port(gfile, guard, args.ready_timeout)
            _wait_ready(_url(host, gport), procs, args.ready_timeout)
            print(f"predictor  {_url(host, pport)}   (model {model_dir})", flush=True)
            print(f"guard      {_url(host, gport)}/openai/v1   <- point clients here", flush=True)
            if cfg.ui.enabled:
                base = _url(host, gport)
                print(f"chat       {base}/ui/          (patient chat page)", flush=True)
                print(f"review     {base}/ui/review    (clinician review desk)", flush=True)
            print("Ctrl-C stops both.", flush=True)
            return _supervise(procs)
        except (RuntimeError, TimeoutError) as err:
            print(f"error: {err}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            return 0
        finally:
            _stop(procs)


def _retrieval_override(index: Path | None, configured: str, model_dir: Path) -> list[str]:
    """The guard's ``retrieval.index``: --index, else the config's, else the index registered
    with the served version (``versions/vN/index`` beside ``versions/vN/model``)."""
    if index is None and not configured:
        from taigimed.retrieval.serving import index_beside_model

        index = index_beside_model(model_dir)
    if index is None:
        return []
    print(f"retrieval  {index}", flush=True)
    return [f"retrieval.index={index}"]


def _spawn(module: str, argv: list[str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", module, *argv])


def _url(host: str, port: int) -> str:
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def _wait_port(port_file: Path, proc: subprocess.Popen, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args[2]} exited with code {proc.returncode} while starting")
        if port_file.is_file():
            with contextlib.suppress(ValueError, KeyError):
                return int(json.loads(port_file.read_text())["port"])
        time.sleep(0.2)
    raise TimeoutError(f"{proc.args[2]} did not bind a port within {timeout:.0f} s")


def _wait_ready(base: str, procs: list[subprocess.Popen], timeout: float) -> None:
    """Poll the guard's KServe readiness (which also checks the predictor)."""
    import logging

    import httpx

    logging.getLogger("httpx").setLevel(logging.WARNING)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for proc in procs:
            if proc.poll() is not None:
                raise RuntimeError(f"{proc.args[2]} exited with code {proc.returncode}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{base}/v2/health/ready", timeout=2).status_code == 200:
                return
        time.sleep(0.3)
    raise TimeoutError(f"{base} was not ready within {timeout:.0f} s")


def _supervise(procs: list[subprocess.Popen]) -> int:
    """Wait until a process exits or we are told to stop (SIGTERM is treated like Ctrl-C)."""
    signal.signal(signal.SIGTERM, _interrupt)
    while True:
        for proc in procs:
            if proc.poll() is not None:
                print(f"{proc.args[2]} exited with code {proc.returncode}", file=sys.stderr)
                return 1
        time.sleep(0.5)


def _interrupt(*_: Any) -> None:
    raise KeyboardInterrupt


def _stop(procs: list[subprocess.Popen]) -> None:
    for proc in reversed(procs):
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc in reversed(procs):
        try:
            proc.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# -- chat -----------------------------------------------------------------------------------


def run_chat(args: argparse.Namespace) -> int:
    import logging

    import httpx

    logging.getLogger("httpx").setLevel(logging.WARNING)
    headers = {"Authorization": f"Bearer {args.token}"} if args.token else {}
    client = httpx.Client(base_url=args.url.rstrip("/"), headers=headers, timeout=args.timeout)
    if args.once is not None:
        return _ask(client, args, args.once)
    print("TaigiMed chat. /up, /down [comment], /status, /quit.  (Ctrl-D exits)")
    last: str | None = None
    while True:
        try:
            line = input("你> ").strip()
        except (EOFError, KeyboardInterrupt):
            print()
            return 0
        if not line:
            continue
        if line in ("/quit", "/exit"):
            return 0
        if line.startswith(("/up", "/down", "/status")):
            _command(client, line, last)
            continue
        last = _ask(client, args, line, return_session=True) or last


def _ask(client: Any, args: argparse.Namespace, question: str, return_session: bool = False):
    import httpx

    body = {
        "model": args.model,
        "messages": [{"role": "user", "content": question}],
        "max_tokens": args.max_tokens,
    }
    try:
        resp = client.post("/openai/v1/chat/completions", json=body)
    except httpx.HTTPError as err:
        print(f"error: cannot reach {args.url}: {err}", file=sys.stderr)
        return None if return_session else 1
    if resp.status_code != 200:
        print(f"error: HTTP {resp.status_code}: {_error_message(resp)}", file=sys.stderr)
        return None if return_session else 1
    data = resp.json()
    if args.json:
        print(json.dumps(data, ensure_ascii=False, indent=2))
    else:
        tag = data.get("taigimed", {})
        print(data["choices"][0]["message"]["content"])
        for source in tag.get("sources") or []:
            who = f", {source['reviewer']}" if source.get("reviewer") else ""
            print(f"source: {source['id']} {source['title']} ({source['score']:.4f}{who})")
        if tag.get("grounding"):
            print(f"grounding: {tag['grounding']}")
        conf = tag.get("confidence")
        print(f"status: {tag.get('status')}")
        print(f"confidence: {'-' if conf is None else f'{conf:.3f}'}")
        print(f"session: {tag.get('session_id')}")
    return data.get("taigimed", {}).get("session_id") if return_session else 0


def _command(client: Any, line: str, session_id: str | None) -> None:
    if session_id is None:
        print("no answer yet")
        return
    word, _, rest = line.partition(" ")
    if word == "/status":
        resp = client.get(f"/v1/sessions/{session_id}")
    else:
        payload = {"session_id": session_id, "rating": word[1:], "comment": rest or None}
        resp = client.post("/v1/feedback", json=payload)
    if resp.status_code >= 400:
        print(f"error: HTTP {resp.status_code}: {_error_message(resp)}")
    else:
        print(json.dumps(resp.json(), ensure_ascii=False, indent=2))


def _error_message(resp: Any) -> str:
    try:
        return resp.json()["error"]["message"]
    except (ValueError, KeyError, TypeError):
        return resp.text[:200]
