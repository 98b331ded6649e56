"""The evaluation report: Markdown and self-contained HTML with PNG plots, and KFP metrics.

Plots show each headline metric for the candidate beside the champion and the base model, so a
reviewer sees at a glance whether fine-tuning helped. The HTML embeds the PNGs as base64 so it
can be opened from a pipeline artifact store without its neighbours.
"""

from __future__ import annotations

import base64
import html
import math
from pathlib import Path
from typing import Any

from taigimed.eval.tasks import headline_metrics
from taigimed.utils import atomic_open

COLOURS = {"candidate": "#2b7bb9", "champion": "#e08a1e", "base": "#8c8c8c"}


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def plot_metrics(models: dict[str, dict[str, Any]], out_dir: Path) -> list[Path]:
    """One bar chart per headline metric (candidate / champion / base); returns PNG paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for metric, better in headline_metrics().items():
        names = [n for n, m in models.items() if _finite(m.get(metric))]
        if not names:
            continue
        values = [float(models[n][metric]) for n in names]
        fig, ax = plt.subplots(figsize=(4, 3), dpi=100)
        bars = ax.bar(names, values, color=[COLOURS.get(n, "#5a5a5a") for n in names])
        ax.bar_label(bars, labels=[f"{v:.3g}" for v in values], fontsize=8)
        ax.set_title(f"{metric} ({better} is better)", fontsize=9)
        ax.margins(y=0.15)
        fig.tight_layout()
        path = out_dir / f"{metric}.png"
        with atomic_open(path, "wb") as fh:
            fig.savefig(fh, format="png")
        plt.close(fig)
        paths.append(path)
    return paths


def metric_table(models: dict[str, dict[str, Any]]) -> list[list[str]]:
    """Rows ``[metric, value per model...]`` for every scalar metric any model has."""
    names = list(models)
    metrics: list[str] = []
    for m in models.values():
        metrics += [k for k, v in m.items() if _finite(v) and k not in metrics]
    rows = []
    for metric in metrics:
        cells = []
        for n in names:
            v = models[n].get(metric)
            cells.append(f"{v:.4g}" if _finite(v) else "–")
        rows.append([metric, *cells])
    return rows


def _md_table(header: list[str], rows: list[list[str]]) -> str:
    def clean(cell: str) -> str:
        return str(cell).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    lines += ["| " + " | ".join(clean(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _breakdown_rows(breakdown: dict[str, Any]) -> list[list[str]]:
    rows = []
    for group, values in breakdown.items():
        for name, stats in values.items():
            rows.append([group, name, str(stats["n"]), f"{stats['accuracy']:.3f}"])
    return rows


def build_markdown(
    title: str,
    models: dict[str, dict[str, Any]],
    plots: list[Path],
    out_dir: Path,
    gate_markdown: str | None = None,
    breakdown: dict[str, Any] | None = None,
    samples: list[dict[str, str]] | None = None,
    safety_failures: list[str] | None = None,
    answers_markdown: str | None = None,
) -> str:
    """The report body in Markdown; plots are linked relative to ``out_dir``."""
    parts = [f"# {title}", ""]
    if gate_markdown:
        parts += ["## Promotion gate", "", gate_markdown]
    parts += ["## Metrics", "", _md_table(["metric", *models], metric_table(models)), ""]
    if plots:
        parts += ["## Plots", ""]
        parts += [f"![{p.stem}]({p.relative_to(out_dir).as_posix()})" for p in plots]
        parts.append("")
    if breakdown:
        parts += ["## MedQA accuracy by question type", ""]
        parts += [_md_table(["group", "value", "n", "accuracy"], _breakdown_rows(breakdown)), ""]
    if samples:
        parts += ["## Translation samples (Mandarin -> Taigi)", ""]
        rows = [[s["id"], s["source"], s["reference"], s["model"]] for s in samples]
        parts += [_md_table(["id", "source", "reference", "model"], rows), ""]
    if answers_markdown:
        parts += ["## Answer quality: samples beside their references", "", answers_markdown]
    if safety_failures is not None:
        parts += ["## Safety suite failures", ""]
        parts += [f"- {f}" for f in safety_failures] or ["- none"]
        parts.append("")
    return "\n".join(parts)


def markdown_to_html(markdown: str, out_dir: Path, title: str) -> str:
    """A small Markdown subset (headings, lists, tables, images) to self-contained HTML."""
    body: list[str] = []
    table: list[str] = []

    def flush_table() -> None:
        if not table:
            return
        rows = [[c.strip() for c in line.strip().strip("|").split(" | ")] for line in table]
        head, data = rows[0], [r for r in rows[2:]]
        out = ["<table><tr>" + "".join(f"<th>{html.escape(c)}</th>" for c in head) + "</tr>"]
        for r in data:
            out.append("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>")
        body.append("\n".join(out) + "</table>")
        table.clear()

    for line in markdown.splitlines():
        if line.startswith("|"):
            table.append(line)
            continue
        flush_table()
        if line.startswith("#"):
            level = len(line) - len(line.lstrip("#"))
            body.append(f"<h{level}>{html.escape(line[level:].strip())}</h{level}>")
        elif line.startswith("![") and "](" in line:
            alt, src = line[2:].split("](", 1)
            data = base64.b64encode((out_dir / src.rstrip(")")).read_bytes()).decode()
            body.append(f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">')
        elif line.startswith("- "):
            body.append(f"<li>{html.escape(line[2:])}</li>")
        elif line.strip():
            body.append(f"<p>{html.escape(line.replace('**', ''))}</p>")
    flush_table()
    style = (
        "body{font-family:sans-serif;max-width:1100px;margin:2em auto}"
        "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 8px}"
        "img{margin:4px}"
    )
    return (
        f'<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f"<style>{style}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n"
    )


def write_report(
    out_dir: str | Path,
    candidate: dict[str, Any],
    champion: dict[str, Any] | None = None,
    base: dict[str, Any] | None = None,
    title: str = "TaigiMed evaluation",
    gate_markdown: str | None = None,
    breakdown: dict[str, Any] | None = None,
    samples: list[dict[str, str]] | None = None,
    safety_failures: list[str] | None = None,
    answers: list[dict[str, Any]] | None = None,
    answer_samples: int = 12,
) -> dict[str, Path]:
    """Write ``report.md``, ``report.html`` and ``plots/*.png`` into ``out_dir``.

    ``answers`` (rows of the answer-quality task) adds the reliability diagram of confidence
    and the worst answers of each split beside their references.
    """
    out_dir = Path(out_dir)
    models = {"candidate": candidate}
    if champion:
        models["champion"] = champion
    if base:
        models["base"] = base
    plots = plot_metrics(models, out_dir / "plots")
    answers_markdown = None
    if answers:
        from taigimed.eval.answers import answer_samples_markdown, plot_reliability

        plots.append(plot_reliability(answers, out_dir / "plots" / "answer_reliability.png"))
        answers_markdown = answer_samples_markdown(answers, answer_samples)
    markdown = build_markdown(
        title,
        models,
        plots,
        out_dir,
        gate_markdown,
        breakdown,
        samples,
        safety_failures,
        answers_markdown,
    )
    with atomic_open(out_dir / "report.md") as fh:
        fh.write(markdown)
    with atomic_open(out_dir / "report.html") as fh:
        fh.write(markdown_to_html(markdown, out_dir, title))
    return {"markdown": out_dir / "report.md", "html": out_dir / "report.html"}


def log_kfp_metrics(metrics: dict[str, Any], kfp_metrics_artifact: Any) -> int:
    """Log every finite scalar metric on a KFP ``Metrics`` artifact; returns how many.

    Nested breakdowns and strings are skipped: KFP's metrics UI shows scalars only.
    """
    count = 0
    for name, value in metrics.items():
        if _finite(value):
            kfp_metrics_artifact.log_metric(name, float(value))
            count += 1
    return count
