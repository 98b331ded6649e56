"""Compare evaluated models side by side: ``python -m taigimed.eval.compare NAME=metrics.json ...``.

The gate compares one candidate with its base and champion. Choosing between two *base models*
(SmolLM2-135M vs Gemma 3 270M, each after the same two LoRA stages) needs the same numbers for
runs that share no model: MedQA accuracy with its Wilson interval and an exact McNemar test
against the first model on the questions both answered, and the answer-quality rates (what the
model says to a person, model alone and grounded, dev and held-out apart).

Perplexities of two tokenizers are not comparable (a token is a different amount of text), so
with ``--eval-dir`` (the prepare step's ``eval/`` folder) the language-model sets are reported
as **bits per character**: ``tokens x ln(perplexity) / ln 2 / characters``.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

from taigimed.eval.stats import paired_test, wilson_interval

# (metric, label, format): the rows of the table, in reading order.
ROWS: tuple[tuple[str, str, str], ...] = (
    ("answer_chrf", "answers: chrF vs references", ".2f"),
    ("answer_rougeL", "answers: ROUGE-L", ".3f"),
    ("answer_echo_rate", "answers: echo of prompt or question", ".3f"),
    ("answer_repetition_rate", "answers: loops", ".3f"),
    ("answer_simplified_rate", "answers: Simplified Chinese", ".3f"),
    ("answer_degenerate_rate", "answers: degenerate (any check failed)", ".3f"),
    ("answer_acceptable_rate", "answers: acceptable", ".3f"),
    ("answer_grounded_chrf", "grounded: chrF", ".2f"),
    ("answer_grounded_degenerate_rate", "grounded: degenerate", ".3f"),
    ("answer_grounded_passage_rate", "grounded: approved passage shown", ".3f"),
    ("chrf", "translation Mandarin → Taigi: chrF", ".1f"),
)


def load_metrics(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise SystemExit(f"{path}: cannot read metrics ({err})") from err


def characters_per_script(eval_dir: Path) -> dict[str, int]:
    """Characters of each script's held-out language-model texts (``taigi_lm.jsonl``)."""
    counts: dict[str, int] = {}
    path = eval_dir / "taigi_lm.jsonl"
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            counts[row["script"]] = counts.get(row["script"], 0) + len(row["text"])
        except (json.JSONDecodeError, KeyError, TypeError) as err:
            raise SystemExit(f"{path}:{number}: not an LM record ({err})") from err
    return counts


def bits_per_character(metrics: dict[str, Any], script: str, characters: int) -> float:
    tokens, ppl = metrics.get(f"lm_tokens_{script}"), metrics.get(f"ppl_{script}")
    if not tokens or not ppl or not characters:
        return float("nan")
    return tokens * math.log(ppl) / math.log(2) / characters


def _cell(value: Any, fmt: str) -> str:
    if not isinstance(value, int | float) or math.isnan(value):
        return "–"
    return format(value, fmt)


def medqa_row(models: dict[str, dict[str, Any]]) -> list[str]:
    """Accuracy [95% interval], and for every model after the first: McNemar p against it."""
    first = next(iter(models.values()))
    cells = []
    for index, metrics in enumerate(models.values()):
        n = int(metrics.get("medqa_questions", 0))
        acc = metrics.get("medqa_accuracy", float("nan"))
        low, high = wilson_interval(acc * n, n) if n else (float("nan"), float("nan"))
        cell = f"{acc:.3f} [{low:.3f}, {high:.3f}] (n={n})"
        if index and "medqa_accuracy_items" in metrics and "medqa_accuracy_items" in first:
            test = paired_test(metrics["medqa_accuracy_items"], first["medqa_accuracy_items"])
            cell += f", +{test.candidate_only}/−{test.reference_only} p={test.p_value:.2g}"
        cells.append(cell)
    return cells


def comparison_table(
    models: dict[str, dict[str, Any]], characters: dict[str, int] | None = None
) -> str:
    """A Markdown table: one column per model, dev numbers with held-out in brackets."""
    names = list(models)
    header = "| metric: dev split (held-out split) | " + " | ".join(names) + " |"
    lines = [header, "| --- |" + " --- |" * len(names)]
    lines.append("| MedQA accuracy [95% CI], vs first: won/lost, McNemar p | ")
    lines[-1] += " | ".join(medqa_row(models)) + " |"
    for key, label, fmt in ROWS:
        if not any(key in m for m in models.values()):
            continue
        cells = []
        for metrics in models.values():
            cell = _cell(metrics.get(key), fmt)
            if f"{key}_heldout" in metrics:
                cell += f" ({_cell(metrics[f'{key}_heldout'], fmt)})"
            cells.append(cell)
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    for script, count in sorted((characters or {}).items()):
        cells = [f"{bits_per_character(m, script, count):.2f}" for m in models.values()]
        lines.append(
            f"| bits per character, {script} ({count} chars) | " + " | ".join(cells) + " |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("models", nargs="+", help="NAME=path/to/metrics.json, first = reference")
    parser.add_argument("--eval-dir", type=Path, help="prepare's eval/ folder: bits per char")
    args = parser.parse_args(argv)
    models = {}
    for spec in args.models:
        name, sep, path = spec.partition("=")
        if not sep or not name or not path:
            parser.error(f"{spec!r}: expected NAME=path/to/metrics.json")
        models[name] = load_metrics(Path(path))
    characters = characters_per_script(args.eval_dir) if args.eval_dir else None
    print(comparison_table(models, characters))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
