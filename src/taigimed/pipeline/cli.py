"""``taigimed pipeline run --local | submit --host URL | compile``."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

from taigimed.config import parse_override

log = logging.getLogger(__name__)


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "pipeline",
        help="run the Kubeflow pipeline locally (kfp.local) or submit it to a KFP server",
        description="The TaigiMed pipeline: prepare -> train stage 1 -> train stage 2 -> "
        "evaluate -> gate -> register -> deploy-canary. `run --local` executes it here through "
        "kfp.local's subprocess runner; `submit` starts it on a Kubeflow Pipelines server.",
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)

    run = actions.add_parser("run", help="run the pipeline locally through kfp.local")
    run.add_argument("--local", action="store_true", required=True, help="use kfp.local")
    run.add_argument("--profile", default="configs/demo-cpu", help="config folder (%(default)s)")
    run.add_argument("--run-dir", type=Path, default=Path("runs/demo"), help="(%(default)s)")
    run.add_argument("--registry", default="runs/registry", help="registry root (%(default)s)")
    add_params(run)
    run.set_defaults(func=run_cmd)

    sub = actions.add_parser("submit", help="start a run of the compiled pipeline on a KFP server")
    sub.add_argument("--host", required=True, help="KFP API URL, e.g. http://localhost:8080")
    sub.add_argument("--package", type=Path, default=None, help="compiled YAML (the tracked one)")
    sub.add_argument("--experiment", default="taigimed", help="(%(default)s)")
    sub.add_argument("--run-name", default=None, help="default: taigimed-<timestamp>")
    add_params(sub)
    sub.set_defaults(func=submit_cmd)

    up = actions.add_parser("upload", help="upload the compiled pipeline (a new version)")
    up.add_argument("--host", required=True, help="KFP API URL")
    up.add_argument("--package", type=Path, default=None, help="compiled YAML (the tracked one)")
    up.add_argument("--name", default="taigimed", help="pipeline name in KFP (%(default)s)")
    up.set_defaults(func=upload_cmd)

    comp = actions.add_parser("compile", help="write pipelines/compiled/taigimed_pipeline.yaml")
    comp.add_argument("--output", type=Path, default=None, help="default: the tracked file")
    comp.set_defaults(func=compile_cmd)


def add_params(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="pipeline parameter, repeatable: base_model, replay_fraction, data_overrides, "
        "train_overrides, eval_overrides, gate_overrides, registry_root, gitops_repo, "
        "rollout_plan (e.g. --param replay_fraction=0.3 --param 'train_overrides=max_steps=5')",
    )


def parse_params(items: list[str]) -> dict[str, Any]:
    params = {}
    for item in items:
        key, value = parse_override(item)
        if key.endswith("overrides"):  # keep the text as typed: its quoting is for shlex
            value = item.split("=", 1)[1]
        params[key] = value
    return params


def run_cmd(args: argparse.Namespace) -> int:
    from taigimed.pipeline.run import run_local

    result = run_local(args.run_dir, args.profile, args.registry, parse_params(args.param))
    print(f"pipeline finished in {result.seconds:.0f} s; run folder: {result.run_dir}")
    if result.passed:
        print(f"gate: PASSED; registered version {result.version}")
    else:
        print("gate: REJECTED")
        for reason in result.reasons:
            print(f"  - {reason}")
    for name, path in result.outputs.items():
        print(f"  {name:12s} {path}")
    return 0


def submit_cmd(args: argparse.Namespace) -> int:
    from taigimed.pipeline.run import COMPILED_FILE, submit

    package = args.package or COMPILED_FILE
    print(submit(args.host, parse_params(args.param), args.experiment, args.run_name, package))
    return 0


def upload_cmd(args: argparse.Namespace) -> int:
    from taigimed.pipeline.run import COMPILED_FILE, upload

    print(upload(args.host, args.name, args.package or COMPILED_FILE))
    return 0


def compile_cmd(args: argparse.Namespace) -> int:
    from taigimed.pipeline.run import COMPILED_FILE, load_pipeline_module

    print(load_pipeline_module().compile_pipeline(args.output or COMPILED_FILE))
    return 0
