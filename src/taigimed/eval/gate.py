"""The promotion gate: may this candidate replace the model in production?

Three kinds of check per metric, each configured in ``gate.yaml`` (``GateConfig``):

* absolute bounds (``min``/``max``): a broken model fails even when there is nothing to compare;
* no regression against the champion (the production model, read from the registry) beyond a
  tolerance;
* no regression against the base model beyond a tolerance (fine-tuning must not make it worse).

Which way is better for each metric is declared once, by the eval task that computes it
(``taigimed.eval.tasks``); ``gate.yaml`` holds only the thresholds.

Every failed check becomes one reason that names the metric, the value and what it was held
against, so a person reading ``gate.json`` knows why without rerunning anything. The verdict
also carries the full metric table.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from taigimed.eval.config import GateConfig, MetricRule, rule_direction
from taigimed.eval.stats import paired_test


@dataclass
class GateRow:
    """One metric: its values side by side and the outcome of each check."""

    metric: str
    direction: str
    candidate: float | None
    champion: float | None
    base: float | None
    min: float | None
    max: float | None
    passed: bool
    checks: list[str] = field(default_factory=list)
    interval: tuple[float, float] | None = None  # 95% interval of the candidate's value
    p_champion: float | None = None  # paired-test p-value against the champion
    p_base: float | None = None


@dataclass
class GateResult:
    """Verdict: ``passed`` only when no reason was found; ``notes`` explain skipped checks."""

    passed: bool
    reasons: list[str]
    table: list[GateRow]
    notes: list[str] = field(default_factory=list)
    champion_version: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "verdict": "pass" if self.passed else "fail",
            "reasons": self.reasons,
            "notes": self.notes,
            "champion_version": self.champion_version,
            "table": [asdict(row) for row in self.table],
        }

    def markdown(self) -> str:
        """The verdict and table as Markdown (for gate.md and the report)."""
        lines = [f"**Gate: {'PASS' if self.passed else 'FAIL'}**", ""]
        lines += [f"- FAIL: {r}" for r in self.reasons]
        lines += [f"- note: {n}" for n in self.notes]
        lines += [
            "",
            "| metric | better | candidate | 95% interval | champion | p vs champion | base "
            "| p vs base | min | max | result |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        for row in self.table:
            interval = "–" if row.interval is None else f"[{', '.join(map(_fmt, row.interval))}]"
            cells = [
                _fmt(row.candidate),
                interval,
                _fmt(row.champion),
                _fmt(row.p_champion),
                _fmt(row.base),
                _fmt(row.p_base),
                _fmt(row.min),
                _fmt(row.max),
            ]
            lines.append(
                f"| {row.metric} | {row.direction} | "
                + " | ".join(cells)
                + f" | {'ok' if row.passed else 'FAIL'} |"
            )
        return "\n".join(lines) + "\n"


def _fmt(value: float | None) -> str:
    return "–" if value is None else f"{value:.4g}"


def _number(metrics: dict[str, Any] | None, name: str) -> float | None:
    """A finite float from a metrics dict, else None (missing, NaN, or not a number)."""
    if not metrics or name not in metrics:
        return None
    value = metrics[name]
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _items(metrics: dict[str, Any] | None, name: str) -> dict[str, bool] | None:
    """Per-item results ``<name>_items`` ({item id: right?}) from a metrics dict, if any."""
    value = (metrics or {}).get(f"{name}_items")
    if not isinstance(value, dict) or not value:
        return None
    return {str(k): bool(v) for k, v in value.items()}


def _interval(metrics: dict[str, Any], name: str) -> tuple[float, float] | None:
    low, high = _number(metrics, f"{name}_ci_low"), _number(metrics, f"{name}_ci_high")
    return None if low is None or high is None else (low, high)


def _allowed(reference: float, tolerance: float, rule: MetricRule, direction: str) -> float:
    """The worst value still accepted against a reference."""
    slack = abs(reference) * tolerance if rule.relative else tolerance
    return reference - slack if direction == "higher" else reference + slack


def _tolerance_text(tolerance: float, rule: MetricRule) -> str:
    return f"{tolerance:.0%}" if rule.relative else f"{tolerance:g}"


def check_metric(
    name: str,
    rule: MetricRule,
    candidate: dict[str, Any],
    champion: dict[str, Any] | None,
    base: dict[str, Any] | None,
    champion_label: str = "champion",
) -> tuple[GateRow, list[str]]:
    """All checks for one metric: (table row, failure reasons)."""
    direction = rule_direction(name, rule)
    value = _number(candidate, name)
    champ, base_value = _number(champion, name), _number(base, name)
    row = GateRow(name, direction, value, champ, base_value, rule.min, rule.max, True)
    row.interval = _interval(candidate, name)
    reasons: list[str] = []
    if value is None:
        if rule.required:
            raw = candidate.get(name, "absent")
            reasons.append(f"{name}: missing or not a finite number in candidate metrics ({raw})")
        row.passed = not reasons
        return row, reasons
    if rule.min is not None and value < rule.min:
        reasons.append(f"{name}={value:.4g} is below the minimum {rule.min:g}")
    if rule.max is not None and value > rule.max:
        reasons.append(f"{name}={value:.4g} is above the maximum {rule.max:g}")
    for label, role, reference, tolerance, ref_metrics in (
        (champion_label, "champion", champ, rule.vs_champion, champion),
        ("base", "base", base_value, rule.vs_base, base),
    ):
        if tolerance is None or reference is None:
            continue
        if rule.paired_test == "mcnemar":
            mine, theirs = _items(candidate, name), _items(ref_metrics, name)
            if mine and theirs and set(mine) & set(theirs):
                test = paired_test(mine, theirs)
                setattr(row, f"p_{role}", test.p_value)
                row.checks.append(
                    f"vs {label}: McNemar on {test.n} items, {test.candidate_only} won / "
                    f"{test.reference_only} lost, p={test.p_value:.3g}"
                )
                if test.worse and test.p_value < rule.alpha:
                    reasons.append(
                        f"{name}={value:.4g} regressed vs {label} ({reference:.4g}): exact McNemar "
                        f"on {test.n} paired items, candidate right on {test.candidate_only} the "
                        f"{label} missed and wrong on {test.reference_only} it got, "
                        f"p={test.p_value:.3g} < {rule.alpha:g}"
                    )
                continue
            row.checks.append(f"vs {label}: no per-item results to pair; tolerance used")
        limit = _allowed(reference, tolerance, rule, direction)
        worse = value < limit if direction == "higher" else value > limit
        row.checks.append(f"vs {label}: limit {limit:.4g}")
        if worse:
            reasons.append(
                f"{name}={value:.4g} regressed vs {label} ({reference:.4g}); "
                f"{direction} is better, tolerance {_tolerance_text(tolerance, rule)}, "
                f"limit {limit:.4g}"
            )
    row.passed = not reasons
    return row, reasons


def gate(
    candidate: dict[str, Any],
    thresholds: GateConfig,
    champion: dict[str, Any] | None = None,
    base: dict[str, Any] | None = None,
    champion_version: str | None = None,
) -> GateResult:
    """Compare ``candidate`` metrics with thresholds, the champion and the base model."""
    reasons: list[str] = []
    notes: list[str] = []
    table: list[GateRow] = []
    if champion is None:
        message = "no champion yet (first model): regression checks against it skipped"
        (reasons if thresholds.require_champion else notes).append(message)
    if base is None:
        message = "no base-model metrics given: regression checks against base skipped"
        (reasons if thresholds.require_base else notes).append(message)
    label = f"champion {champion_version}" if champion_version else "champion"
    for name, rule in thresholds.metrics.items():
        row, failed = check_metric(name, rule, candidate, champion, base, label)
        table.append(row)
        reasons.extend(failed)
    return GateResult(not reasons, reasons, table, notes, champion_version)
