"""The taigimed entry point: every registered command answers --help."""

from __future__ import annotations

import subprocess
import sys

import pytest

from taigimed.cli import COMMANDS, build_parser, first_positional


def test_first_positional_skips_option_values():
    assert first_positional(["--log-level", "DEBUG", "prepare", "--config", "x"]) == "prepare"
    assert first_positional(["--version"]) is None


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_command_has_help(command):
    parser = build_parser(only=command)
    with pytest.raises(SystemExit) as exit_info:
        parser.parse_args([command, "--help"])
    assert exit_info.value.code == 0


def test_console_script_runs():
    out = subprocess.run(
        [sys.executable, "-m", "taigimed.cli", "--help"], capture_output=True, text=True, check=True
    )
    assert "prepare" in out.stdout or "COMMAND" in out.stdout
