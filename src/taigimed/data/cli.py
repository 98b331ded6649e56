"""``taigimed prepare``: build the stage datasets, eval sets and data report from raw sources."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

FORMATS = """\
input formats (one reader per source in the config's `sources`; details in docs/data.md):
  medqa          MedQA JSONL (Taiwan, Mainland, US): {"question", "options": {"A".."D" or "E"},
                 "answer", "answer_idx"}. Figure (圖) / chained (承上題) questions and leading
                 numbers are detected and counted; medqa.* decides drop/keep/strip.
  parallel       CSV with header ID,ZH,HAN,TL,EN,POJ (Mandarin, Taigi Hàn-jī, Tâi-lô, English,
                 POJ); an empty TL or POJ is converted from the other (kesi).
  chhoetaigi     ChhoeTaigi dictionary CSV, UTF-8 with BOM: DictWordID, PojUnicode, PojInput,
                 KipUnicode, KipInput, HanLoTaibunPoj, HanLoTaibunKip, HoaBun, DataProvidedBy.
  moe_sentences  MOE Taigi dictionary 例句.csv:
                 例句編號,主編號,釋義編號,例句順序,例句,例句標音,華語翻譯.
  chat           JSONL {"messages": [{"role": "system"|"user"|"assistant", "content": "..."}]},
                 last message from the assistant.
  reviewed       review-queue export JSONL: {"question", "answer", ...} or {"messages": [...]};
                 an optional "status" other than approved/edited/accepted is skipped (counted).

writes into --out: stage1_train/val.jsonl, stage2_train/val.jsonl (Taigi + replay),
eval/medqa_mcq.jsonl, eval/taigi_lm.jsonl, eval/taigi_translation.jsonl, data_report.json,
data_report.md, plots/*.png, manifest.json.
"""


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "prepare",
        help="build stage datasets, eval sets and the data report from raw sources",
        description="Read the sources listed in a data config, clean, dedupe (also across "
        "train/eval), hold out eval sets, filter by token length, mix stage 2 with stage-1 "
        "replay, and write the datasets with a data report.",
        epilog=FORMATS,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--config", required=True, type=Path, help="data config YAML (configs/*/data.yaml)"
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("runs/demo/data"),
        help="output directory (default %(default)s)",
    )
    parser.add_argument(
        "overrides", nargs="*", metavar="key=value", help="config overrides, e.g. seed=7"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from taigimed.config import ConfigError, load_config
    from taigimed.data.config import DataConfig
    from taigimed.data.prepare import prepare
    from taigimed.data.readers import DataError

    try:
        cfg = load_config(DataConfig, args.config, args.overrides)
        report = prepare(cfg, args.out)
    except (ConfigError, DataError) as err:
        log.error("%s", err)
        return 1
    print(summary(report, args.out))
    return 0


def summary(report: dict, out: Path) -> str:
    """A few lines a person reads after the run."""
    stages = report["stages"]
    mix = report["mix"]
    counts = report["dropped"]["counts"]
    reasons = ", ".join(f"{k} {v}" for k, v in counts.items())
    lines = [
        f"prepared {out} in {report['elapsed_s']} s",
        "  "
        + ", ".join(f"{name}: {st['examples']}" for name, st in stages.items())
        + f" (stage-2 replay {mix['replay']} = {mix['replay_fraction_actual']:.1%})",
        "  eval: " + ", ".join(f"{k} {v}" for k, v in report["eval"].items()),
        f"  dropped {sum(counts.values())} ({reasons or 'none'}),"
        f" malformed {report['malformed']['count']}",
        f"  report: {out / 'data_report.md'}",
    ]
    return "\n".join(lines)
