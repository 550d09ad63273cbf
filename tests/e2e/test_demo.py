"""`make demo` end to end: cluster, chart, operator, model Ready, a real generate request and a
chat completion from the same engine."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from tests.kube import ClusterHandle

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.cluster, pytest.mark.serving]


def test_demo_serves_a_generate_request_from_the_operators_config(cluster: ClusterHandle) -> None:
    result = subprocess.run(
        [str(ROOT / "hack" / "demo.sh")],
        cwd=ROOT,
        env={**os.environ, "DEMO_HTTP_PORT": "18100"},
        capture_output=True,
        text=True,
        timeout=1200,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    assert "TritonVLLMModel demo/tiny-llama is Ready: tensorParallelSize=1" in output
    reply = re.search(r'"The capital of France is" ->(.*)', output)
    assert reply, output[-2000:]
    # Twelve greedy tokens of the word-level tokenizer: twelve words.
    assert len(reply.group(1).split()) == 12
    # The same engine answered a chat completion on its OpenAI port, max_tokens 12.
    chat = re.search(r"\n    -> (.+) \| (\d+) tokens", output)
    assert chat, output[-2000:]
    assert chat.group(1).strip() and chat.group(2) == "12"
    assert "/v1/chat/completions" in output
