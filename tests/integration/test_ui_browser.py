"""The patient chat and the review desk in a real browser (Playwright driving Debian's Chromium)
against a real predictor (tiny random Llama) and guard on 127.0.0.1.

The tiny model's answers are gibberish with near-zero confidence, so the guard runs with
``confidence_threshold=0`` (model answers are "answered") and holds questions on the 懷孕 topic
for review, as in test_serve_http. Reviewer tokens are on; the chat needs none.

Screenshots go to the test's tmp folder; with ``TAIGIMED_UI_SCREENSHOTS=1`` (``make
ui-screenshots``) they are also written to docs/img/ for the README.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import httpx
import pytest

from taigimed.guardrails import DISCLAIMER
from taigimed.serve.ui.render import WRONG_TOKEN
from taigimed.utils import REPO_ROOT
from tests.integration.test_serve_http import MODEL, VERSION, start_guard, start_predictor

pytestmark = pytest.mark.slow

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
REVIEWER_TOKEN = "desk-token-for-tests"
PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1100, "height": 900}
HELD_QUESTION = (
    "我懷孕三個月，會使去公園行路運動無？"  # held on the topic; names no medicine (a referral)
)
CONFLICT = "另外一位醫生已經先決定矣"
WAIT_MS = 90_000  # generous: the shared 2-core machine is often loaded many times over


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright")
    if not CHROMIUM.is_file():
        pytest.skip(f"{CHROMIUM} is absent: apt-get install chromium fonts-wqy-microhei")
    with sync_api.sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def predictor(tiny_model_dir, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ui-predictor")
    overrides = ("predictor.max_batch_size=4", "predictor.default_max_tokens=24")
    server = start_predictor(tiny_model_dir, tmp, *overrides)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def guard(predictor, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ui-guard")
    server = start_guard(
        predictor,
        tmp,
        "review.confidence_threshold=0.0",
        "review.topics=[懷孕]",
        "ui.poll_seconds=0.5",
        # the pages, not triage, are under test: the phrase rules decide (the learned detector
        # has its own tests and escalates some short routine messages, see docs/evaluation.md)
        "policy.triage.detector=false",
        "policy.triage.ngram=false",
        env={"TAIGIMED_REVIEWER_TOKENS": REVIEWER_TOKEN},
    )
    yield server
    server.stop()


@pytest.fixture
def shots(tmp_path):
    """save(page, name): a screenshot in tmp (and in docs/img/ when asked for)."""
    publish = os.environ.get("TAIGIMED_UI_SCREENSHOTS") == "1"

    def save(page, name: str, full_page: bool = False) -> Path:
        path = tmp_path / f"{name}.png"
        page.screenshot(path=str(path), full_page=full_page)
        assert 10_000 < path.stat().st_size < 1_000_000, path.stat().st_size
        if publish:
            shutil.copyfile(path, REPO_ROOT / "docs" / "img" / f"{name}.png")
        return path

    return save


def new_context(browser, **options):
    context = browser.new_context(locale="zh-TW", **options)
    context.set_default_timeout(WAIT_MS)
    context.set_default_navigation_timeout(WAIT_MS)
    return context


def open_chat(browser, guard):
    context = new_context(browser, viewport=PHONE)
    page = context.new_page()
    page.goto(f"{guard.url}/ui/")
    page.wait_for_selector("body[data-ready='1']")
    return context, page


def ask(page, question: str, status: str):
    page.fill("#question", question)
    page.press("#question", "Enter")
    card = page.locator(f".answer[data-status='{status}']").last
    card.wait_for(timeout=WAIT_MS)
    if status != "needs_review":
        # The status arrives with the stream's first chunk and the text after it; the feedback
        # row is drawn once the stream has ended, so wait for it before reading the text (on a
        # loaded machine the check once ran between the two and read an empty text).
        card.locator(".feedback").wait_for(timeout=WAIT_MS)
    return card


def open_desk(browser, guard, name: str, token: str = REVIEWER_TOKEN):
    context = new_context(browser, viewport=DESKTOP)
    page = context.new_page()
    page.goto(f"{guard.url}/ui/review")
    page.wait_for_selector("body[data-ready='1']")
    page.fill("#reviewer", name)
    page.fill("#token", token)
    page.click("#login-form button[type=submit]")
    return context, page


def held_session(guard) -> str:
    body = {"model": MODEL, "messages": [{"role": "user", "content": HELD_QUESTION}]}
    resp = httpx.post(f"{guard.url}/openai/v1/chat/completions", json=body, timeout=180)
    assert resp.json()["taigimed"]["status"] == "needs_review"
    return resp.json()["taigimed"]["session_id"]


def wait_for_feedback(page, sid: str, count: int) -> None:
    """Until the guard has stored ``count`` pieces of feedback for ``sid`` (asked by the page)."""
    check = f"fetch('/v1/sessions/{sid}').then(r => r.json()).then(s => s.feedback.length)"
    page.wait_for_function(f"async () => (await {check}) >= {count}", timeout=WAIT_MS)


def session(guard, sid: str) -> dict:
    return httpx.get(f"{guard.url}/v1/sessions/{sid}", timeout=10).json()


def test_routine_question_is_answered_with_the_disclaimer(browser, guard):
    context, page = open_chat(browser, guard)
    card = ask(page, "我這兩工咧咳嗽，愛按怎照顧家己？", "answered")
    assert card.locator(".disclaimer").inner_text() == DISCLAIMER
    assert card.locator(".disclaimer").is_visible()
    sid = card.get_attribute("data-session")
    assert session(guard, sid)["status"] == "answered"
    # The page showed the stored answer (without the disclaimer, which has its own box).
    stored = session(guard, sid)["answer"].replace(DISCLAIMER, "").strip()
    assert card.locator(".text").inner_text().strip() == stored
    context.close()


def test_emergency_shows_the_119_banner_which_stays_after_a_reload(browser, guard, shots):
    context, page = open_chat(browser, guard)
    assert page.locator("#emergency").is_hidden()
    card = ask(page, "阮阿母胸坎足痛，喘袂過來", "escalated")
    banner = page.locator("#emergency")
    assert banner.is_visible()
    assert banner.locator("a[href='tel:119']").is_visible()
    assert banner.locator("a[href='tel:1925']").is_visible()
    assert "119" in card.locator(".text").inner_text()
    shots(page, "ui-chat-emergency")
    page.reload()
    page.wait_for_selector("body[data-ready='1']")
    assert page.locator("#emergency").is_visible()
    assert page.locator(".answer[data-status='escalated']").count() == 1
    context.close()


def test_held_answer_approved_on_the_desk_appears_on_the_patient_page(browser, guard, shots):
    patient_ctx, patient = open_chat(browser, guard)
    ask(patient, "我這兩工咧咳嗽，愛按怎照顧家己？", "answered")
    card = ask(patient, HELD_QUESTION, "needs_review")
    assert card.locator("button.check-again").is_visible()
    sid = card.get_attribute("data-session")
    patient.evaluate("window.__sameDocument = true")

    desk_ctx, desk = open_desk(browser, guard, "dr-lin")
    item = desk.locator(f".card[data-session='{sid}']")
    item.wait_for(timeout=WAIT_MS)
    assert HELD_QUESTION in item.locator(".question").inner_text()
    assert item.locator(".reasons").inner_text() == "topic:懷孕"
    assert item.locator(".version").inner_text() == VERSION
    assert desk.evaluate("sessionStorage.getItem('taigimed.reviewerToken')") == REVIEWER_TOKEN
    shots(desk, "ui-review", full_page=True)
    # Keyboard: select the card, e = edit, type, Ctrl+Enter = approve the edited answer.
    item.click(position={"x": 5, "y": 5})
    desk.keyboard.press("e")
    edited = "懷孕的時，感冒藥仔愛先問婦產科醫生抑是藥師。"
    item.locator("textarea.draft").fill(edited)
    desk.keyboard.press("Control+Enter")
    desk.locator(f".card[data-session='{sid}'] .outcome").wait_for(timeout=WAIT_MS)
    assert "已編輯並核准" in item.locator(".outcome").inner_text()
    row = desk.locator(f"#history tr[data-session='{sid}']")
    row.wait_for(timeout=WAIT_MS)
    assert "dr-lin" in row.inner_text() and VERSION in row.inner_text()

    approved = patient.locator(f".answer[data-session='{sid}'][data-status='approved']")
    approved.wait_for(timeout=WAIT_MS)
    assert edited in approved.locator(".text").inner_text()
    assert approved.locator(".disclaimer").is_visible()
    assert patient.evaluate("window.__sameDocument") is True  # no reload happened
    shots(patient, "ui-chat")
    stats = httpx.get(
        f"{guard.url}/v1/review/stats",
        headers={"Authorization": f"Bearer {REVIEWER_TOKEN}"},
        timeout=10,
    ).json()
    assert stats["decisions_today"] >= 1 and VERSION in stats["by_version"]
    desk_ctx.close()
    patient_ctx.close()


def test_feedback_and_a_problem_report_are_stored_with_the_session(browser, guard):
    context, page = open_chat(browser, guard)
    card = ask(page, "血壓懸愛注意啥物？", "answered")
    sid = card.get_attribute("data-session")
    card.locator("button.thumb-up").click()
    page.locator(f".answer[data-session='{sid}'] .thanks").wait_for()
    card = page.locator(f".answer[data-session='{sid}']")
    card.locator(".score span.n", has_text="4").click()
    wait_for_feedback(page, sid, 2)
    card = page.locator(f".answer[data-session='{sid}']")
    card.locator(".report summary").click()
    card.locator("select[name=category]").select_option("not_taigi")
    card.locator("textarea[name=comment]").fill("伊用華語回答，我 0912-345-678")
    card.locator(".report-form button[type=submit]").click()
    wait_for_feedback(page, sid, 3)
    feedback = session(guard, sid)["feedback"]
    assert [(f["rating"], f["score"], f["category"]) for f in feedback] == [
        ("up", None, None),
        (None, 4, None),
        (None, None, "not_taigi"),
    ]
    assert feedback[2]["comment"] == "伊用華語回答，我 [PHONE]"  # scrubbed before it was stored
    context.close()


def test_desk_refuses_a_wrong_token_and_reads_without_javascript(browser, guard):
    sid = held_session(guard)
    context, page = open_desk(browser, guard, "dr-lin", token="not-the-token")
    # Wait through the locator, not a bare-expression predicate: Playwright evals a bare
    # expression inside the page, which the desk's Content-Security-Policy rightly refuses.
    page.locator("#login-error").filter(has_text=WRONG_TOKEN).wait_for(timeout=WAIT_MS)
    assert page.locator("#login-error").inner_text() == WRONG_TOKEN
    assert page.locator("#desk").is_hidden()
    assert page.evaluate("() => sessionStorage.getItem('taigimed.reviewerToken')") is None
    context.close()

    # Without JavaScript the login form posts; the answer is the queue as plain HTML.
    plain = new_context(browser, viewport=DESKTOP, java_script_enabled=False)
    page = plain.new_page()
    page.goto(f"{guard.url}/ui/review")
    page.fill("#reviewer", "dr-lin")
    page.fill("#token", "not-the-token")
    with page.expect_navigation() as nav:
        page.click("#login-form button[type=submit]")
    assert nav.value.status == 401
    assert WRONG_TOKEN in page.locator("#login-error").inner_text()
    page.fill("#reviewer", "dr-lin")
    page.fill("#token", REVIEWER_TOKEN)
    with page.expect_navigation() as nav:
        page.click("#login-form button[type=submit]")
    assert nav.value.status == 200
    card = page.locator(f"#nojs-desk .card[data-session='{sid}']")
    assert HELD_QUESTION in card.locator(".question").inner_text()
    assert "Content-Security-Policy" in {k.title(): v for k, v in nav.value.headers.items()}
    plain.close()


def test_two_reviewers_deciding_one_item_the_second_sees_the_conflict(browser, guard):
    sid = held_session(guard)
    first_ctx, first = open_desk(browser, guard, "dr-lin")
    second_ctx, second = open_desk(browser, guard, "dr-tan")
    for page in (first, second):
        page.locator(f".card[data-session='{sid}']").wait_for(timeout=WAIT_MS)
    first.locator(f".card[data-session='{sid}'] button.approve").click()
    first.locator(f".card[data-session='{sid}'] .outcome").wait_for(timeout=WAIT_MS)
    item = second.locator(f".card[data-session='{sid}']")
    item.locator("input.reason").fill("草稿毋著")
    item.locator("button.reject").click()
    outcome = second.locator(f".card[data-session='{sid}'] .outcome.conflict")
    outcome.wait_for(timeout=WAIT_MS)
    assert CONFLICT in outcome.inner_text()
    decided = session(guard, sid)
    assert decided["status"] == "approved"
    first_ctx.close()
    second_ctx.close()
