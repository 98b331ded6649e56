"""A prompt the tokenizer reduces to nothing is a 400, not a ValueError inside generation (found
by the schemathesis contract run: ``{"prompt": "\\u0013"}`` came back 502)."""

import pytest

from taigimed.serve import openai_schema as oa
from taigimed.serve.predictor import TransformersLLM


def test_an_empty_prompt_is_a_400_with_a_reason():
    llm = TransformersLLM.__new__(TransformersLLM)
    llm.max_model_len = 64
    req = oa.parse_request(oa.CompletionRequest, b'{"prompt": "\\u0013"}')
    with pytest.raises(oa.APIError) as err:
        llm.sampling(req, 0, 0)
    assert err.value.status == 400 and "empty" in str(err.value)
