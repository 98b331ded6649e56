"""The data report: ``data_report.json`` (for machines and tests), ``data_report.md`` (for
people) and ``plots/*.png`` (token-length histograms, writing-system mix).

Every source gets a balance line: records read = dropped + held out for eval + used in
train/val. A reader of the report can therefore see that nothing vanished without a reason.
"""

from __future__ import annotations

import statistics
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from taigimed.utils import atomic_open, git_commit, write_json

MAX_LISTED = 500  # dropped / malformed records listed one by one in the JSON (all are counted)


def write_report(
    out_dir: Path,
    *,
    cfg: dict,
    ledger: Any,
    splits: dict[str, list[dict]],
    eval_sets: dict[str, list[dict]],
    lengths: dict[str, list[int]],
    mix: dict,
    counts: dict,
    max_tokens: int,
    elapsed_s: float,
) -> dict:
    """Build the report, write JSON + Markdown + plots into ``out_dir``, return the dict."""
    drops_by_source: dict[str, Counter] = {}
    for d in ledger.drops:
        drops_by_source.setdefault(d.source, Counter())[d.reason] += 1
    ex_drops_by_source: dict[str, Counter] = {}
    for d in ledger.example_drops:
        ex_drops_by_source.setdefault(d.source, Counter())[d.reason] += 1

    sources = {}
    for name, entry in ledger.sources.items():
        dropped = drops_by_source.get(name, Counter())
        held = counts["eval_held_out"].get(name, 0)
        used = counts["records_by_split"].get(name, {})
        in_files = Counter()
        for split, examples in splits.items():
            for ex in examples:
                if ex["source"] == name:
                    in_files[f"{split}_replay" if ex["id"].startswith("replay:") else split] += 1
        sources[name] = {
            "reader": entry["reader"],
            "stage": entry["stage"],
            "files": entry["files"],
            "read": entry["read"],
            "malformed": entry["malformed"],
            "dropped": dict(sorted(dropped.items())),
            "eval_held_out": held,
            "records_used": used,
            "balanced": entry["read"] == sum(dropped.values()) + held + sum(used.values()),
            "examples_built": counts["examples_built"].get(name, 0),
            "examples_dropped": dict(sorted(ex_drops_by_source.get(name, Counter()).items())),
            "examples_written": dict(sorted(in_files.items())),
            "notes": dict(entry["notes"]),
        }

    stages = {}
    for split, examples in splits.items():
        stages[split] = {
            "examples": len(examples),
            "by_source": dict(Counter(ex["source"] for ex in examples).most_common()),
            "by_task": dict(Counter(ex["task"] for ex in examples).most_common()),
            "by_script": dict(Counter(ex["script"] for ex in examples).most_common()),
            "tokens": summarise(lengths.get(split, [])),
        }
    drop_counts = Counter(d.reason for d in ledger.drops)
    drop_counts.update(f"example_{d.reason}" for d in ledger.example_drops)
    report = {
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "git_commit": git_commit(),
        "elapsed_s": round(elapsed_s, 2),
        "tokenizer": cfg["tokenizer"],
        "max_tokens": max_tokens,
        "sources": sources,
        "medqa_flags": dict(ledger.medqa_flags),
        "stages": stages,
        "mix": mix,
        "eval": {name: len(items) for name, items in eval_sets.items()},
        "dropped": {
            "counts": dict(sorted(drop_counts.items())),
            "records": [vars(d) for d in ledger.drops[:MAX_LISTED]],
            "examples": [vars(d) for d in ledger.example_drops[:MAX_LISTED]],
        },
        "malformed": {
            "count": len(ledger.malformed),
            "records": [str(b) for b in ledger.malformed[:MAX_LISTED]],
        },
        "config": cfg,
        "plots": write_plots(out_dir, lengths, splits, max_tokens),
    }
    write_json(out_dir / "data_report.json", report)
    with atomic_open(out_dir / "data_report.md") as fh:
        fh.write(markdown(report))
    return report


def summarise(values: list[int]) -> dict:
    if not values:
        return {"count": 0}
    ordered = sorted(values)
    return {
        "count": len(values),
        "min": ordered[0],
        "p50": ordered[len(ordered) // 2],
        "p95": ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))],
        "max": ordered[-1],
        "mean": round(statistics.fmean(values), 1),
    }


def write_plots(
    out_dir: Path, lengths: dict[str, list[int]], splits: dict[str, list[dict]], max_tokens: int
) -> list[str]:
    """Token-length histogram per stage and a writing-system bar chart; names relative."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plots_dir = out_dir / "plots"
    plots_dir.mkdir(parents=True, exist_ok=True)
    names = []
    for stage in ("stage1", "stage2"):
        fig, ax = plt.subplots(figsize=(6, 3.5))
        for split in ("train", "val"):
            values = lengths.get(f"{stage}_{split}", [])
            if values:
                ax.hist(values, bins=40, alpha=0.6, label=f"{split} ({len(values)})")
        ax.axvline(max_tokens, color="red", linestyle="--", label=f"max_tokens {max_tokens}")
        ax.set_xlabel("tokens (chat template applied)")
        ax.set_ylabel("examples")
        ax.set_title(f"{stage}: example length")
        ax.legend()
        fig.tight_layout()
        name = f"plots/lengths_{stage}.png"
        fig.savefig(out_dir / name, dpi=90)
        plt.close(fig)
        names.append(name)
    scripts = ["zh", "hanji", "tailo", "poj", "mixed"]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    bottom = [0] * len(splits)
    labels = list(splits)
    for script in scripts:
        values = [sum(ex["script"] == script for ex in splits[s]) for s in labels]
        ax.bar(labels, values, bottom=bottom, label=script)
        bottom = [b + v for b, v in zip(bottom, values, strict=True)]
    ax.set_ylabel("examples")
    ax.set_title("writing system by file")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out_dir / "plots/scripts.png", dpi=90)
    plt.close(fig)
    names.append("plots/scripts.png")
    return names


def markdown(report: dict) -> str:
    """A one-page human summary of the JSON report."""
    lines = [
        "# Data report",
        "",
        f"Created {report['created']} from commit `{report['git_commit']}` in "
        f"{report['elapsed_s']} s. Lengths counted with `{report['tokenizer']}` "
        f"(max {report['max_tokens']} tokens).",
        "",
        "## Sources",
        "",
        "| source | reader | stage | read | malformed | dropped | eval | used | balanced |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, s in report["sources"].items():
        dropped = ", ".join(f"{k} {v}" for k, v in s["dropped"].items()) or "0"
        lines.append(
            f"| {name} | {s['reader']} | {s['stage']} | {s['read']} | {s['malformed']} | "
            f"{dropped} | {s['eval_held_out']} | {sum(s['records_used'].values())} | "
            f"{'yes' if s['balanced'] else 'NO'} |"
        )
    lines += ["", "## Output files", "", "| file | examples | by task | by writing system |"]
    lines += ["| --- | --- | --- | --- |"]
    for split, st in report["stages"].items():
        tasks = ", ".join(f"{k} {v}" for k, v in st["by_task"].items())
        scripts = ", ".join(f"{k} {v}" for k, v in st["by_script"].items())
        lines.append(f"| {split}.jsonl | {st['examples']} | {tasks} | {scripts} |")
    for name, n in report["eval"].items():
        lines.append(f"| eval/{name}.jsonl | {n} | | |")
    mix = report["mix"]
    lines += [
        "",
        "## Stage-2 replay",
        "",
        f"{mix['replay']} replayed stage-1 examples + {mix['taigi']} Taigi examples: replay "
        f"fraction {mix['replay_fraction_actual']:.2%} (target {mix['replay_fraction_target']:.0%}"
        f"; {mix['replay_repeated']} replays repeat a stage-1 example).",
        "",
        "## MedQA flags (all questions read)",
        "",
        ", ".join(f"{k}: {v}" for k, v in report["medqa_flags"].items()) or "no MedQA source",
        "",
        "## Dropped",
        "",
        "| reason | count |",
        "| --- | --- |",
    ]
    lines += [f"| {k} | {v} |" for k, v in report["dropped"]["counts"].items()]
    lines += ["", f"## Malformed input ({report['malformed']['count']})", ""]
    lines += [f"- `{r}`" for r in report["malformed"]["records"][:50]]
    lines += ["", "## Token lengths", "", "| file | count | min | p50 | p95 | max |"]
    lines += ["| --- | --- | --- | --- | --- | --- |"]
    for split, st in report["stages"].items():
        t = st["tokens"]
        if t.get("count"):
            lines.append(
                f"| {split} | {t['count']} | {t['min']} | {t['p50']} | {t['p95']} | {t['max']} |"
            )
    lines += [""] + [f"![{p}]({p})" for p in report["plots"]] + [""]
    return "\n".join(lines)
