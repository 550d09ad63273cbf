"""Greedy completions from the raw vLLM engine (AsyncLLM), printed as one JSON line.

Run by the serving tests with the serving environment's python:
    raw_engine.py MODEL_DIR ENGINE_ARGS_JSON
"""

from __future__ import annotations

import asyncio
import json
import locale
import sys

locale.setlocale(locale.LC_CTYPE, "C.UTF-8")

PROMPTS = [
    "The capital of France is",
    "The quick brown fox",
    "Once upon a time there was a",
]
MAX_TOKENS = 24


async def complete(model_dir: str, engine_args: dict[str, object]) -> dict[str, str]:
    from vllm import SamplingParams
    from vllm.engine.arg_utils import AsyncEngineArgs
    from vllm.sampling_params import RequestOutputKind
    from vllm.usage.usage_lib import UsageContext
    from vllm.v1.engine.async_llm import AsyncLLM

    # the context the backend builds its engine with, so both are the same engine
    engine = AsyncLLM.from_engine_args(
        AsyncEngineArgs(model=model_dir, **engine_args),
        usage_context=UsageContext.OPENAI_API_SERVER,
    )
    params = SamplingParams(
        temperature=0, max_tokens=MAX_TOKENS, output_kind=RequestOutputKind.FINAL_ONLY
    )

    async def one(index: int, prompt: str) -> str:
        text = ""
        async for output in engine.generate(prompt, params, request_id=f"raw-{index}"):
            text = output.outputs[0].text
        return text

    try:
        texts = await asyncio.gather(*(one(i, p) for i, p in enumerate(PROMPTS)))
    finally:
        engine.shutdown()
    return dict(zip(PROMPTS, texts, strict=True))


def main() -> None:
    model_dir, engine_args = sys.argv[1], json.loads(sys.argv[2])
    print(json.dumps(asyncio.run(complete(model_dir, engine_args))))


if __name__ == "__main__":
    main()
