"""``taigimed rollout start|step|promote|rollback|status``: canary rollouts as git commits."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

from taigimed.config import ConfigError
from taigimed.rollout.analysis import Prometheus, PrometheusError
from taigimed.rollout.machine import RolloutError, RolloutMachine, StepOutcome
from taigimed.rollout.overlay import GitRepo, OverlayError, ProdOverlay
from taigimed.rollout.plan import RolloutPlan, load_plan

log = logging.getLogger(__name__)

EXIT_ROLLED_BACK = 3  # `step` rolled back: distinct from errors (1) so CI can tell them apart
EXIT_WAITING = 4  # `step` had too little traffic to decide


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "rollout",
        help="canary rollout of a model version through the prod overlay (git commits)",
        description="Canary state machine over the GitOps prod overlay. Every transition is a "
        "git commit to manifests/overlays/prod (optionally pushed); Argo CD applies it, or "
        "--apply kube patches the InferenceService directly. `step` judges the canary in "
        "Prometheus against the stable version and advances, promotes or rolls back.",
    )
    parser.add_argument("--config", type=Path, help="rollout plan YAML (configs/*/rollout.yaml)")
    parser.add_argument("--overlay", type=Path, help="prod overlay directory (plan: overlay)")
    parser.add_argument("--prometheus", help="Prometheus base URL (plan: prometheus_url)")
    parser.add_argument("--push", action="store_true", help="git push after each commit")
    parser.add_argument(
        "--probe-url",
        help="guard URL for probe requests when the canary has too few (plan: probes.url)",
    )
    parser.add_argument(
        "--apply",
        choices=["git", "kube"],
        default="git",
        help="git: commit only, Argo CD applies (default); kube: also patch the cluster",
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)

    start = actions.add_parser("start", help="begin a canary of VERSION at the first step")
    start.add_argument("version", help="registered model version, e.g. v3")
    start.add_argument("--storage-uri", help="override the registry's storage URI for VERSION")
    start.add_argument("--registry", help="registry root (plan: registry)")

    step = actions.add_parser("step", help="judge the canary; advance, promote or roll back")
    step.add_argument(
        "--wait",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="keep polling while there is too little traffic, up to SECONDS",
    )
    step.add_argument("--poll", type=float, default=15.0, help="seconds between polls")

    actions.add_parser("promote", help="make the canary stable now (100%% traffic)")
    rollback = actions.add_parser("rollback", help="send all traffic back to stable now")
    rollback.add_argument("--reason", default="rolled back by hand", help="for the commit")
    status = actions.add_parser("status", help="print the rollout state read from git")
    status.add_argument("--json", action="store_true", help="machine-readable output")

    for sub in (step, actions.choices["promote"]):
        sub.add_argument(
            "--registry", help="registry root whose champion follows a promotion (plan: registry)"
        )
    for sub in (start, step, status, rollback, actions.choices["promote"]):
        sub.add_argument("overrides", nargs="*", default=[], help="plan overrides key=value")
    parser.set_defaults(func=run)


def build_machine(args: argparse.Namespace, plan: RolloutPlan) -> RolloutMachine:
    """Wire plan, overlay, git, Prometheus and (optionally) the kube patcher together."""
    overlay = ProdOverlay(plan.overlay, plan.inference_service)
    repo = GitRepo(plan.overlay, author=plan.git.author or None)
    if plan.git.push and args.action != "status":
        # Commits are pushed: start from the remote's head (the deploy step may have pushed
        # the canary's start since this clone last pulled), or the push is rejected.
        repo.pull(plan.git.remote, plan.git.branch)
    applier = None
    if args.apply == "kube":
        from taigimed.rollout.kube import KubePatcher

        applier = KubePatcher(plan.inference_service, plan.namespace)
    prom = Prometheus(plan.prometheus_url) if plan.prometheus_url else None
    return RolloutMachine(plan, overlay, repo, prom, applier)


def resolve_storage_uri(version: str, storage_uri: str | None, registry: str) -> str:
    """The storageUri for ``version``: the explicit override, else the model registry's."""
    if storage_uri:
        return storage_uri
    if not registry:
        raise RolloutError(
            f"no storage URI for {version}: pass --storage-uri URI or --registry ROOT "
            "(or set `registry` in the rollout plan)"
        )
    from taigimed.registry import Registry

    return Registry(registry).storage_uri(version)


def run(args: argparse.Namespace) -> int:
    try:
        plan = load_plan(args.config, args.overrides)
        if args.overlay:
            plan.overlay = args.overlay
        if args.prometheus:
            plan.prometheus_url = args.prometheus
        if args.push:
            plan.git.push = True
        if args.probe_url:
            plan.probes.url = args.probe_url
        if getattr(args, "registry", None):
            plan.registry = args.registry
        machine = build_machine(args, plan)
        return dispatch(args, plan, machine)
    except (ConfigError, OverlayError, RolloutError, PrometheusError) as err:
        log.error("%s", err)
        return 1


def dispatch(args: argparse.Namespace, plan: RolloutPlan, machine: RolloutMachine) -> int:
    if args.action == "status":
        state = machine.status()
        if args.json:
            print(json.dumps(state.to_configmap_data(), indent=2))
        else:
            print(describe(state, plan))
        return 0
    if args.action == "start":
        uri = resolve_storage_uri(args.version, args.storage_uri, plan.registry)
        outcome = machine.start(args.version, uri)
    elif args.action == "step":
        if args.wait > 0:
            outcome = machine.step_until_decided(args.wait, args.poll)
        else:
            outcome = machine.step()
    elif args.action == "promote":
        outcome = machine.promote()
    else:
        outcome = machine.rollback(reason=args.reason)
    report(outcome, plan, args.apply)
    if outcome.action == "rolled_back" and args.action == "step":
        return EXIT_ROLLED_BACK
    if outcome.action == "waiting":
        return EXIT_WAITING
    return 0


def describe(state, plan: RolloutPlan) -> str:
    lines = [f"stable:  {state.stable_version}  {state.stable_storage_uri}"]
    if state.phase != "stable":
        steps = ", ".join(
            f"[{p}%]" if i == state.step_index else f"{p}%" for i, p in enumerate(plan.steps)
        )
        lines.append(f"canary:  {state.canary_version}  {state.canary_storage_uri}")
        lines.append(f"phase:   {state.phase}, {state.canary_percent}% to canary")
        lines.append(f"steps:   {steps} then promote")
    else:
        lines.append("phase:   stable (no canary)")
    if state.last_decision:
        lines.append(f"last:    {state.last_decision}")
    return "\n".join(lines)


def report(outcome: StepOutcome, plan: RolloutPlan, apply: str) -> None:
    if outcome.analysis is not None:
        for result in outcome.analysis.results:
            print(f"  {result.line()}")
    print(f"{outcome.action}: {outcome.state.last_decision}")
    for sha in outcome.commits:
        print(f"  commit {sha[:10]}")
    if outcome.commits and apply == "git" and not plan.git.push:
        print("  not pushed: `git push`, then sync prod in Argo CD (argocd app sync taigimed-prod)")
