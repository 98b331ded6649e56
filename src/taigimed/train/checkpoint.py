"""Resumable checkpoints, written atomically.

A checkpoint is a directory ``checkpoints/step-000020/`` with the adapter weights, the
optimizer and scheduler states, the RNG states, and ``state.json`` (step, data cursor, loss
history, fingerprint of the settings that decide the data order). It is written into a hidden
temporary directory and renamed into place only when complete, so a run killed mid-save leaves
the previous checkpoints untouched and never a half-written one that ``--resume`` would trust.
Only the newest ``keep`` checkpoints are kept.
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path
from typing import Any

import torch

STATE = "state.json"


def checkpoint_dirs(root: Path) -> list[Path]:
    """Complete checkpoints (those with ``state.json``), oldest first."""
    if not root.is_dir():
        return []
    found = [p for p in root.glob("step-*") if p.is_dir() and (p / STATE).is_file()]
    return sorted(found, key=lambda p: int(p.name.split("-")[1]))


def latest_checkpoint(root: Path) -> Path | None:
    found = checkpoint_dirs(root)
    return found[-1] if found else None


def rng_state() -> dict[str, Any]:
    """Every RNG the training step draws from (dropout uses torch's)."""
    state: dict[str, Any] = {"python": random.getstate(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(
    root: Path,
    step: int,
    model: Any,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    state: dict[str, Any],
    keep: int,
) -> Path:
    """Write checkpoint ``step`` atomically and prune all but the newest ``keep``."""
    from peft import get_peft_model_state_dict
    from safetensors.torch import save_file

    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step-{step:06d}"
    tmp = root / f".tmp-step-{step:06d}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    adapter = get_peft_model_state_dict(model)
    adapter = {k: v.detach().cpu().contiguous() for k, v in adapter.items()}
    save_file(adapter, tmp / "adapter.safetensors")
    torch.save(
        {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()},
        tmp / "optimizer.pt",
    )
    torch.save(rng_state(), tmp / "rng.pt")
    (tmp / STATE).write_text(json.dumps({**state, "step": step}, indent=1), encoding="utf-8")
    if final.exists():
        shutil.rmtree(final)
    tmp.rename(final)
    for old in checkpoint_dirs(root)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def load_checkpoint(path: Path, model: Any, optimizer: Any, scheduler: Any) -> dict[str, Any]:
    """Restore adapter, optimizer, scheduler and RNG from ``path``; return its ``state.json``."""
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    device = next(p.device for p in model.parameters() if p.requires_grad)
    set_peft_model_state_dict(model, load_file(path / "adapter.safetensors", device=str(device)))
    states = torch.load(path / "optimizer.pt", map_location=device, weights_only=True)
    optimizer.load_state_dict(states["optimizer"])
    scheduler.load_state_dict(states["scheduler"])
    restore_rng_state(torch.load(path / "rng.pt", weights_only=True))
    return json.loads((path / STATE).read_text(encoding="utf-8"))
