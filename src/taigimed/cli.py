"""The ``taigimed`` command: one entry point, one subcommand per job.

Each subcommand lives next to the code it drives. A module listed in ``COMMANDS`` provides::

    def register(subparsers) -> None:
        parser = subparsers.add_parser("prepare", help="...", description="...")
        parser.add_argument(...)
        parser.set_defaults(func=run)      # run(args) -> int (the exit code)

Modules are imported lazily, only when their command is asked for (or for ``--help``), so
``taigimed chat`` does not pay for importing torch, and a broken optional area never stops the
others from working.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from taigimed import __version__
from taigimed.utils import setup_logging

# command name -> module that registers it
COMMANDS: dict[str, str] = {
    "prepare": "taigimed.data.cli",
    "train": "taigimed.train.cli",
    "evaluate": "taigimed.eval.cli",
    "gate": "taigimed.eval.cli",
    "register": "taigimed.registry",
    "serve": "taigimed.serve.cli",
    "chat": "taigimed.serve.cli",
    "ui-demo": "taigimed.serve.ui.demo",
    "rollout": "taigimed.rollout.cli",
    "pipeline": "taigimed.pipeline.cli",
    "model": "taigimed.models",
    "retrieval": "taigimed.retrieval.cli",
}


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """Parser with every available subcommand (or just ``only``, to keep start-up light)."""
    parser = argparse.ArgumentParser(
        prog="taigimed",
        description="TaigiMed: data, two-stage LoRA training, gated evaluation, guarded serving "
        "and canary rollout for a Taigi medical advisor.",
    )
    parser.add_argument("--version", action="version", version=f"taigimed {__version__}")
    parser.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING (default INFO)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    modules = [COMMANDS[only]] if only in COMMANDS else list(dict.fromkeys(COMMANDS.values()))
    for module_name in modules:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as err:
            if only is not None and err.name and module_name.startswith(err.name):
                raise
            continue  # an area not built yet, or an optional one whose deps are missing
        module.register(sub)
    return parser


def first_positional(argv: Sequence[str]) -> str | None:
    """The subcommand name: the first word that is neither an option nor an option's value."""
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--log-level":
            skip = True
        elif not arg.startswith("-"):
            return arg
    return None


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = first_positional(argv)
    parser = build_parser(only=command if command in COMMANDS else None)
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    setup_logging(args.log_level)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
