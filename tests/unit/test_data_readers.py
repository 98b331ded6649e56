"""Each reader on small inline fixtures: good records load, bad ones are reported by line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from taigimed.data.readers import (
    DataError,
    read_chat,
    read_chhoetaigi,
    read_medqa,
    read_moe_sentences,
    read_parallel,
    read_reviewed,
)

MEDQA_OK = {
    "question": "12. 下列何者是高血壓病人最重要的生活型態調整之一？",
    "options": {"A": "減鹽", "B": "多喝含糖飲料", "C": "停止運動", "D": "自行停藥"},
    "answer": "減鹽",
    "answer_idx": "A",
    "meta_info": "taiwanese_test_Q",
}


def write(path: Path, text: str, bom: bool = False) -> Path:
    path.write_text(("\ufeff" if bom else "") + text, encoding="utf-8")
    return path


def jsonl(path: Path, lines: list) -> Path:
    rows = [x if isinstance(x, str) else json.dumps(x, ensure_ascii=False) for x in lines]
    return write(path, "\n".join(rows) + "\n")


def test_medqa_reads_flags_and_strips_numbers(tmp_path):
    five = {
        **MEDQA_OK,
        "question": "承上題，下列何者正確？",
        "options": {**MEDQA_OK["options"], "E": "以上皆非"},
    }
    fig = {**MEDQA_OK, "question": "胸部X光如附圖，最可能的診斷為何？"}
    out = read_medqa(jsonl(tmp_path / "q.jsonl", [MEDQA_OK, five, fig]), "medqa")
    assert out.report.read == 3 and not out.report.bad
    first, chained, figure = out.records
    assert first.question == "下列何者是高血壓病人最重要的生活型態調整之一？"
    assert first.flags == {"figure": False, "chained": False, "numbered": True}
    assert chained.flags["chained"] and list(chained.options) == list("ABCDE")
    assert figure.flags["figure"]
    assert first.where.endswith("q.jsonl:1")


def test_medqa_keeps_numbers_when_asked(tmp_path):
    out = read_medqa(jsonl(tmp_path / "q.jsonl", [MEDQA_OK]), "medqa", strip_numbers=False)
    assert out.records[0].question.startswith("12. ")
    assert out.records[0].flags["numbered"]


def test_medqa_reports_each_malformed_line_with_its_number(tmp_path):
    lines = [
        MEDQA_OK,
        "{not json",
        {**MEDQA_OK, "answer_idx": "F"},
        {**MEDQA_OK, "answer": "多喝含糖飲料"},  # text of B, index A
        {**MEDQA_OK, "options": {"A": "x", "B": "y"}},
        "",
        {**MEDQA_OK, "question": " "},
    ]
    out = read_medqa(jsonl(tmp_path / "q.jsonl", lines), "medqa")
    assert out.report.read == 1
    assert [b.line for b in out.report.bad] == [2, 3, 4, 5, 7]
    reasons = [b.reason for b in out.report.bad]
    assert "invalid JSON" in reasons[0]
    assert "answer_idx" in reasons[1]
    assert "not the text of option A" in reasons[2]
    assert "A-D or A-E" in reasons[3]
    assert "question" in reasons[4]
    assert str(out.report.bad[0]).startswith(f"{tmp_path / 'q.jsonl'}:2: ")


PARALLEL = """ID,ZH,HAN,TL,EN,POJ
TP1,我頭很痛。,我頭殼足疼。,Guá thâu-khak tsiok thiànn.,Headache.,Góa thâu-khak chiok thiàⁿ.
TP2,我咳嗽。,我咧嗽。,,I cough.,Góa teh sàu.
TP3,,,Guá,,
TP4,太多,欄位,a,b,c,d
"""


def test_parallel_reads_rows_fills_tailo_from_poj_and_reports_bad_rows(tmp_path):
    out = read_parallel(write(tmp_path / "p.csv", PARALLEL), "par")
    assert [r.hanji for r in out.records] == ["我頭殼足疼。", "我咧嗽。"]
    assert out.records[1].tailo == "Guá teh sàu."  # converted from POJ
    assert out.notes["poj_converted_to_tailo"] == 1
    assert [(b.line, b.reason) for b in out.report.bad] == [
        (4, "column HAN (Taigi Hàn-jī) is empty"),
        (5, "expected 6 columns, got 7"),
    ]


def test_parallel_missing_columns_is_a_file_error(tmp_path):
    with pytest.raises(DataError, match=r"p\.csv:1: header .* lacks columns"):
        read_parallel(write(tmp_path / "p.csv", "ID,MANDARIN,TAIGI\n1,a,b\n"), "par")


CHHOETAIGI = (
    '"DictWordID","PojUnicode","PojInput","KipUnicode","KipInput","HanLoTaibunPoj",'
    '"HanLoTaibunKip","HoaBun","DataProvidedBy"\n'
    '"1","chí-sià-che","chi2-sia3-che","tsí-sià-tse","tsi2-sia3-tse","止瀉劑","止瀉劑","止瀉劑","x"\n'
    '"2","","","","","度針","度針","體溫計","x"\n'
    '"3","a","a","a","a","","","","x"\n'
)


def test_chhoetaigi_reads_csv_with_bom(tmp_path):
    out = read_chhoetaigi(write(tmp_path / "c.csv", CHHOETAIGI, bom=True), "dict")
    assert [(r.zh, r.hanji, r.tailo, r.poj) for r in out.records] == [
        ("止瀉劑", "止瀉劑", "tsí-sià-tse", "chí-sià-che"),
        ("體溫計", "度針", "", ""),
    ]
    assert out.notes["no_romanization"] == 1
    assert [b.line for b in out.report.bad] == [4]
    assert all(r.kind == "word" for r in out.records)


MOE = """例句編號,主編號,釋義編號,例句順序,例句,例句標音,華語翻譯
1,90001,900011,1,我的腹肚足疼。,Guá ê pak-tóo tsiok thiànn.,我的肚子很痛。
2,90001,900012,1,阿母真疼囝。,,媽媽很疼愛孩子。
"""


def test_moe_sentences(tmp_path):
    out = read_moe_sentences(write(tmp_path / "m.csv", MOE), "moe")
    (row,) = out.records
    assert (row.zh, row.hanji, row.tailo) == (
        "我的肚子很痛。",
        "我的腹肚足疼。",
        "Guá ê pak-tóo tsiok thiànn.",
    )
    assert row.poj == "Góa ê pak-tó͘ chiok thiàⁿ."  # filled from Tâi-lô
    assert [b.line for b in out.report.bad] == [3]


def test_chat_validates_roles_and_drops_file_system_prompts(tmp_path):
    good = {
        "messages": [
            {"role": "system", "content": "舊的系統提示"},
            {"role": "user", "content": "我胸坎足疼"},
            {"role": "assistant", "content": "請隨時敲 119。毋是診斷。"},
        ]
    }
    lines = [
        good,
        {"messages": [{"role": "user", "content": "只有問題"}]},
        {"messages": [{"role": "doctor", "content": "x"}, {"role": "assistant", "content": "y"}]},
        {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": ""}]},
        [1, 2],
    ]
    out = read_chat(jsonl(tmp_path / "c.jsonl", lines), "chat")
    (dialogue,) = out.records
    assert [m["role"] for m in dialogue.messages] == ["user", "assistant"]
    assert [b.line for b in out.report.bad] == [2, 3, 4, 5]
    assert "last message" in out.report.bad[0].reason
    assert "messages[0].role" in out.report.bad[1].reason
    assert "messages[1].content" in out.report.bad[2].reason


def test_reviewed_reads_queue_export_and_counts_unapproved(tmp_path):
    lines = [
        {
            "session_id": "s1",
            "question": "血壓懸愛注意啥？",
            "answer": "較少食鹹。毋是診斷。",
            "edited": False,
        },
        {"question": "q", "final_answer": "a", "status": "approved"},
        {"question": "q2", "answer": "a2", "status": "rejected"},
        {"question": "q3"},
    ]
    out = read_reviewed(jsonl(tmp_path / "r.jsonl", lines), "reviewed")
    assert [d.messages[1]["content"] for d in out.records] == ["較少食鹹。毋是診斷。", "a"]
    assert out.skipped == [(f"{tmp_path / 'r.jsonl'}:3", "review_status_rejected")]
    assert [b.line for b in out.report.bad] == [4]
    assert out.report.read == 3  # two used + one skipped, all counted
