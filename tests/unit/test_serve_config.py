"""Serving profiles load, and the vLLM runtime arguments agree with the GPU profile."""

from __future__ import annotations

import pytest

from taigimed.config import ConfigError, load_config
from taigimed.serve.config import ServeConfig


@pytest.mark.parametrize("profile", ["demo-cpu", "gpu-8b"])
def test_profiles_load(repo_root, profile):
    cfg = load_config(ServeConfig, repo_root / "configs" / profile / "serve.yaml")
    assert cfg.model_name == "taigimed"
    assert 0 < cfg.review.confidence_threshold < 1


def test_demo_binds_localhost_by_default(repo_root):
    assert ServeConfig().host == "127.0.0.1"
    assert load_config(ServeConfig, repo_root / "configs/demo-cpu/serve.yaml").host == "127.0.0.1"


def test_dockerfiles_run_the_serve_modules(repo_root):
    predictor = (repo_root / "serving/predictor.Dockerfile").read_text()
    guard = (repo_root / "serving/guard.Dockerfile").read_text()
    assert "taigimed.serve.predictor" in predictor and "/mnt/models" in predictor
    assert "taigimed.serve.guard" in guard and "requirements-guard.txt" in guard
    pins = (repo_root / "serving/requirements-guard.txt").read_text().splitlines()
    assert not any(p.startswith(("torch", "transformers")) for p in pins)


def test_bad_values_fail_early():
    with pytest.raises(ConfigError, match="max_batch_size"):
        load_config(ServeConfig, None, ["predictor.max_batch_size=0"])
    with pytest.raises(ConfigError, match="confidence_threshold"):
        load_config(ServeConfig, None, ["review.confidence_threshold=2"])
    with pytest.raises(ConfigError, match="unknown key"):
        load_config(ServeConfig, None, ["review.threshold=0.5"])


def test_tokens_and_review_url_come_from_mounted_secret_files(tmp_path, monkeypatch):
    """Secrets as files (checkov CKV_K8S_35): *_FILE names a mounted Secret key."""
    from taigimed.config import load_config
    from taigimed.serve.config import AuthSettings, ServeConfig

    tokens = tmp_path / "api-tokens"
    tokens.write_text("t1, t2\n")
    monkeypatch.delenv("TAIGIMED_API_TOKENS", raising=False)
    monkeypatch.setenv("TAIGIMED_API_TOKENS_FILE", str(tokens))
    assert AuthSettings().api_tokens() == {"t1", "t2"}
    monkeypatch.setenv("TAIGIMED_API_TOKENS_FILE", str(tmp_path / "absent"))
    assert AuthSettings().api_tokens() == set()  # like an optional secretKeyRef
    url = tmp_path / "url"
    url.write_text("postgresql+psycopg://u:p@db/x\n")
    cfg = load_config(ServeConfig, None, [f"review.store_url_file={url}"])
    assert cfg.review.store_url == "postgresql+psycopg://u:p@db/x"
