"""Under load, streamed deltas still add up to exactly the non-streamed text, and responses carry
every token produced since the previous one (fewer responses than tokens)."""

from __future__ import annotations

from .clients import GrpcSession, request_inputs
from .conftest import Server

STREAMS = 64
MAX_TOKENS = 48
STARTS = ["The", "Once", "A", "My", "Every", "Some", "Our", "This"]
ANIMALS = [
    "red fox",
    "lazy dog",
    "white cat",
    "green tree",
    "big river",
    "small house",
    "old car",
    "blue sea",
]


def test_64_concurrent_greedy_streams_match_their_non_streamed_text(server: Server) -> None:
    prompts = [f"{start} {animal}" for start in STARTS for animal in ANIMALS][:STREAMS]
    sampling = {"temperature": 0, "max_tokens": MAX_TOKENS}
    session = GrpcSession(server.grpc)
    try:
        whole_ids = [
            session.send(request_inputs(p, sampling, exclude_input_in_output=True)) for p in prompts
        ]
        whole = session.collect(whole_ids)
        stream_ids = [session.send(request_inputs(p, sampling, stream=True)) for p in prompts]
        streamed = session.collect(stream_ids)
    finally:
        session.close()
    for whole_id, stream_id in zip(whole_ids, stream_ids, strict=True):
        assert streamed[stream_id].error is None and whole[whole_id].error is None
        assert streamed[stream_id].text == whole[whole_id].text
        assert len(whole[whole_id].text.split()) == MAX_TOKENS
        assert 1 <= len(streamed[stream_id].responses) <= MAX_TOKENS
    responses = sum(len(streamed[i].responses) for i in stream_ids)
    print(f"{responses} responses for {STREAMS * MAX_TOKENS} tokens")
    # Paced under load: many responses carry several tokens.
    assert responses < 0.8 * STREAMS * MAX_TOKENS
