"""Server-side HTML for the review desk without JavaScript: queue, counters, history, read only.

Every value from the store goes through ``html.escape``; the text is already PII-scrubbed. The
labels are the same Taigi-with-Mandarin ones the JavaScript desk shows (``review.js``).
"""

from __future__ import annotations

from html import escape
from typing import Any

LOGIN_ERROR_SLOT = "<!--LOGIN_ERROR-->"
NOJS_SLOT = "<!--NOJS_DESK-->"
EMPTY_STATS = {"backlog": 0, "median_wait_s": None, "decisions_today": 0, "by_version": {}}
WRONG_TOKEN = "通行碼毋著，請閣試一擺。（權杖錯誤，請再試一次。）"


def urgency_key(item: dict[str, Any]) -> tuple:
    """Most urgent first: held for a clinical topic, then lower confidence, then older.

    ``review.js`` sorts with the same rule (``urgencyCompare``)."""
    topic = any(r.startswith("topic:") for r in item.get("review_reasons") or [])
    confidence = item.get("confidence")
    return (0 if topic else 1, 1.0 if confidence is None else confidence, item["created_at"])


def format_seconds(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    if seconds < 90:
        return f"{seconds:.0f} 秒"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} 分鐘"
    return f"{seconds / 3600:.1f} 點鐘（小時）"


def _conversation(messages: list[dict[str, str]]) -> str:
    turns = [m for m in messages if m.get("role") in ("user", "assistant")]
    items = "".join(
        f'<li class="turn {escape(m["role"])}">{escape(m.get("content") or "")}</li>' for m in turns
    )
    return f'<ol class="conversation">{items}</ol>'


def queue_html(queue: list[dict[str, Any]]) -> str:
    if not queue:
        return '<p class="empty">這馬無等咧看的。（目前沒有待審項目。）</p>'
    cards = []
    for item in sorted(queue, key=urgency_key):
        conf = "–" if item["confidence"] is None else f"{item['confidence']:.2f}"
        reasons = ", ".join(item["review_reasons"]) or "–"
        cards.append(
            f'<article class="card" data-session="{escape(item["session_id"])}">'
            f"<dl>"
            f'<dt>問題（問題）</dt><dd class="question">{escape(item["question"])}</dd>'
            f'<dt>草稿（回答草稿）</dt><dd class="draft">{escape(item["draft_answer"] or "")}</dd>'
            f"<dt>把握（信心分數）</dt><dd>{conf}</dd>"
            f"<dt>為啥物留落來（保留原因）</dt><dd>{escape(reasons)}</dd>"
            f"<dt>模型版本（模型版本）</dt><dd>{escape(item['model_version'])}</dd>"
            f"<dt>收著的時間（收到時間）</dt><dd>{escape(item['created_at'])}</dd>"
            f"</dl>"
            f"<details><summary>對話（對話紀錄）</summary>{_conversation(item['messages'])}"
            f"</details></article>"
        )
    return "".join(cards)


def stats_html(stats: dict[str, Any]) -> str:
    rates = "".join(
        f"<li>{escape(v)}: {c['rejection_rate']:.0%} "
        f"({c['rejected']}/{c['approved'] + c['rejected']})</li>"
        for v, c in stats["by_version"].items()
    )
    return (
        '<dl class="counters">'
        f"<div><dt>猶未看的（待審數）</dt><dd>{stats['backlog']}</dd></div>"
        f"<div><dt>等偌久，中位數（等待時間中位數）</dt>"
        f"<dd>{format_seconds(stats['median_wait_s'])}</dd></div>"
        f"<div><dt>今仔日決定的，UTC（今日審閱數，UTC）</dt><dd>{stats['decisions_today']}</dd></div>"
        f"<div><dt>退回率，逐版本（各版本退回率）</dt>"
        f"<dd><ul>{rates or '<li>–</li>'}</ul></dd></div>"
        "</dl>"
    )


def history_html(history: list[dict[str, Any]]) -> str:
    if not history:
        return '<p class="empty">猶無紀錄。（尚無審閱紀錄。）</p>'
    rows = "".join(
        "<tr>"
        f"<td>{escape(h['reviewed_at'] or '')}</td><td>{escape(h['reviewer'] or '')}</td>"
        f"<td>{_decision_label(h)}</td><td>{escape(h['model_version'])}</td>"
        f"<td>{escape(h['question'])}</td><td>{escape(h['review_note'] or '')}</td>"
        "</tr>"
        for h in history
    )
    return (
        '<table class="history"><thead><tr><th>時間（時間）</th><th>醫生（審閱者）</th>'
        "<th>決定（決定）</th><th>版本（版本）</th><th>問題（問題）</th><th>原因（備註）</th>"
        f"</tr></thead><tbody>{rows}</tbody></table>"
    )


def _decision_label(item: dict[str, Any]) -> str:
    if item["status"] == "rejected":
        return "毋准（退回）"
    return "改了才准（編輯後核准）" if item.get("edited") else "准（核准）"


def review_page(
    template: str,
    *,
    login_error: bool = False,
    queue: list[dict[str, Any]] | None = None,
    history: list[dict[str, Any]] | None = None,
    stats: dict[str, Any] | None = None,
) -> str:
    """The desk page; with ``queue`` given, the read-only desk for a browser without JS."""
    html = template.replace(LOGIN_ERROR_SLOT, escape(WRONG_TOKEN) if login_error else "")
    if queue is None:
        return html.replace(NOJS_SLOT, "")
    desk = (
        '<section id="nojs-desk" class="nojs-desk">'
        '<p class="note">這是無 JavaScript 的讀取畫面；欲核准抑是退回，請開 JavaScript。'
        "（此為無 JavaScript 的唯讀畫面；核准或退回請啟用 JavaScript。）</p>"
        f"<h2>數字（統計）</h2>{stats_html(stats or EMPTY_STATS)}"
        f"<h2>等咧看的（待審清單）</h2>{queue_html(queue)}"
        f"<h2>紀錄（審閱紀錄）</h2>{history_html(history or [])}"
        "</section>"
    )
    return html.replace(NOJS_SLOT, desk)
