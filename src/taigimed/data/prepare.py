"""``prepare(cfg, out_dir)``: read every source, clean, dedupe, hold out eval sets, build the
stage SFT sets (stage 2 with stage-1 replay), and write them with a data report.

The steps, in order (each counted in the report; nothing leaves without a reason):

1. read each source with its reader; malformed lines are reported as ``file:line: reason`` and
   the run fails when a file's error rate exceeds ``max_error_rate``;
2. MedQA: drop figure-dependent / chained questions when configured, strip exam numbering;
3. exact and near-duplicate removal within each kind of record;
4. hold out eval sets by seed (MedQA questions, Taigi sentences), then drop every remaining
   record that duplicates an eval item exactly or nearly, so no eval item leaks into training;
5. split records (not examples) into train/val, so directions of one sentence stay together;
6. build chat examples, drop identical examples and those longer than ``max_tokens``;
7. stage 2 train = Taigi + replayed stage-1 train examples (``replay_fraction`` of the result).
"""

from __future__ import annotations

import logging
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from taigimed.config import to_dict
from taigimed.data.config import DataConfig, resolve_source_path
from taigimed.data.dedupe import DuplicateIndex
from taigimed.data.examples import (
    dialogue_examples,
    mcq_examples,
    taigi_eval_items,
    taigi_examples,
)
from taigimed.data.length import load_length_tokenizer, token_lengths
from taigimed.data.readers import DataError, read_file
from taigimed.data.records import Dialogue, MCQItem, Record, TaigiRow
from taigimed.data.report import write_report
from taigimed.data.split import build_stage2_mix, holdout, split_train_val
from taigimed.utils import REPO_ROOT, BadRecord, sha256_file, write_json, write_jsonl

log = logging.getLogger(__name__)

STAGE_FILES = ("stage1_train", "stage1_val", "stage2_train", "stage2_val")


@dataclass
class Drop:
    """One record or example left out, with where it came from and why."""

    source: str
    where: str
    id: str
    reason: str
    detail: str = ""


@dataclass
class Ledger:
    """Every count the report shows, kept as the run goes so that the sums can be checked."""

    drops: list[Drop] = field(default_factory=list)
    example_drops: list[Drop] = field(default_factory=list)
    malformed: list[BadRecord] = field(default_factory=list)
    sources: dict[str, dict[str, Any]] = field(default_factory=dict)
    medqa_flags: Counter = field(default_factory=Counter)

    def drop(self, record: Record, reason: str, detail: str = "") -> None:
        self.drops.append(Drop(record.source, record.where, record.id, reason, detail))

    def drop_example(self, ex: dict, reason: str, detail: str = "") -> None:
        self.example_drops.append(Drop(ex["source"], "", ex["id"], reason, detail))


def prepare(cfg: DataConfig, out_dir: Path, base_dir: Path | None = None) -> dict:
    """Run the whole data preparation into ``out_dir``; return the data report (a dict).

    Relative source paths are taken from the working directory, else from ``base_dir``
    (default: the repository root). Raises ``DataError`` for unusable input.
    """
    started = time.monotonic()
    out_dir = Path(out_dir)
    ledger = Ledger()
    records = load_sources(cfg, ledger, base_dir or REPO_ROOT)
    stage_of = {name: src.target_stage for name, src in cfg.sources.items()}

    medqa = [r for r in records if isinstance(r, MCQItem)]
    rows = [r for r in records if isinstance(r, TaigiRow)]
    dialogues = [r for r in records if isinstance(r, Dialogue)]

    medqa = filter_medqa_flags(medqa, cfg, ledger)
    medqa = remove_duplicates(medqa, cfg, ledger, lambda r: [r.dedupe_text()])
    rows = remove_duplicates(rows, cfg, ledger, lambda r: [r.dedupe_text()])
    dialogues = remove_duplicates(dialogues, cfg, ledger, lambda r: [r.dedupe_text()])

    mcq_eval, medqa = holdout(medqa, cfg.medqa.eval_size, cfg.seed)
    sentences = [r for r in rows if r.kind == "sentence"]
    taigi_eval, _ = holdout(sentences, cfg.taigi.eval_size, cfg.seed + 1)
    held = {r.id for r in taigi_eval}
    rows = [r for r in rows if r.id not in held]

    eval_index = build_eval_index(mcq_eval, taigi_eval, cfg)
    medqa = remove_leaks(medqa, eval_index, ledger, lambda r: [r.dedupe_text()])
    rows = remove_leaks(rows, eval_index, ledger, lambda r: r.texts())
    dialogues = remove_leaks(dialogues, eval_index, ledger, lambda r: r.texts())

    by_stage: dict[int, list[Record]] = {1: [], 2: []}
    for record in [*medqa, *rows, *dialogues]:
        by_stage[stage_of[record.source]].append(record)
    reader_of = {name: src.reader for name, src in cfg.sources.items()}
    splits: dict[str, list[dict]] = {}
    record_split: dict[str, Counter] = defaultdict(Counter)
    for stage in (1, 2):
        train, val = split_train_val(by_stage[stage], cfg.val_fraction, cfg.seed + stage)
        for split, recs in (("train", train), ("val", val)):
            for r in recs:
                record_split[r.source][f"stage{stage}_{split}"] += 1
            splits[f"stage{stage}_{split}"] = [
                ex for r in recs for ex in build_examples(r, cfg, reader_of[r.source])
            ]
    built = Counter(ex["source"] for exs in splits.values() for ex in exs)

    tokenizer = load_length_tokenizer(cfg.tokenizer)
    lengths: dict[str, list[int]] = {}
    for stage in (1, 2):
        seen: set[str] = set()
        for split in ("train", "val"):
            name = f"stage{stage}_{split}"
            kept = drop_identical(splits[name], seen, ledger)
            splits[name], lengths[name] = filter_length(kept, tokenizer, cfg.max_tokens, ledger)

    taigi_train = splits["stage2_train"]
    mixed, n_replay, n_repeated = build_stage2_mix(
        taigi_train, splits["stage1_train"], cfg.replay_fraction, cfg.seed
    )
    replay_lengths = dict(
        zip((ex["id"] for ex in splits["stage1_train"]), lengths["stage1_train"], strict=True)
    )
    lengths["stage2_train"] = lengths["stage2_train"] + [
        replay_lengths[ex["id"].removeprefix("replay:").split("#")[0]]
        for ex in mixed
        if ex["id"].startswith("replay:")
    ]
    splits["stage2_train"] = mixed

    lm_items, translation_items = [], []
    for row in sorted(taigi_eval, key=lambda r: r.id):
        lm, tr = taigi_eval_items(row)
        lm_items += lm
        translation_items += tr
    eval_sets = {
        "medqa_mcq": [item.to_eval() for item in sorted(mcq_eval, key=lambda r: r.id)],
        "taigi_lm": lm_items,
        "taigi_translation": translation_items,
    }

    written = write_outputs(out_dir, splits, eval_sets)
    mix = {
        "taigi": len(taigi_train),
        "replay": n_replay,
        "replay_repeated": n_repeated,
        "replay_fraction_target": cfg.replay_fraction,
        "replay_fraction_actual": round(n_replay / len(mixed), 4) if mixed else 0.0,
    }
    counts = {
        "records_by_split": {k: dict(v) for k, v in record_split.items()},
        "examples_built": dict(built),
        "eval_held_out": Counter(r.source for r in [*mcq_eval, *taigi_eval]),
    }
    report = write_report(
        out_dir,
        cfg=to_dict(cfg),
        ledger=ledger,
        splits=splits,
        eval_sets=eval_sets,
        lengths=lengths,
        mix=mix,
        counts=counts,
        max_tokens=cfg.max_tokens,
        elapsed_s=time.monotonic() - started,
    )
    written += ["data_report.json", "data_report.md", *report["plots"]]
    manifest = {"files": {name: sha256_file(out_dir / name) for name in sorted(written)}}
    write_json(out_dir / "manifest.json", manifest)
    return report


# --- steps ------------------------------------------------------------------------------------


def load_sources(cfg: DataConfig, ledger: Ledger, base_dir: Path) -> list[Record]:
    """Read every configured file; fail on a missing required file or too many bad lines."""
    records: list[Record] = []
    jobs = []
    for name, src in cfg.sources.items():
        ledger.sources[name] = {
            "reader": src.reader,
            "stage": src.target_stage,
            "files": [],
            "read": 0,
            "malformed": 0,
            "notes": Counter(),
        }
        for i, path in enumerate(src.paths):
            resolved = resolve_source_path(path, base_dir)
            if not resolved.is_file():
                if src.required:
                    raise DataError(
                        f"sources.{name}.paths[{i}]: {path} not found (looked in the working "
                        f"directory and {base_dir}); fix the path or set "
                        f"sources.{name}.required=false to skip this source"
                    )
                log.warning("sources.%s.paths[%d]: %s not found; skipped", name, i, path)
                ledger.sources[name]["files"].append({"path": str(path), "missing": True})
                continue
            jobs.append((name, src, resolved))
    for name, src, path in tqdm(jobs, desc="read sources", unit="file"):
        out = read_file(src.reader, path, name, cfg.medqa.question_numbers == "strip")
        entry = ledger.sources[name]
        entry["files"].append(
            {"path": str(path), "read": out.report.read, "malformed": len(out.report.bad)}
        )
        entry["read"] += out.report.read
        entry["malformed"] += len(out.report.bad)
        entry["notes"].update(out.notes)
        ledger.malformed.extend(out.report.bad)
        for bad in out.report.bad[:20]:
            log.warning("%s", bad)
        if len(out.report.bad) > 20:
            log.warning(
                "%s: %d more malformed records (see the data report)",
                path,
                len(out.report.bad) - 20,
            )
        if out.report.error_rate > cfg.max_error_rate:
            shown = "\n  ".join(str(b) for b in out.report.bad[:10])
            raise DataError(
                f"sources.{name}: {path}: {len(out.report.bad)} of "
                f"{out.report.read + len(out.report.bad)} records malformed "
                f"({out.report.error_rate:.1%} > max_error_rate {cfg.max_error_rate:.1%}):"
                f"\n  {shown}"
            )
        for where, reason in out.skipped:
            ledger.drops.append(Drop(name, where, "", reason))
        kept = out.records
        if src.max_records is not None:
            already = sum(1 for r in records if r.source == name)
            room = max(0, src.max_records - already)
            for r in kept[room:]:
                ledger.drop(r, "max_records", f"sources.{name}.max_records={src.max_records}")
            kept = kept[:room]
        if src.reader == "medqa":
            for item in kept:
                ledger.medqa_flags.update(k for k, v in item.flags.items() if v)
            ledger.medqa_flags["questions"] += len(kept)
        records.extend(kept)
    return records


def filter_medqa_flags(items: list[MCQItem], cfg: DataConfig, ledger: Ledger) -> list[MCQItem]:
    """Drop figure-dependent and chained questions when the config says so (and empty ones)."""
    kept = []
    for item in items:
        if not item.question:
            ledger.drop(item, "medqa_empty_question", "only an exam number, no question text")
        elif cfg.medqa.figure == "drop" and item.flags["figure"]:
            ledger.drop(item, "medqa_figure", "refers to a figure the data does not include")
        elif cfg.medqa.chained == "drop" and item.flags["chained"]:
            ledger.drop(item, "medqa_chained", "depends on the previous question (承上題)")
        else:
            kept.append(item)
    return kept


def dedupe_index(cfg: DataConfig) -> DuplicateIndex:
    return DuplicateIndex(cfg.dedupe.ngram, cfg.dedupe.near_threshold, cfg.dedupe.near_min_chars)


def remove_duplicates(records: list, cfg: DataConfig, ledger: Ledger, texts) -> list:
    """Keep the first of each group of exact / near duplicates (input order)."""
    index = dedupe_index(cfg).fit(t for r in records for t in texts(r))
    kept = []
    for record in tqdm(
        records, desc="dedupe", unit="rec", leave=False, disable=len(records) < 2000
    ):
        hit = next((m for t in texts(record) if (m := index.match(t))), None)
        if hit:
            kind, other, score = hit
            ledger.drop(record, f"duplicate_{kind}", f"of {other} (similarity {score})")
            continue
        for t in texts(record):
            index.add(record.id, t)
        kept.append(record)
    return kept


def build_eval_index(mcq_eval: list[MCQItem], taigi_eval: list[TaigiRow], cfg: DataConfig):
    """Every eval text (question with and without options, each Taigi field) in one index."""
    index = dedupe_index(cfg)
    for item in mcq_eval:
        index.add(item.id, item.dedupe_text())
        index.add(item.id, item.question)
    for row in taigi_eval:
        for text in row.texts():
            index.add(row.id, text)
    return index


def remove_leaks(records: list, index: DuplicateIndex, ledger: Ledger, texts) -> list:
    """Drop training records that duplicate an eval item exactly or nearly."""
    if not len(index):
        return records
    kept = []
    for record in records:
        hit = next((m for t in texts(record) if (m := index.match(t))), None)
        if hit:
            kind, other, score = hit
            ledger.drop(record, f"eval_leak_{kind}", f"matches eval item {other} ({score})")
        else:
            kept.append(record)
    return kept


def build_examples(record: Record, cfg: DataConfig, reader: str) -> list[dict]:
    if isinstance(record, MCQItem):
        return mcq_examples(record, cfg.system_prompt)
    if isinstance(record, TaigiRow):
        return taigi_examples(record, cfg.system_prompt, cfg.taigi.directions)
    return dialogue_examples(
        record, cfg.system_prompt, "reviewed" if reader == "reviewed" else "chat"
    )


def drop_identical(examples: list[dict], seen: set[str], ledger: Ledger) -> list[dict]:
    """Drop examples whose messages equal an earlier one's (train is seen before val)."""
    kept = []
    for ex in examples:
        key = "\x1e".join(f"{m['role']}\x1f{m['content']}" for m in ex["messages"])
        if key in seen:
            ledger.drop_example(ex, "duplicate_example")
            continue
        seen.add(key)
        kept.append(ex)
    return kept


def filter_length(
    examples: list[dict], tokenizer: Any, max_tokens: int, ledger: Ledger
) -> tuple[list[dict], list[int]]:
    """Drop examples over ``max_tokens`` (chat template applied); return kept and lengths."""
    lengths = token_lengths(tokenizer, examples)
    kept, kept_lengths = [], []
    for ex, n in zip(examples, lengths, strict=True):
        if n > max_tokens:
            ledger.drop_example(ex, "too_long", f"{n} tokens > max_tokens {max_tokens}")
        else:
            kept.append(ex)
            kept_lengths.append(n)
    return kept, kept_lengths


def write_outputs(
    out_dir: Path, splits: dict[str, list[dict]], eval_sets: dict[str, list[dict]]
) -> list[str]:
    """Write the stage files and eval sets atomically; return their names relative to out_dir."""
    written = []
    for name in STAGE_FILES:
        write_jsonl(out_dir / f"{name}.jsonl", splits[name])
        written.append(f"{name}.jsonl")
    for name, items in eval_sets.items():
        write_jsonl(out_dir / "eval" / f"{name}.jsonl", items)
        written.append(f"eval/{name}.jsonl")
    return written
