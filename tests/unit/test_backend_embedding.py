"""The official backend's embedding_request input: a string or token ids, optional dimensions;
anything else an INVALID_ARG that says what is wrong."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "backend" / "tritonvllm"))
from tritonvllm_backend.embedding import EmbeddingAsk, parse_embedding_request
from tritonvllm_backend.sampling import RequestError


@pytest.mark.parametrize(
    ("sent", "asked"),
    [
        ('{"input": "hello"}', EmbeddingAsk("hello")),
        ('{"input": [1, 2, 3]}', EmbeddingAsk([1, 2, 3])),
        ('{"input": "hi", "pooling_params": {"dimensions": [8]}}', EmbeddingAsk("hi", 8)),
        ('{"input": "hi", "pooling_params": {"dimensions": 8}}', EmbeddingAsk("hi", 8)),
        ('{"input": "hi", "pooling_params": {}}', EmbeddingAsk("hi")),
    ],
)
def test_embedding_requests_are_read(sent: str, asked: EmbeddingAsk) -> None:
    assert parse_embedding_request(sent) == asked


@pytest.mark.parametrize(
    ("sent", "fragment"),
    [
        ("{oops", "not valid JSON"),
        ("[1]", "must be a JSON object"),
        ('{"input": ""}', "'input' must be"),
        ('{"input": [true]}', "'input' must be"),
        ('{"input": ["a"]}', "'input' must be"),
        ('{"input": "a", "pooling_params": 3}', "'pooling_params' must be an object"),
        ('{"input": "a", "pooling_params": {"dimensions": [0]}}', "dimensions"),
    ],
)
def test_malformed_embedding_requests_say_why(sent: str, fragment: str) -> None:
    with pytest.raises(RequestError, match=fragment):
        parse_embedding_request(sent)
