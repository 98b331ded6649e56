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


# --- issue #15: strict fields, unencodable text, depth, blank content -----------------------
USER = [{"role": "user", "content": "頭殼痛欲按怎？"}]


@pytest.mark.parametrize(
    ("model", "obj", "field"),
    [
        (oa.ChatCompletionRequest, {"messages": USER, "stream": 0}, "stream"),
        (oa.ChatCompletionRequest, {"messages": USER, "seed": False}, "seed"),
        (oa.ChatCompletionRequest, {"messages": USER, "temperature": False}, "temperature"),
        (oa.ChatCompletionRequest, {"messages": USER, "max_tokens": "16"}, "max_tokens"),
        (oa.ChatCompletionRequest, {"messages": USER, "logprobs": 1}, "logprobs"),
        (oa.CompletionRequest, {"prompt": "a", "stream": 0}, "stream"),
        (oa.CompletionRequest, {"prompt": "a", "max_tokens": 1.0}, "max_tokens"),
        (oa.CompletionRequest, {"prompt": "a", "logprobs": True}, "logprobs"),
    ],
)
def test_no_coercion_of_zero_false_or_strings(model, obj, field):
    with pytest.raises(oa.APIError) as err:
        parse(model, obj)
    assert err.value.status == 400 and field in err.value.message


def test_integers_still_pass_as_floats():
    req = parse(oa.ChatCompletionRequest, {"messages": USER, "temperature": 1, "top_p": 1})
    assert req.temperature == 1.0 and req.top_p == 1.0


@pytest.mark.parametrize(
    "raw",
    [
        # the request: a lone surrogate escaped in the JSON text
        b'{"messages": [{"role": "user", "content": "\\ud800"}]}',
        b'{"messages": [{"role": "user", "content": "ok \\udfff end"}]}',
        # non-characters: U+FFFE, U+FDD0 and U+10FFFF
        '{"messages": [{"role": "user", "content": "a\ufffe"}]}'.encode(),
        b'{"messages": [{"role": "user", "content": "\\ufdd0"}]}',
        '{"messages": [{"role": "user", "content": "x\U0010ffff"}]}'.encode(),
        b'{"messages": [{"role": "user", "content": "ok", "\\ud800": 1}]}',
    ],
)
def test_lone_surrogates_and_noncharacters_are_400_with_a_reason(raw):
    with pytest.raises(oa.APIError) as err:
        oa.parse_request(oa.ChatCompletionRequest, raw)
    assert err.value.status == 400
    assert "surrogate or Unicode non-character" in err.value.message
    assert err.value.message.startswith("body.messages.0")


def test_completion_prompt_surrogate_is_400():
    with pytest.raises(oa.APIError) as err:
        oa.parse_request(oa.CompletionRequest, b'{"prompt": "\\ud800"}')
    assert err.value.status == 400 and "body.prompt" in err.value.message


def test_valid_astral_characters_pass():
    # a correctly escaped surrogate *pair* is one real character (U+20000, a Han-ji)
    req = oa.parse_request(
        oa.ChatCompletionRequest, b'{"messages": [{"role": "user", "content": "\\ud840\\udc00"}]}'
    )
    assert req.messages[0].text() == "\U00020000"


def test_json_nested_10000_deep_is_400_not_a_crash():
    raw = b'{"messages": ' + b"[" * 10000 + b"]" * 10000 + b"}"
    with pytest.raises(oa.APIError) as err:
        oa.parse_request(oa.ChatCompletionRequest, raw)
    assert err.value.status == 400 and "10001 levels deep" in err.value.message
    # brackets inside strings do not count
    ok = json.dumps({"messages": [{"role": "user", "content": "[" * 5000}]}).encode()
    assert oa.parse_request(oa.ChatCompletionRequest, ok).messages[0].text() == "[" * 5000
    assert oa.json_depth('{"a": [[1]], "b": "]]]]"}') == 3


@pytest.mark.parametrize(
    ("model", "obj"),
    [
        (oa.ChatCompletionRequest, {"messages": [{"role": "user", "content": ""}]}),
        (oa.ChatCompletionRequest, {"messages": [{"role": "user", "content": " \n\t　"}]}),
        (oa.ChatCompletionRequest, {"messages": [{"role": "user", "content": None}]}),
        (oa.ChatCompletionRequest, {"messages": [{"role": "user", "content": []}]}),
        (oa.ChatCompletionRequest, {"messages": [{"role": "system", "content": "only a system"}]}),
        (oa.CompletionRequest, {"prompt": ""}),
        (oa.CompletionRequest, {"prompt": ["   "]}),
    ],
)
def test_blank_user_content_and_empty_prompt_are_400(model, obj):
    with pytest.raises(oa.APIError) as err:
        parse(model, obj)
    assert err.value.status == 400
    assert "empty" in err.value.message or "role 'user'" in err.value.message
