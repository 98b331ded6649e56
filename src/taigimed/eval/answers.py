"""The answer-quality task: what the model actually says to a person, scored against references.

Each open health question (``data/eval/answers/*.jsonl``) is answered greedily under the
serving system prompt, as a person would be answered. Per answer:

* ``chrf``: sacrebleu sentence chrF (0-100) against the best of its references, after
  sacrebleu's Chinese tokeniser (``zh``) has split the Hàn-jī into characters;
* ``rougeL``: ROUGE-L F1 (0-1, rouge-score) on characters, best reference;
* the degenerate-output signals of ``taigimed.quality`` (echo, repetition, broken characters,
  empty, Simplified, off-script) and the confidence the guard would give it.

Averages go to metrics.json as ``answer_*`` for the dev split (what the gate holds) and
``answer_*_heldout`` for the held-out split (reported apart, never tuned on). An answer is
*acceptable* when its chrF reaches ``acceptable_chrf`` and no degenerate flag is set;
``confidence_auroc`` says how well confidence tells acceptable answers from the rest (0.5 is a
coin, 1.0 perfect) and ``confidence_auroc_logprob`` gives the same for exp(mean log-prob)
alone, the score the guard used before.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from taigimed.eval.config import AnswersConfig
from taigimed.eval.gen import Generated, chat_prompt, generate_answers, render_messages
from taigimed.eval.io import EvalDataError, read_eval_set, require_str
from taigimed.quality import QualitySettings, answer_signals, confidence

SCRIPTS = ("hanji", "tailo", "zh")
TOPICS = (
    "cold",
    "fever",
    "diet",
    "blood_pressure",
    "diabetes",
    "medicines",
    "sleep",
    "injuries",
    "elderly_care",
)
SPLITS = ("dev", "heldout")
# Fallback when neither the config nor the model spec (taigimed.json) gives a prompt: the one
# the parroting demo champion of issue 13 was served with (the old ServeConfig default).
DEFAULT_ECHO_PROMPT = (
    "你是台語醫療衛教助理。用台語漢字簡單回答，毋通做診斷，嚴重的症狀愛叫人去看醫生。"
)
# Rate metrics (share of answers with the flag) and the AnswerSignals attribute behind each.
FLAG_RATES = {
    "answer_echo_rate": "echo",
    "answer_repetition_rate": "repetitive",
    "answer_broken_char_rate": "broken",
    "answer_empty_rate": "empty",
    "answer_simplified_rate": "simplified",
    "answer_off_script_rate": "off_script",
}


@dataclass
class AnswerItem:
    id: str
    split: str
    topic: str
    script: str
    question: str
    references: list[str]


def parse_answer_item(obj: dict[str, Any], where: str) -> AnswerItem:
    """Validate one line of the answer-quality set."""
    split, topic, script = (require_str(obj, k, where) for k in ("split", "topic", "script"))
    if split not in SPLITS:
        raise EvalDataError(f"{where}: split must be one of {list(SPLITS)}, got {split!r}")
    if topic not in TOPICS:
        raise EvalDataError(f"{where}: topic must be one of {list(TOPICS)}, got {topic!r}")
    if script not in SCRIPTS:
        raise EvalDataError(f"{where}: script must be one of {list(SCRIPTS)}, got {script!r}")
    refs = obj.get("references")
    if not isinstance(refs, list) or not refs or not all(isinstance(r, str) and r for r in refs):
        raise EvalDataError(f"{where}: 'references' must be a non-empty list of strings")
    question = require_str(obj, "question", where)
    return AnswerItem(require_str(obj, "id", where), split, topic, script, question, refs)


def load_answer_items(paths: list[str | Path], max_items: int = 0) -> list[AnswerItem]:
    """Read every file of the set; ids must be unique across files."""
    items: list[AnswerItem] = []
    for path in paths:
        items += read_eval_set(path, parse_answer_item, "answer-quality")
    seen: set[str] = set()
    for item in items:
        if item.id in seen:
            raise EvalDataError(f"answer-quality set: id {item.id!r} appears twice")
        seen.add(item.id)
    return items[:max_items] if max_items else items


# --- scoring ------------------------------------------------------------------------------------


def sentence_chrf(hypothesis: str, references: list[str]) -> float:
    """chrF (0-100) of one answer against its best reference, text split by sacrebleu's zh."""
    from sacrebleu.metrics import CHRF
    from sacrebleu.tokenizers.tokenizer_zh import TokenizerZh

    tok = TokenizerZh()
    return float(CHRF().sentence_score(tok(hypothesis), [tok(r) for r in references]).score)


class _CharTokenizer:
    """rouge-score tokenizer for Hàn-jī: every non-space character is a token."""

    def tokenize(self, text: str) -> list[str]:
        return [ch for ch in text if not ch.isspace()]


def sentence_rouge_l(hypothesis: str, references: list[str]) -> float:
    """Character-level ROUGE-L F1 (0-1) against the best reference (rouge-score)."""
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rougeL"], tokenizer=_CharTokenizer())
    return max(scorer.score(ref, hypothesis)["rougeL"].fmeasure for ref in references)


def auroc(scores: list[float], labels: list[bool]) -> float | None:
    """Area under the ROC curve (Mann-Whitney, ties count half); None with one class only."""
    pos = [s for s, y in zip(scores, labels, strict=True) if y]
    neg = [s for s, y in zip(scores, labels, strict=True) if not y]
    if not pos or not neg:
        return None
    wins = sum((p > n) + 0.5 * (p == n) for p in pos for n in neg)
    return wins / (len(pos) * len(neg))


def score_answer(
    item: AnswerItem, answer: Generated, cfg: AnswersConfig, system_prompt: str
) -> dict[str, Any]:
    """One row of answers.jsonl: scores, signals, both confidences and acceptability."""
    settings = cfg.quality
    signals = answer_signals(
        answer.text, item.question, system_prompt, item.script, settings or QualitySettings()
    )
    chrf = sentence_chrf(answer.text, item.references) if answer.text else 0.0
    rouge = sentence_rouge_l(answer.text, item.references) if answer.text else 0.0
    conf = confidence(answer.logprobs, signals, cfg.confidence)
    plain = math.exp(sum(answer.logprobs) / len(answer.logprobs)) if answer.logprobs else 0.0
    return {
        "id": item.id,
        "split": item.split,
        "topic": item.topic,
        "script": item.script,
        "question": item.question,
        "references": item.references,
        "answer": answer.text,
        "finish": answer.finish,
        "chrf": chrf,
        "rougeL": rouge,
        "confidence": 0.0 if conf is None else conf,
        "confidence_logprob": plain,
        "acceptable": chrf >= cfg.acceptable_chrf and not signals.degenerate,
        "flags": signals.flags,
        "signals": signals.to_dict(),
    }


def summarise_answers(rows: list[dict[str, Any]], suffix: str = "") -> dict[str, float | None]:
    """Averages of one split's rows (``suffix`` ``""`` for dev, ``"_heldout"``)."""
    n = len(rows)
    if not n:
        return {}
    metrics: dict[str, float | None] = {
        "answer_chrf": sum(r["chrf"] for r in rows) / n,
        "answer_rougeL": sum(r["rougeL"] for r in rows) / n,
    }
    for name, attr in FLAG_RATES.items():
        metrics[name] = sum(bool(r["signals"][attr]) for r in rows) / n
    metrics["answer_degenerate_rate"] = sum(bool(r["flags"]) for r in rows) / n
    metrics["answer_acceptable_rate"] = sum(r["acceptable"] for r in rows) / n
    metrics["answer_length_cut_rate"] = sum(r["finish"] == "length" for r in rows) / n
    labels = [r["acceptable"] for r in rows]
    metrics["confidence_auroc"] = auroc([r["confidence"] for r in rows], labels)
    metrics["confidence_auroc_logprob"] = auroc([r["confidence_logprob"] for r in rows], labels)
    metrics["answer_items"] = float(n)
    return {f"{k}{suffix}": v for k, v in metrics.items()}


def worst_first(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Degenerate answers first (most flags), then by chrF ascending: what a reviewer reads."""
    return sorted(rows, key=lambda r: (-len(r["flags"]), r["chrf"], r["id"]))


def resolve_system_prompt(cfg: AnswersConfig) -> str:
    """The prompt answers are generated under and compared with for echo: the configured one,
    which ``with_model_spec`` fills from the model's trained prompt (taigimed.json); without
    one, the serving default prompt, so parroting it is still caught."""
    if cfg.system_prompt:
        return cfg.system_prompt
    from taigimed.serve.config import ServeConfig

    return ServeConfig().system_prompt or DEFAULT_ECHO_PROMPT


@dataclass
class AnswersResult:
    metrics: dict[str, Any]
    rows: list[dict[str, Any]]
    seconds: float
    grounded_rows: list[dict[str, Any]] = field(default_factory=list)


def evaluate_answers(
    model: Any,
    tokenizer: Any,
    items: list[AnswerItem],
    cfg: AnswersConfig,
    knowledge: Any = None,
) -> AnswersResult:
    """Generate, score and summarise every item: the whole task for one model. With
    ``knowledge`` (a ``LiveKnowledge``), also the answers a person would get from the guard
    serving that index beside the model (``answer_grounded_*``)."""
    system_prompt = resolve_system_prompt(cfg)
    prompts = [chat_prompt(tokenizer, system_prompt, item.question) for item in items]
    started = time.perf_counter()
    generated = generate_answers(model, tokenizer, prompts, cfg.max_new_tokens, cfg.batch_size)
    seconds = time.perf_counter() - started
    rows = [score_answer(i, g, cfg, system_prompt) for i, g in zip(items, generated, strict=True)]
    metrics = by_split(rows)
    metrics["answers_per_s"] = len(rows) / max(seconds, 1e-9)
    grounded_rows: list[dict[str, Any]] = []
    if knowledge is not None:
        grounded_rows = grounded_answers(
            model, tokenizer, items, cfg, knowledge, generated, system_prompt
        )
        metrics.update(grounded_metrics(grounded_rows))
    return AnswersResult(metrics, rows, seconds, grounded_rows)


def by_split(rows: list[dict[str, Any]]) -> dict[str, float | None]:
    """Dev metrics under their names (what the gate holds), held-out ones with ``_heldout``."""
    metrics = summarise_answers([r for r in rows if r["split"] == "dev"])
    metrics.update(summarise_answers([r for r in rows if r["split"] == "heldout"], "_heldout"))
    return metrics


def grounded_answers(
    model: Any,
    tokenizer: Any,
    items: list[AnswerItem],
    cfg: AnswersConfig,
    knowledge: Any,
    alone: list[Generated],
    system_prompt: str,
) -> list[dict[str, Any]]:
    """What the guard would show for each question with ``knowledge`` served.

    The guard's own steps (``taigimed.retrieval.grounding``): a confident match asks the model
    to answer from the passages (one system message with the instruction and passages); a
    degenerate answer is replaced by the best passage; no confident match leaves the model's
    own answer (``alone``, generated under ``system_prompt``), which the guard holds for review.
    """
    from taigimed.retrieval.grounding import INSTRUCTION, choose_answer, grounded_messages

    decisions = [knowledge.ground(item.question) for item in items]
    todo = [k for k, g in enumerate(decisions) if g.mode == "grounded"]
    conversations = [
        grounded_messages([{"role": "user", "content": items[k].question}], decisions[k])
        for k in todo
    ]
    prompts = [render_messages(tokenizer, messages) for messages in conversations]
    answers = generate_answers(model, tokenizer, prompts, cfg.max_new_tokens, cfg.batch_size)
    from_model = dict(zip(todo, answers, strict=True))
    rows = []
    for k, item in enumerate(items):
        grounding = decisions[k]
        if k not in from_model:
            row = score_answer(item, alone[k], cfg, system_prompt)
            row["grounding"] = "model_alone"
        else:
            answer = from_model[k]
            shown, verdict = choose_answer(answer.text, grounding, item.question)
            if verdict.ok:
                row = score_answer(item, answer, cfg, INSTRUCTION)
                row["grounding"] = "model_grounded"
            else:  # approved text: no model log-probs apply to it
                row = score_answer(item, Generated(shown, [], "stop"), cfg, INSTRUCTION)
                row["grounding"] = "passage"
                row["rejected_model_answer"] = {"text": answer.text, "why": list(verdict.reasons)}
        row["sources"] = [s["id"] for s in grounding.sources]
        rows.append(row)
    return rows


def grounded_metrics(rows: list[dict[str, Any]]) -> dict[str, float | None]:
    """``answer_grounded_*`` (dev) and ``..._heldout``: the quality metrics of what was shown,
    the share of questions grounded and the share answered with the passage itself."""
    metrics = {}
    for name, value in by_split(rows).items():
        if name.startswith(("answer_", "confidence_")) and "auroc" not in name:
            metrics[name.replace("answer_", "answer_grounded_", 1)] = value
    for suffix, split in (("", "dev"), ("_heldout", "heldout")):
        chosen = [r for r in rows if r["split"] == split]
        if chosen:
            n = len(chosen)
            grounded = sum(r["grounding"] != "model_alone" for r in chosen)
            metrics[f"answer_grounded_share{suffix}"] = grounded / n
            passage = sum(r["grounding"] == "passage" for r in chosen)
            metrics[f"answer_grounded_passage_rate{suffix}"] = passage / n
    return metrics


def plot_reliability(rows: list[dict[str, Any]], path: Path, bins: int = 10) -> Path:
    """Reliability diagram: share of acceptable answers per confidence bin, both scores."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from taigimed.utils import atomic_open

    fig, ax = plt.subplots(figsize=(4.5, 4), dpi=100)
    ax.plot([0, 1], [0, 1], ls="--", color="#999999", lw=1, label="perfectly calibrated")
    for key, colour, label in (
        ("confidence", "#2b7bb9", "confidence (log-prob + signals)"),
        ("confidence_logprob", "#e08a1e", "exp(mean log-prob) only"),
    ):
        xs, ys, ns = [], [], []
        for b in range(bins):
            lo, hi = b / bins, (b + 1) / bins
            members = [r for r in rows if lo <= r[key] < hi or (b == bins - 1 and r[key] == 1.0)]
            if members:
                xs.append(sum(r[key] for r in members) / len(members))
                ys.append(sum(r["acceptable"] for r in members) / len(members))
                ns.append(len(members))
        ax.plot(xs, ys, marker="o", color=colour, label=label)
        for x, y, n in zip(xs, ys, ns, strict=True):
            ax.annotate(str(n), (x, y), fontsize=6, xytext=(2, 2), textcoords="offset points")
    ax.set_xlim(0, 1)
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("confidence (bin mean)", fontsize=8)
    ax.set_ylabel("share acceptable", fontsize=8)
    ax.set_title("answer confidence reliability (n per point)", fontsize=9)
    ax.legend(fontsize=6, loc="upper left")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(path, "wb") as fh:
        fig.savefig(fh, format="png")
    plt.close(fig)
    return path


def split_rows(rows: list[dict[str, Any]], split: str) -> list[dict[str, Any]]:
    return [r for r in rows if r["split"] == split]


def auroc_line(rows: list[dict[str, Any]]) -> str:
    """How well confidence ranks this split's answers, or why that cannot be said: AUROC needs
    acceptable and unacceptable answers both (the demo's 135M model has no acceptable one)."""
    good = sum(r["acceptable"] for r in rows)
    value = auroc([r["confidence"] for r in rows], [r["acceptable"] for r in rows])
    if value is None:
        return (
            f"{good} of {len(rows)} answers acceptable: `confidence_auroc` is undefined "
            "(one class only) and left out of metrics.json."
        )
    return f"{good} of {len(rows)} answers acceptable; confidence AUROC {value:.3f}."


def answer_samples_markdown(rows: list[dict[str, Any]], limit: int) -> str:
    """Worst answers first beside their references, per split, as a Markdown table."""

    def clean(text: str) -> str:
        return text.replace("|", "\\|").replace("\n", " ")

    parts = []
    for split in SPLITS:
        chosen = worst_first([r for r in rows if r["split"] == split])[:limit]
        if not chosen:
            continue
        parts += [f"### {split} split (worst first)", "", auroc_line(split_rows(rows, split)), ""]
        parts += ["| id | question | reference | answer | chrF | flags |", "|" + " --- |" * 6]
        for r in chosen:
            parts.append(
                f"| {r['id']} | {clean(r['question'])} | {clean(r['references'][0])} | "
                f"{clean(r['answer']) or '(empty)'} | {r['chrf']:.1f} | "
                f"{', '.join(r['flags']) or '–'} |"
            )
        parts.append("")
    return "\n".join(parts)
