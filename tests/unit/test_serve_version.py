"""How the guard tells which model version answered (taigimed.serve.version)."""

from __future__ import annotations

import pytest

from taigimed.serve import version as versioning


@pytest.mark.parametrize(
    ("header", "model", "expected"),
    [
        ("v2", "taigimed", "v2"),  # TaigiMed's predictor: the header wins
        ("v2", "taigimed-v3", "v2"),
        (None, "taigimed-v3", "v3"),  # vLLM: first --served-model-name taigimed-<version>
        (None, "taigimed-2024.10_rc-1", "2024.10_rc-1"),
        (None, "taigimed", None),  # a bare served name names no version: caller falls back
        (None, "other-v3", None),  # not our served name
        (None, None, None),
        (" ", "taigimed-", None),
        ('v2"} 1\nx{', None, None),  # never a label that breaks the exposition format
        (None, "taigimed-" + "x" * 64, None),  # too long for a label value we accept
    ],
)
def test_answered_by(header, model, expected):
    assert versioning.answered_by(header, model, "taigimed") == expected


def test_resolve_prefers_cli_then_env_then_config(monkeypatch):
    monkeypatch.delenv(versioning.ENV, raising=False)
    assert versioning.resolve(None, "dev") == "dev"
    monkeypatch.setenv(versioning.ENV, "v7")
    assert versioning.resolve(None, "dev") == "v7"
    assert versioning.resolve("v8", "dev") == "v8"
