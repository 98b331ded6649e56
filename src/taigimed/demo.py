"""``make demo``: the whole TaigiMed flow on this machine, then the served model answers.

1. Run the Kubeflow pipeline locally (kfp.local): prepare -> train stage 1 -> train stage 2 ->
   evaluate -> gate -> register -> deploy (the champion pointer).
2. Start the champion behind the guard (``taigimed serve``: predictor + guard, two processes on
   127.0.0.1), exactly as the InferenceService runs them.
3. Ask one Taigi health question through the OpenAI-compatible API and print the answer, its
   sources (the retrieval index registered with the champion), the guard's status and
   confidence, the gate verdict and where the reports are. The demo fails if the printed
   answer is an echo of the prompt (``answer_check``).

When the gate rejects the candidate, the demo says FAIL and why, prints the gate table, and
serves the previous champion, or the base model when there is none, saying which: a rejected
candidate never answers a person.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from taigimed.utils import REPO_ROOT, setup_logging

QUESTION = "我這兩工咧咳嗽，喉嚨嘛小可仔痛，愛按怎照顧家己？"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until_ready(url: str, process: subprocess.Popen, timeout: float = 180.0) -> None:
    """Poll the guard's readiness route until it answers 200 (or the server dies)."""
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited with code {process.returncode} during start-up")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=2.0).status_code == 200:
                return
        time.sleep(1.0)
    raise TimeoutError(f"{url} not ready after {timeout:.0f} s")


def answer_check(answer: str, question: str, system_prompt: str = "") -> list[str]:
    """Why the printed answer is not an answer: ``echo`` when it mostly repeats the prompt
    (the served model's system prompt, the grounding instruction, or the question), as the
    gate and the guard judge it (``taigimed.quality``). Empty when it is an answer."""
    from taigimed.quality import answer_signals
    from taigimed.retrieval.grounding import INSTRUCTION
    from taigimed.retrieval.knowledge import strip_disclaimer

    system = "\n".join([system_prompt, INSTRUCTION])
    signals = answer_signals(strip_disclaimer(answer), question, system_prompt=system)
    return ["echo"] if signals.echo else []


def ask(url: str, question: str, system_prompt: str = "") -> int:
    """Ask through the OpenAI route, print answer, sources and status; 1 if it is an echo
    (of ``system_prompt``, the one the served model was trained with, among others)."""
    import httpx

    body = {"model": "taigimed", "messages": [{"role": "user", "content": question}]}
    resp = httpx.post(f"{url}/openai/v1/chat/completions", json=body, timeout=600)
    if resp.status_code != 200:
        print(f"error: HTTP {resp.status_code}: {resp.text[:300]}")
        return 1
    data = resp.json()
    answer, tag = data["choices"][0]["message"]["content"], data.get("taigimed", {})
    print(answer)
    for source in tag.get("sources") or []:
        who = f", {source['reviewer']}" if source.get("reviewer") else ""
        print(f"source: {source['id']} {source['title']} (score {source['score']:.4f}{who})")
    confidence = tag.get("confidence")
    print(f"status: {tag.get('status')}  grounding: {tag.get('grounding', '-')}")
    if tag.get("model_answer_rejected"):
        print(f"model's own answer not shown: {', '.join(tag['model_answer_rejected'])}")
    print(f"confidence: {'-' if confidence is None else f'{confidence:.3f}'}")
    print(f"session: {tag.get('session_id')}")
    problems = answer_check(answer, question, system_prompt)
    if problems:
        print(f"DEMO CHECK FAILED: the answer is an {', '.join(problems)} of the prompt")
        return 1
    return 0


def serve_and_ask(model_dir: Path, version: str, question: str, index: Path | None = None) -> int:
    """Start predictor + guard on free loopback ports, ask one question, stop both. ``index``:
    the retrieval index to ground answers on (default: the one registered with the version)."""
    port, predictor_port = free_port(), free_port()
    command = [
        sys.executable, "-m", "taigimed.cli", "serve", "--model", str(model_dir),
        "--model-version", version, "--host", "127.0.0.1",
        "--port", str(port), "--predictor-port", str(predictor_port),
    ]  # fmt: skip
    if index is not None:
        command += ["--index", str(index)]
    print(f"\n== serving {version} from {model_dir} on http://127.0.0.1:{port}")
    server = subprocess.Popen(command, start_new_session=True)
    try:
        wait_until_ready(f"http://127.0.0.1:{port}/v2/health/ready", server)
        print(f"\n== asking (Taigi): {question}")
        from taigimed.spec import read_spec

        spec = read_spec(model_dir)
        code = ask(f"http://127.0.0.1:{port}", question, spec.system_prompt if spec else "")
        print(f"\n== pages (they stop with the demo; `make ui` keeps them running):\n"
              f"patient chat  http://127.0.0.1:{port}/ui/\n"
              f"review desk   http://127.0.0.1:{port}/ui/review")  # fmt: skip
        return code
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            server.wait(timeout=20)


@dataclass
class ServeChoice:
    """What the demo serves after the gate, and the sentence that says why."""

    model: str  # a model directory or a resolvable model name
    version: str  # the label on every metric and answer
    note: str


def choose_served(
    passed: bool, champion: str | None, champion_dir: Path | None, base_model: str
) -> ServeChoice | None:
    """The champion (the candidate when it passed: it is the champion then); after a FAIL the
    previous champion, else the base model. None: the champion is in a remote registry."""
    if champion is not None:
        if champion_dir is None:
            return None
        if passed:
            return ServeChoice(str(champion_dir), champion, f"serving the new champion {champion}")
        return ServeChoice(
            str(champion_dir),
            champion,
            f"the candidate was REJECTED: serving the previous champion {champion} instead",
        )
    return ServeChoice(
        base_model,
        "base",
        f"the candidate was REJECTED and there is no champion yet: serving the base model "
        f"{base_model} instead (not fine-tuned)",
    )


def knowledge_index_for_base(out_dir: Path, profile: str) -> Path:
    """The approved knowledge still grounds the base model's answers when no version passed
    the gate. The run's own build-index artifact is used when there is one; this builds one
    from the same knowledge base (the retrieval step's own config) when the run left none."""
    from taigimed.config import load_config
    from taigimed.retrieval.build import build_index
    from taigimed.retrieval.cli import DEFAULT_CONFIG
    from taigimed.retrieval.config import RetrievalConfig

    print(f"== building the knowledge index for the base model in {out_dir}")
    config = Path(profile) / "retrieval.yaml"
    if not config.is_file():
        config = REPO_ROOT / DEFAULT_CONFIG
    build_index(load_config(RetrievalConfig, config, []), out_dir, home=REPO_ROOT)
    return out_dir


def base_model_of(profile: str, params: dict[str, str]) -> str:
    """The base model of this run: the ``base_model`` parameter, else the profile's train.yaml."""
    if params.get("base_model"):
        return str(params["base_model"])
    from taigimed.pipeline.steps import profile_config
    from taigimed.train.config import TrainConfig

    return profile_config(TrainConfig, profile, "train.yaml", []).base_model


DEMO_MEDQA = "data/demo/medqa_demo.jsonl"
MEDQA_GATE_SIZE = 200  # questions the MedQA gate needs before its interval means anything


def medqa_overrides(user_file: Path | None, eval_size: int, existing: str = "") -> str:
    """Data overrides that add the user's MedQA file to the demo's and hold out ``eval_size``
    questions of the union (by the profile's seed: the same sample every run) for the gate."""
    if user_file is None:
        return existing
    path = Path(user_file).resolve()
    if not path.is_file():
        raise SystemExit(f"--medqa {user_file}: file not found")
    added = f"sources.medqa.paths=[{DEMO_MEDQA},{path}] medqa.eval_size={eval_size}"
    return f"{existing} {added}".strip()


def print_gate(result: Any) -> None:
    """The verdict as the gate wrote it (reasons and the whole table), true either way."""
    gate_md = result.outputs.get("gate")
    verdict = "PASS" if result.passed else "FAIL"
    print(f"\n== gate: {verdict}")
    if gate_md is not None and Path(gate_md).is_file():
        print(Path(gate_md).read_text(encoding="utf-8"))
    if result.passed:
        print(f"registered and deployed version {result.version}")
    else:
        print("the candidate was REJECTED (nothing registered or deployed), because:")
        for reason in result.reasons:
            print(f"  - {reason}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m taigimed.demo",
        description="Run the whole TaigiMed pipeline locally, then serve the champion and ask it "
        "one Taigi health question.",
    )
    parser.add_argument("--profile", default="configs/demo-cpu", help="(%(default)s)")
    parser.add_argument("--run-dir", type=Path, default=REPO_ROOT / "runs" / "demo")
    parser.add_argument("--registry", default=str(REPO_ROOT / "runs" / "registry"))
    parser.add_argument("--question", default=QUESTION)
    parser.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="pipeline parameter as for `taigimed pipeline run`, e.g. base_model=tiny-random-llama",
    )
    parser.add_argument(
        "--medqa",
        type=Path,
        default=os.environ.get("MEDQA") or None,
        help="a MedQA JSONL file (e.g. MedQA-Taiwan dev) added to the demo's 64 questions, so "
        "the gate holds out --medqa-eval-size of them (env MEDQA; `make demo MEDQA=...`)",
    )
    parser.add_argument("--medqa-eval-size", type=int, default=MEDQA_GATE_SIZE)
    args = parser.parse_args(argv)
    setup_logging()

    from taigimed.pipeline.cli import parse_params
    from taigimed.pipeline.run import run_local
    from taigimed.pipeline.steps import local_model_dir
    from taigimed.registry import Registry

    started = time.monotonic()
    params = parse_params(args.param)
    params["data_overrides"] = medqa_overrides(
        args.medqa, args.medqa_eval_size, str(params.get("data_overrides", ""))
    )
    if not params["data_overrides"]:
        params.pop("data_overrides")
    if args.medqa is None:
        print(
            f"== note: MedQA is gated on the 16 questions of {DEMO_MEDQA}; their 95% interval is "
            f"about ±0.2 wide, too wide to tell two models apart. Give a MedQA file with "
            f"`make demo MEDQA=path/to/dev.jsonl` to gate on {MEDQA_GATE_SIZE} questions."
        )
    print("== 1/2 running the Kubeflow pipeline locally (kfp.local, subprocess runner)")
    result = run_local(args.run_dir, args.profile, args.registry, params)
    print(f"\n== pipeline finished in {result.seconds:.0f} s")
    print_gate(result)
    for name, path in result.outputs.items():
        print(f"  {name:12s} {path}")

    registry = Registry(args.registry)
    champion = registry.champion()
    champion_dir = local_model_dir(registry.storage_uri(champion)) if champion else None
    choice = choose_served(
        result.passed, champion, champion_dir, base_model_of(args.profile, params)
    )
    if choice is None:
        print(f"champion {champion} lives in a remote registry; serve it on the cluster")
        return 1
    print(f"\n== 2/2 {choice.note}")
    index = None
    if choice.version == "base":
        built = result.outputs.get("index")  # the index the gated run evaluated with
        index = (
            built.parent
            if built
            else knowledge_index_for_base(args.run_dir / "knowledge-index", args.profile)
        )
    code = serve_and_ask(Path(choice.model), choice.version, args.question, index)
    print(f"\n== gate: {'PASS' if result.passed else 'FAIL'}; {choice.note}")
    print(f"== demo finished in {time.monotonic() - started:.0f} s")
    return code


if __name__ == "__main__":
    sys.exit(main())
