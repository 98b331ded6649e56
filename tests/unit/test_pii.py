"""PII scrubbing on a corpus of positives and look-alike negatives (pii_corpus_v1.jsonl).

Run with ``-rP`` to see the recall and false-positive rate in the test output.
"""

from __future__ import annotations

import json

import pytest

from taigimed.guardrails import scrub_pii
from taigimed.triage.pii import _valid_national_id, find_pii
from taigimed.utils import REPO_ROOT

CORPUS = REPO_ROOT / "data/safety/pii_corpus_v1.jsonl"


def load_corpus() -> list[dict]:
    return [json.loads(line) for line in CORPUS.read_text(encoding="utf-8").splitlines() if line]


def test_corpus_recall_and_false_positive_rate():
    rows = load_corpus()
    positives = [r for r in rows if r["pii"]]
    negatives = [r for r in rows if not r["pii"]]
    assert len(rows) >= 100 and len(positives) >= 50 and len(negatives) >= 40
    strings = [(r, p) for r in positives for p in r["pii"]]
    leaked = [(r["id"], p) for r, p in strings if p in scrub_pii(r["text"])]
    flagged = [r["id"] for r in negatives if scrub_pii(r["text"]) != r["text"]]
    recall = 1 - len(leaked) / len(strings)
    fpr = len(flagged) / len(negatives)
    kinds = sorted({r["kind"] for r in positives})
    print(
        f"\nPII corpus: {len(positives)} positives ({len(strings)} strings; {', '.join(kinds)}),"
        f" {len(negatives)} look-alike negatives\n"
        f"recall {recall:.3f} (leaked: {leaked})\nfalse-positive rate {fpr:.3f} ({flagged})"
    )
    assert recall == 1.0, leaked
    assert fpr <= 0.05, flagged


@pytest.mark.parametrize(
    "text",
    [
        "Ｆ１２３４５６７８４",
        "G 123456785",
        "0912.345.670",
        "０９１２３４５６７８",
        "+886 912 345 678",
    ],
)
def test_the_slips_from_the_issue_are_scrubbed(text):
    assert not any(
        ch.isdigit() for ch in scrub_pii(text).translate({0xFF10 + i: "0" for i in range(10)})
    )


def test_checksum_keeps_a_random_letter_and_nine_digits():
    assert _valid_national_id("A123456789")
    assert not _valid_national_id("A123456788")
    assert scrub_pii("訂單 A123456788") == "訂單 A123456788"


def test_only_the_pii_is_replaced_and_the_rest_stays_as_written():
    text = "阿嬤（８５歲）電話０９１２３４５６７８，地址：台南市東區大學路1號。"
    assert scrub_pii(text) == "阿嬤（８５歲）電話[PHONE]，地址：[ADDRESS]。"
    assert [k for _, _, k in find_pii(text)] == ["phone", "address"]


def test_digits_inside_an_identifier_are_left_alone():
    """A session id is hex: a run of digits in it is not a phone (the guard scrubs every
    string field of a request, session ids included)."""
    sid = "5eabfce9765d4ef6a0912345678e4df209"
    assert scrub_pii(sid) == sid
    assert scrub_pii("tel: 0912345678") == "tel: [PHONE]"
