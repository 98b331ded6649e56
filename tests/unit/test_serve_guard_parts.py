"""The guard's parts in one process: the pure decision module, and the OpenAI proxy's one code
path for chat *and* completions (whole, replayed stream, live stream) against a fake predictor.

The HTTP tests (tests/integration/test_serve_http.py) drive chat through real servers; these
pin the completions route and the hooks, which no HTTP test reaches.
"""

from __future__ import annotations

import json

import httpx
import pytest
from fastapi.testclient import TestClient

from taigimed import guardrails
from taigimed.serve import decision
from taigimed.serve.config import ReviewSettings, ServeConfig
from taigimed.serve.decision import Action
from taigimed.serve.guard import build_guard_app
from taigimed.serve.proxy import OpenAIProxy

MODEL = "taigimed"
POLICY = guardrails.GuardPolicy()


# -- decision: pure functions ------------------------------------------------------------------
def test_before_model_maps_every_guardrail_action_to_its_own_action():
    escalated = decision.before_model("阮阿公忽然間喙歪，講話袂輪轉", POLICY)
    assert escalated.action is Action.ESCALATED and "stroke" in escalated.categories
    referred = decision.before_model("感冒藥愛食幾粒？", POLICY)
    assert referred.action is Action.REFERRED and referred.categories == []
    assert decision.before_model("感冒的時陣愛按怎歇睏？", POLICY) is None
    assert not Action.ESCALATED.model_called and Action.NEEDS_REVIEW.model_called


def test_the_policy_hash_changes_with_a_list_the_rules_read(monkeypatch):
    """The hash beside a registered model says which guard the gate held: the drug names and
    the exception table change decisions, so they change the hash."""
    before = decision.policy_record(POLICY)["phrases_sha256"]
    monkeypatch.setattr(guardrails, "DRUG_NAMES", (*guardrails.DRUG_NAMES, "newdrug"))
    with_drug = decision.policy_record(POLICY)["phrases_sha256"]
    assert with_drug != before
    monkeypatch.setattr(guardrails, "RED_FLAG_EXCEPTIONS", {})
    assert decision.policy_record(POLICY)["phrases_sha256"] != with_drug


def test_an_unknown_guardrail_action_is_an_error_not_a_referral(monkeypatch):
    fake = guardrails.GuardDecision("quarantine", "x", guardrails.Triage(True), False)
    monkeypatch.setattr(guardrails, "pre_model_decision", lambda q, p: fake)
    with pytest.raises(ValueError, match="quarantine"):
        decision.before_model("anything", POLICY)


def test_after_model_holds_low_confidence_and_topics_and_finishes_the_rest():
    review = ReviewSettings(confidence_threshold=0.5, topics=["懷孕"])
    sure = decision.after_model("頭殼痛", "歇睏 0912-345-678", [-0.1, -0.1], POLICY, review)
    assert sure.action is Action.ANSWERED and not sure.held
    assert "[PHONE]" in sure.draft and guardrails.has_disclaimer(sure.client_text)
    assert sure.confidence == pytest.approx(0.904837, rel=1e-5)
    unsure = decision.after_model("頭殼痛", "歇睏", [-3.0], POLICY, review)
    assert unsure.held and unsure.review_reasons == ["low_confidence<0.5"]
    assert unsure.client_text.startswith(review.pending_message)
    topic = decision.after_model("懷孕會使運動無？", "會", [], POLICY, review)
    assert topic.held and topic.confidence is None and topic.review_reasons == ["topic:懷孕"]


def test_live_stream_tail_adds_the_disclaimer_and_the_review_note_when_held():
    review = ReviewSettings()
    assert guardrails.has_disclaimer(decision.live_stream_tail("好", False, POLICY, review))
    held = decision.live_stream_tail("好", True, POLICY, review)
    assert held.startswith("\n\n" + review.pending_message) and guardrails.has_disclaimer(held)
    off = guardrails.GuardPolicy(add_disclaimer=False)
    assert decision.live_stream_tail("好", False, off, review) == ""


# -- the proxy against a fake predictor ---------------------------------------------------------
class FakePredictor:
    """Answers the predictor's two OpenAI routes, whole or streamed, and records the bodies."""

    def __init__(self) -> None:
        self.bodies: list[tuple[str, dict]] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        chat = request.url.path.endswith("/chat/completions")
        self.bodies.append(("chat" if chat else "completions", body))
        words = ["多", "啉", "水"]
        if body.get("stream"):
            lines = [self._chunk(chat, w) for w in words]
            lines.append({"choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 3}})
            text = "".join(f"data: {json.dumps(x)}\n\n" for x in lines) + "data: [DONE]\n\n"
            return httpx.Response(200, text=text, headers={"x-taigimed-model-version": "v7"})
        if chat:
            lp = {"content": [{"token": w, "logprob": -0.1} for w in words]}
            choice = {"message": {"content": "".join(words)}, "logprobs": lp}
        else:
            lp = {"tokens": words, "token_logprobs": [-0.1] * 3, "top_logprobs": None}
            choice = {"text": "".join(words), "logprobs": lp}
        usage = {"prompt_tokens": 5, "completion_tokens": 3}
        data = {"model": MODEL, "choices": [{**choice, "finish_reason": "stop"}], "usage": usage}
        return httpx.Response(200, json=data, headers={"x-taigimed-model-version": "v7"})

    @staticmethod
    def _chunk(chat: bool, word: str) -> dict:
        if chat:
            lp = {"content": [{"token": word, "logprob": -0.1}]}
            return {"choices": [{"delta": {"content": word}, "logprobs": lp}]}
        return {"choices": [{"text": word, "logprobs": {"token_logprobs": [-0.1]}}]}


@pytest.fixture
def guard_client(tmp_path, monkeypatch):
    monkeypatch.setenv("TAIGIMED_API_TOKENS", "")
    monkeypatch.setenv("TAIGIMED_REVIEWER_TOKENS", "")

    def make(**review):
        cfg = ServeConfig(model_name=MODEL, model_version="stable")
        cfg.review.store_url = f"sqlite:///{tmp_path / 'review.db'}"
        cfg.review.confidence_threshold = 0.0
        # Proxy mechanics only: the phrase rules decide (the detector has its own tests, and
        # the guard with the whole chain is tested over HTTP in tests/integration).
        cfg.policy.triage.detector = False
        cfg.policy.triage.ngram = False
        for key, value in review.items():
            setattr(cfg.review, key, value)
        app, guard = build_guard_app(cfg, "http://predictor.invalid")
        fake = FakePredictor()
        guard.ctx.client = httpx.AsyncClient(
            transport=httpx.MockTransport(fake), base_url="http://predictor.invalid"
        )
        return TestClient(app), fake

    return make


def sse(resp: httpx.Response) -> list[dict]:
    events = [x[6:] for x in resp.text.split("\n\n") if x.startswith("data: ")]
    assert events[-1] == "[DONE]"
    return [json.loads(x) for x in events[:-1]]


def test_completions_route_is_guarded_like_chat(guard_client):
    client, fake = guard_client()
    with client:
        resp = client.post(
            "/openai/v1/completions", json={"model": MODEL, "prompt": "頭殼痛", "logprobs": 0}
        )
        assert resp.status_code == 200, resp.text
        body = resp.json()
        assert body["object"] == "text_completion"
        assert body["choices"][0]["text"].startswith("多啉水")
        assert guardrails.has_disclaimer(body["choices"][0]["text"])
        assert body["choices"][0]["logprobs"]["token_logprobs"] == [-0.1] * 3
        assert body["taigimed"]["status"] == "answered"
        assert body["taigimed"]["model_version"] == "v7"
        assert resp.headers["x-taigimed-status"] == "answered"
        route, sent = fake.bodies[-1]
        assert route == "completions" and sent["prompt"] == "頭殼痛" and "messages" not in sent

        escalated = client.post("/openai/v1/completions", json={"prompt": "我胸坎痛，喘袂過來"})
        assert escalated.json()["taigimed"]["status"] == "escalated"
        assert len(fake.bodies) == 1  # the model was not called
        sid = escalated.json()["taigimed"]["session_id"]
        assert client.get(f"/v1/sessions/{sid}").json()["status"] == "escalated"


def test_both_routes_replay_a_decided_stream_in_their_own_shape(guard_client):
    client, _ = guard_client()
    with client:
        chat = client.post(
            "/openai/v1/chat/completions",
            json={"messages": [{"role": "user", "content": "頭殼痛"}], "stream": True},
        )
        cmpl = client.post("/openai/v1/completions", json={"prompt": "頭殼痛", "stream": True})
    chat_events, cmpl_events = sse(chat), sse(cmpl)
    assert {e["object"] for e in chat_events} == {"chat.completion.chunk"}
    assert {e["object"] for e in cmpl_events} == {"text_completion"}
    chat_text = "".join(c["delta"].get("content", "") for e in chat_events for c in e["choices"])
    cmpl_text = "".join(c["text"] for e in cmpl_events for c in e["choices"])
    assert chat_text == cmpl_text and guardrails.has_disclaimer(chat_text)
    assert chat_events[-1]["taigimed"]["status"] == cmpl_events[-1]["taigimed"]["status"]


@pytest.mark.parametrize(
    "path,body",
    [
        ("/openai/v1/chat/completions", {"messages": [{"role": "user", "content": "懷孕咧"}]}),
        ("/openai/v1/completions", {"prompt": "懷孕咧"}),
    ],
)
def test_live_stream_passes_tokens_and_ends_with_the_decision(guard_client, path, body):
    client, fake = guard_client(hold_streams=False, topics=["懷孕"])
    with client:
        resp = client.post(path, json={**body, "stream": True})
        events = sse(resp)
        assert fake.bodies[-1][1]["stream"] is True
        last = events[-1]
        assert last["taigimed"]["status"] == "needs_review"
        assert last["taigimed"]["model_version"] == "v7"
        sid = last["taigimed"]["session_id"]
        pending = client.get("/v1/review/pending").json()["data"]
        assert [p["session_id"] for p in pending] == [sid]
        assert pending[0]["draft_answer"] == "多啉水"
    tail = (last["choices"][0].get("delta") or {}).get("content") or last["choices"][0].get("text")
    assert ReviewSettings().pending_message in tail and guardrails.has_disclaimer(tail)


def test_the_per_chunk_hook_sees_every_live_piece(guard_client, monkeypatch):
    client, _ = guard_client(hold_streams=False)
    monkeypatch.setattr(OpenAIProxy, "on_chunk", lambda self, ex, piece: piece.replace("啉", "飲"))
    with client:
        resp = client.post("/openai/v1/completions", json={"prompt": "頭殼痛", "stream": True})
    events = sse(resp)
    text = "".join(c["text"] for e in events for c in e["choices"])
    assert text.startswith("多飲水")


SERVED_PROMPT = "你是台語醫療衛教助理。用台語漢字簡單回答，毋通做診斷，嚴重的症狀愛叫人去看醫生。"


def test_a_parroted_or_looping_answer_is_low_confidence_and_held_however_sure_the_model_is():
    """The demo model's real failure: its system prompt back, at mean log-prob -0.1 (0.90)."""
    review = ReviewSettings(confidence_threshold=0.35, topics=[])
    question = "我這兩工咧咳嗽，喉嚨嘛小可仔痛，愛按怎照顧家己？"
    parrot = "我是台語醫療衛教助理，用台語漢字簡單回答，毋通做診斷，嚴重的症狀愛叫人去看醫生。"
    sure = [-0.1] * 30
    got = decision.after_model(question, parrot, sure, POLICY, review, SERVED_PROMPT)
    assert got.held and got.confidence < 0.35
    assert "degenerate:echo" in got.review_reasons
    loop = decision.after_model(question, "你是台語醫療衛教助理！" * 5, sure, POLICY, review)
    assert loop.held and "degenerate:repetition" in loop.review_reasons
    real = "咳嗽、喉嚨痛會使加啉溫水、加歇睏，用溫鹽水漱喙。若是發燒無退，愛去看醫生。"
    fine = decision.after_model(question, real, [-0.6] * 30, POLICY, review, SERVED_PROMPT)
    assert not fine.held and fine.confidence > got.confidence


def test_an_answer_cut_at_max_tokens_ends_at_the_last_whole_character():
    review = ReviewSettings(confidence_threshold=0.0, topics=[])
    cut = decision.after_model("頭殼痛", "加歇睏\ufffd", [-0.1], POLICY, review, "", "length")
    assert "\ufffd" not in cut.client_text and cut.draft == "加歇睏"
    assert not cut.review_reasons
