"""Readers for the real input formats. Each turns one file into records and a ``ReadReport``.

A malformed record never stops a reader: it is recorded as ``file:line: reason`` and skipped,
and ``prepare`` fails only when a source's error rate passes ``max_error_rate``. A file-level
problem (missing file, missing CSV columns) raises ``DataError`` naming the config key.
Formats (also in docs/data.md and ``taigimed prepare --help``):

* ``medqa``: JSONL ``{"question", "options": {"A".."D"|"E"}, "answer", "answer_idx", ...}``
  (MedQA Taiwan, Mainland, US).
* ``parallel``: CSV ``ID,ZH,HAN,TL,EN,POJ`` (iCorpus-100 style; TL or POJ may be empty and is
  then converted from the other).
* ``chhoetaigi``: ChhoeTaigi dictionary CSV, UTF-8 with BOM, ``DictWordID, PojUnicode,
  PojInput, KipUnicode, KipInput, HanLoTaibunPoj, HanLoTaibunKip, HoaBun, DataProvidedBy``.
* ``moe_sentences``: MOE dictionary example sentences ``例句編號,主編號,釋義編號,例句順序,
  例句,例句標音,華語翻譯``.
* ``chat``: JSONL ``{"messages": [{"role", "content"}, ...]}``.
* ``reviewed``: JSONL exported by the serving review queue: ``{"messages": [...]}`` or
  ``{"question", "answer"}`` (also ``approved_answer`` / ``final_answer`` / ``edited_answer``),
  with an optional ``status`` that must be approved/edited/accepted to be used.
"""

from __future__ import annotations

import csv
import logging
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from taigimed.data.normalise import (
    convert_romanization,
    is_chained,
    leading_number,
    needs_figure,
    nfc,
)
from taigimed.data.records import Dialogue, MCQItem, Record, TaigiRow
from taigimed.utils import BadRecord, ReadReport, iter_jsonl, sha256_text

log = logging.getLogger(__name__)

ROLES = ("system", "user", "assistant")
APPROVED = ("approved", "edited", "accepted")
ANSWER_KEYS = ("approved_answer", "final_answer", "edited_answer", "answer")


class DataError(ValueError):
    """Input that cannot be used at all (missing file, wrong columns, too many bad lines)."""


@dataclass
class ReaderOutput:
    """What one reader got from one file."""

    records: list[Record] = field(default_factory=list)
    report: ReadReport = field(default_factory=lambda: ReadReport(path=""))
    # Well-formed records left out on purpose (e.g. a review not approved): (where, reason).
    skipped: list[tuple[str, str]] = field(default_factory=list)
    # Things done to records that are worth reporting (e.g. POJ converted to Tâi-lô).
    notes: Counter = field(default_factory=Counter)


def record_id(source: str, text: str) -> str:
    """A stable id from the content, so ids survive reordering of the input file."""
    return f"{source}-{sha256_text(text)[:12]}"


# --- MedQA ------------------------------------------------------------------------------------


def read_medqa(path: Path, source: str, strip_numbers: bool = True) -> ReaderOutput:
    """MedQA JSONL into ``MCQItem`` with figure / chained / numbered flags."""
    out = ReaderOutput(report=ReadReport(str(path)))
    json_report = ReadReport(str(path))
    for line, obj in iter_jsonl(path, json_report):
        try:
            item = parse_medqa(obj, source, f"{path}:{line}", strip_numbers)
        except ValueError as err:
            out.report.bad.append(BadRecord(str(path), line, str(err)))
            continue
        out.records.append(item)
    out.report.bad = json_report.bad + out.report.bad
    out.report.read = len(out.records)
    return out


def parse_medqa(obj: Any, source: str, where: str, strip_numbers: bool) -> MCQItem:
    """Validate one MedQA object; ``ValueError`` says which field is wrong."""
    if not isinstance(obj, dict):
        raise ValueError(f"expected a JSON object, got {type(obj).__name__}")
    question = obj.get("question")
    if not isinstance(question, str) or not question.strip():
        raise ValueError("field 'question' missing or empty")
    options = obj.get("options")
    if not isinstance(options, dict):
        raise ValueError('field \'options\' must be an object like {"A": ..., "B": ...}')
    keys = sorted(options)
    if keys not in (list("ABCD"), list("ABCDE")):
        raise ValueError(f"options must have keys A-D or A-E, got {keys}")
    if not all(isinstance(v, str) and v.strip() for v in options.values()):
        raise ValueError("every option must be a non-empty string")
    options = {k: nfc(options[k]) for k in keys}
    idx = obj.get("answer_idx")
    if idx not in options:
        raise ValueError(f"field 'answer_idx' must be one of {keys}, got {idx!r}")
    answer = obj.get("answer")
    if answer is not None and nfc(str(answer)) != options[idx]:
        raise ValueError(
            f"'answer' {answer!r} is not the text of option {idx} ({options[idx]!r}); "
            "fix answer or answer_idx"
        )
    question = nfc(question)
    number, rest = leading_number(question)
    flags = {
        "figure": needs_figure(question),
        "chained": is_chained(rest),
        "numbered": number is not None,
    }
    if strip_numbers and number is not None:
        question = rest
    text = question + "".join(options.values())
    return MCQItem(
        id=record_id(source, text),
        source=source,
        question=question,
        options=options,
        answer_idx=idx,
        answer=options[idx],
        flags=flags,
        where=where,
    )


# --- CSV sources ------------------------------------------------------------------------------


def iter_csv(
    path: Path, required: tuple[str, ...], report: ReadReport, any_of: tuple[str, ...] = ()
) -> Iterator[tuple[int, dict[str, str]]]:
    """``(line, row)`` for each well-formed CSV row; BOM-tolerant; bad rows go to ``report``."""
    with path.open(encoding="utf-8-sig", newline="") as fh:
        reader = csv.reader(fh)
        try:
            header = [h.strip() for h in next(reader)]
        except StopIteration:
            raise DataError(f"{path}: empty file (expected a header row)") from None
        missing = [c for c in required if c not in header]
        if missing or (any_of and not any(c in header for c in any_of)):
            want = ", ".join(required) + (f" and one of {', '.join(any_of)}" if any_of else "")
            raise DataError(f"{path}:1: header {header} lacks columns; expected {want}")
        while True:
            try:
                values = next(reader)
            except StopIteration:
                return
            except csv.Error as err:
                report.bad.append(BadRecord(str(path), reader.line_num, f"CSV error: {err}"))
                continue
            line = reader.line_num
            if not any(v.strip() for v in values):
                continue
            if len(values) != len(header):
                report.bad.append(
                    BadRecord(str(path), line, f"expected {len(header)} columns, got {len(values)}")
                )
                continue
            yield line, {h: nfc(v) for h, v in zip(header, values, strict=True)}


def fill_romanization(row: TaigiRow, notes: Counter) -> None:
    """Fill an empty Tâi-lô or POJ field from the other one (kesi), counting what was done."""
    if row.poj and not row.tailo:
        try:
            row.tailo = convert_romanization(row.poj, "tailo")
            notes["poj_converted_to_tailo"] += 1
        except ValueError:
            notes["poj_unconvertible"] += 1
    elif row.tailo and not row.poj:
        try:
            row.poj = convert_romanization(row.tailo, "poj")
            notes["tailo_converted_to_poj"] += 1
        except ValueError:
            notes["tailo_unconvertible"] += 1


def keep_taigi_row(out: ReaderOutput, item: TaigiRow, id_salt: str = "") -> None:
    """Complete a read row (the missing romanisation, a content id) and add it to ``out``.

    The id hashes the text, so the same sentence from two files gets the same id; ``id_salt``
    keeps apart rows a source itself says are different (dictionary entries with their own id).
    """
    fill_romanization(item, out.notes)
    item.id = record_id(item.source, item.dedupe_text() + id_salt)
    out.records.append(item)


def read_parallel(path: Path, source: str) -> ReaderOutput:
    """Parallel rows ``ID, ZH, HAN, TL, EN, POJ`` into sentence ``TaigiRow`` records."""
    out = ReaderOutput(report=ReadReport(str(path)))
    for line, row in iter_csv(path, ("ZH", "HAN"), out.report, any_of=("TL", "POJ")):
        where = f"{path}:{line}"
        if not row["HAN"]:
            out.report.bad.append(BadRecord(str(path), line, "column HAN (Taigi Hàn-jī) is empty"))
            continue
        if not (row["ZH"] or row.get("TL") or row.get("POJ")):
            out.report.bad.append(
                BadRecord(str(path), line, "row has HAN but none of ZH, TL, POJ to pair it with")
            )
            continue
        item = TaigiRow(
            id="",
            source=source,
            kind="sentence",
            where=where,
            zh=row["ZH"],
            hanji=row["HAN"],
            tailo=row.get("TL", ""),
            poj=row.get("POJ", ""),
            en=row.get("EN", ""),
        )
        keep_taigi_row(out, item)
    out.report.read = len(out.records)
    return out


CHHOETAIGI_COLUMNS = ("KipUnicode", "PojUnicode", "HanLoTaibunKip", "HanLoTaibunPoj", "HoaBun")


def read_chhoetaigi(path: Path, source: str) -> ReaderOutput:
    """ChhoeTaigi dictionary CSV (UTF-8 with BOM) into word ``TaigiRow`` records.

    ``HoaBun`` is the Mandarin word, ``HanLoTaibunKip`` the Taigi in Hàn-lô as KIP writes it,
    ``KipUnicode`` / ``PojUnicode`` its Tâi-lô / POJ. A row without romanisation is still kept
    for Mandarin -> Hàn-jī look-ups.
    """
    out = ReaderOutput(report=ReadReport(str(path)))
    for line, row in iter_csv(path, CHHOETAIGI_COLUMNS, out.report):
        where = f"{path}:{line}"
        hanji = row["HanLoTaibunKip"] or row["HanLoTaibunPoj"]
        if not row["HoaBun"] or not hanji:
            out.report.bad.append(
                BadRecord(str(path), line, "HoaBun (Mandarin) or HanLoTaibunKip (Taigi) is empty")
            )
            continue
        item = TaigiRow(
            id="",
            source=source,
            kind="word",
            where=where,
            zh=row["HoaBun"],
            hanji=hanji,
            tailo=row["KipUnicode"],
            poj=row["PojUnicode"],
        )
        if not item.tailo and not item.poj:
            out.notes["no_romanization"] += 1
        keep_taigi_row(out, item, id_salt=row.get("DictWordID", ""))
    out.report.read = len(out.records)
    return out


MOE_COLUMNS = ("例句", "例句標音", "華語翻譯")


def read_moe_sentences(path: Path, source: str) -> ReaderOutput:
    """MOE Taigi dictionary example sentences (例句.csv) into sentence ``TaigiRow`` records."""
    out = ReaderOutput(report=ReadReport(str(path)))
    for line, row in iter_csv(path, MOE_COLUMNS, out.report):
        if not row["例句"] or not row["例句標音"]:
            out.report.bad.append(
                BadRecord(str(path), line, "例句 (Hàn-jī) or 例句標音 (Tâi-lô) is empty")
            )
            continue
        item = TaigiRow(
            id="",
            source=source,
            kind="sentence",
            where=f"{path}:{line}",
            zh=row["華語翻譯"],
            hanji=row["例句"],
            tailo=row["例句標音"],
        )
        keep_taigi_row(out, item)
    out.report.read = len(out.records)
    return out


# --- Chat and reviewed answers ----------------------------------------------------------------


def parse_messages(messages: Any) -> list[dict[str, str]]:
    """Validate a chat ``messages`` list; ``ValueError`` names the message and field."""
    if not isinstance(messages, list) or not messages:
        raise ValueError("field 'messages' must be a non-empty list")
    clean = []
    for i, msg in enumerate(messages):
        if not isinstance(msg, dict):
            raise ValueError(f"messages[{i}] must be an object with role and content")
        role, content = msg.get("role"), msg.get("content")
        if role not in ROLES:
            raise ValueError(f"messages[{i}].role must be one of {list(ROLES)}, got {role!r}")
        if not isinstance(content, str) or not content.strip():
            raise ValueError(f"messages[{i}].content missing or empty")
        clean.append({"role": role, "content": nfc(content)})
    roles = [m["role"] for m in clean]
    if "user" not in roles:
        raise ValueError("dialogue has no user message")
    if roles[-1] != "assistant":
        raise ValueError("last message must be the assistant's answer (the training target)")
    return clean


def read_chat(path: Path, source: str) -> ReaderOutput:
    """Chat JSONL ``{"messages": [...]}`` into ``Dialogue`` records."""
    out = ReaderOutput(report=ReadReport(str(path)))
    json_report = ReadReport(str(path))
    for line, obj in iter_jsonl(path, json_report):
        try:
            if not isinstance(obj, dict):
                raise ValueError(f"expected a JSON object, got {type(obj).__name__}")
            messages = parse_messages(obj.get("messages"))
        except ValueError as err:
            out.report.bad.append(BadRecord(str(path), line, str(err)))
            continue
        # System prompts in the file are replaced by the configured one when examples are built.
        messages = [m for m in messages if m["role"] != "system"]
        text = "".join(m["content"] for m in messages)
        out.records.append(
            Dialogue(record_id(source, text), source, messages, f"{path}:{line}", meta={})
        )
    out.report.bad = json_report.bad + out.report.bad
    out.report.read = len(out.records)
    return out


def read_reviewed(path: Path, source: str) -> ReaderOutput:
    """Clinician-reviewed answers (review-queue export) into ``Dialogue`` records.

    Only approved (or clinician-edited) answers are training data; other statuses are skipped
    and counted, never silently dropped.
    """
    out = ReaderOutput(report=ReadReport(str(path)))
    json_report = ReadReport(str(path))
    for line, obj in iter_jsonl(path, json_report):
        where = f"{path}:{line}"
        try:
            messages = parse_reviewed(obj)
        except ValueError as err:
            out.report.bad.append(BadRecord(str(path), line, str(err)))
            continue
        status = str(obj.get("status", obj.get("decision", "approved"))).lower()
        if status not in APPROVED:
            out.skipped.append((where, f"review_status_{status}"))
            continue
        messages = [m for m in messages if m["role"] != "system"]
        text = "".join(m["content"] for m in messages)
        meta = {k: obj[k] for k in ("id", "reviewer", "model_version") if k in obj}
        out.records.append(Dialogue(record_id(source, text), source, messages, where, meta=meta))
    out.report.bad = json_report.bad + out.report.bad
    out.report.read = len(out.records) + len(out.skipped)
    return out


def parse_reviewed(obj: Any) -> list[dict[str, str]]:
    """Messages of a reviewed record: its ``messages`` or ``question`` + approved answer."""
    if not isinstance(obj, dict):
        raise ValueError(f"expected a JSON object, got {type(obj).__name__}")
    if "messages" in obj:
        return parse_messages(obj["messages"])
    question = obj.get("question")
    answer = next((obj[k] for k in ANSWER_KEYS if obj.get(k)), None)
    if not isinstance(question, str) or not question.strip():
        raise ValueError("needs 'messages' or a non-empty 'question'")
    if not isinstance(answer, str) or not answer.strip():
        raise ValueError(f"needs a non-empty answer in one of {list(ANSWER_KEYS)}")
    return [
        {"role": "user", "content": nfc(question)},
        {"role": "assistant", "content": nfc(answer)},
    ]


READERS = {
    "medqa": read_medqa,
    "parallel": read_parallel,
    "chhoetaigi": read_chhoetaigi,
    "moe_sentences": read_moe_sentences,
    "chat": read_chat,
    "reviewed": read_reviewed,
}


def read_file(reader: str, path: Path, source: str, strip_numbers: bool = True) -> ReaderOutput:
    """Dispatch to the reader named in the config."""
    if reader == "medqa":
        return read_medqa(path, source, strip_numbers)
    return READERS[reader](path, source)
