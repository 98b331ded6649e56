"""OpenAI shapes: bad requests are a 400 that names the field; streamed chunks match OpenAI."""

from __future__ import annotations

import json

import pytest

from taigimed.serve import openai_schema as oa


def parse(model, obj) -> object:
    return oa.parse_request(model, json.dumps(obj).encode())


def test_chat_request_accepts_vllm_extensions_and_content_parts():
    req = parse(
        oa.ChatCompletionRequest,
        {
            "model": "taigimed",
            "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}],
            "stop": "\n",
            "ignore_eos": True,
            "repetition_penalty": 1.1,  # unknown extension: accepted, ignored
        },
    )
    assert req.messages[0].text() == "hi" and req.stop == ["\n"] and req.ignore_eos


@pytest.mark.parametrize(
    ("model", "obj", "field"),
    [
        (oa.ChatCompletionRequest, {"messages": []}, "messages"),
        (oa.ChatCompletionRequest, {"messages": [{"role": "user", "content": "x"}], "n": 2}, "n"),
        (oa.ChatCompletionRequest, {"messages": [{"role": "u", "content": "x"}]}, "role"),
        (
            oa.ChatCompletionRequest,
            {"messages": [{"role": "user", "content": "x"}], "temperature": 3},
            "temperature",
        ),
        (oa.CompletionRequest, {"prompt": ["a", "b"]}, "prompt"),
        (oa.CompletionRequest, {"prompt": "a", "max_tokens": 0}, "max_tokens"),
        (oa.CompletionRequest, {"prompt": "a", "stop": ["a", "b", "c", "d", "e"]}, "stop"),
    ],
)
def test_bad_fields_are_400_naming_the_field(model, obj, field):
    with pytest.raises(oa.APIError) as err:
        parse(model, obj)
    assert err.value.status == 400 and field in err.value.message


def test_malformed_json_and_non_object_bodies():
    for raw in (b"{", b"[1, 2]", b"\xff"):
        with pytest.raises(oa.APIError) as err:
            oa.parse_request(oa.CompletionRequest, raw)
        assert err.value.status == 400
    body = oa.APIError(404, "nope", param="model").body()
    assert body == {
        "error": {"message": "nope", "type": "invalid_request_error", "param": "model", "code": 404}
    }


def test_sse_framing():
    assert oa.sse({"a": "台"}) == 'data: {"a": "台"}\n\n'.encode()
    assert oa.SSE_DONE == b"data: [DONE]\n\n"


def test_chunk_stream_shapes_chat_and_completion_streams_as_openai_does():
    chat = oa.ChunkStream(True, "chatcmpl-1", "taigimed", 1)
    assert chat.opening()["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    tail, last = chat.closing("stop", tail="。")
    assert tail["choices"][0]["delta"] == {"content": "。"}
    assert (
        last["choices"][0]["finish_reason"] == "stop" and last["object"] == "chat.completion.chunk"
    )
    assert len(chat.closing("length")) == 1  # no tail, no empty content chunk

    text = oa.ChunkStream(False, "cmpl-1", "taigimed", 1)
    assert text.opening() is None
    (only,) = text.closing("stop", tail="。")
    assert only["choices"][0] | {"logprobs": None} == {
        "index": 0,
        "text": "。",
        "logprobs": None,
        "finish_reason": "stop",
    }
    usage = text.usage_chunk(3, 5)
    assert usage["choices"] == [] and usage["usage"]["total_tokens"] == 8
