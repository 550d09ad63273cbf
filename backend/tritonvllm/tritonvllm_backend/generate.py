"""Serve requests on the engine loop: generate, shape, send; streamed or not; cancellable.

Each request is one task on the engine's event loop. Responses are sent from one sender thread,
and a task awaits its previous send before taking the next engine output, so while a send is in
flight vLLM merges the newly produced tokens into that request's next output (its DELTA outputs
aggregate). Under load streams are also paced (pacing.py, ``stream_pause``): each streamed response
then carries every token produced since the previous one, and the per-response cost of the
python backend (Python, a shared-memory message, Triton's response path) is paid once per send,
not once per token.
"""

from __future__ import annotations

import asyncio
import base64
import io
import threading
import traceback
import uuid
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils
from vllm import SamplingParams

try:
    from vllm.exceptions import VLLMClientError
except ImportError:  # older vLLM (0.24) raises ValueError subclasses for a request's own faults
    VLLMClientError = ValueError  # type: ignore[assignment,misc]
from vllm.outputs import RequestOutput
from vllm.sampling_params import RequestOutputKind

from .outputs import SequenceDelta, shape_response
from .pacing import STREAM_RESPONSES_PER_SECOND, stream_pause
from .requests import ParsedRequest, parse_request
from .sampling import RequestError
from .typekinds import Kind

FINAL = pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL
CANCEL_POLL_SECONDS = 0.2
# One sender thread: more do not raise throughput and coalesce less (measured).
SENDER_THREADS = 1
_DTYPES = {"object": np.object_, "float32": np.float32, "uint32": np.uint32}


class _Exchange:
    """One request's response sender and task, and whether its final response went out.

    Triton frees a response factory once its final response is sent, so neither ``send`` nor
    ``is_cancelled`` may touch the sender after that: both hold ``lock`` and check ``closed``.
    """

    __slots__ = ("closed", "lock", "sender", "task")

    def __init__(self, sender: Any, task: asyncio.Task[None] | None) -> None:
        self.sender = sender
        self.task = task
        self.closed = False
        self.lock = threading.Lock()

    def send(self, response: Any, flags: int) -> None:
        with self.lock:
            if self.closed:
                return
            self.closed = bool(flags & FINAL)
            self.sender.send(response, flags)

    def cancelled(self) -> bool:
        with self.lock:
            return not self.closed and bool(self.sender.is_cancelled())


class RequestRunner:
    """Run requests against one engine and send their responses."""

    def __init__(
        self,
        engine: Any,
        sampling_kinds: Mapping[str, Kind],
        logger: Any,
        responses_per_second: float = STREAM_RESPONSES_PER_SECOND,
    ) -> None:
        self._engine = engine
        self._responses_per_second = responses_per_second
        self._kinds = sampling_kinds
        self._log = logger
        self._send_pool = ThreadPoolExecutor(SENDER_THREADS, thread_name_prefix="tritonvllm-send")
        self._inflight: dict[str, _Exchange] = {}

    @property
    def inflight(self) -> int:
        return len(self._inflight)

    async def serve(self, request: Any) -> None:
        """Answer one request: an error response, or the generated text (streamed or not)."""
        exchange = _Exchange(request.get_response_sender(), asyncio.current_task())
        try:
            parsed = parse_request(request, self._kinds)
            params = self._sampling_params(parsed)
            prompt = self._prompt(parsed)
        except RequestError as err:
            await self._send(exchange, _error(str(err), pb_utils.TritonError.INVALID_ARG), FINAL)
            return
        request_id = f"{request.request_id() or 'req'}-{uuid.uuid4().hex}"
        self._inflight[request_id] = exchange
        try:
            await self._generate(exchange, parsed, prompt, params, request_id)
        except asyncio.CancelledError:
            self._log.log_info(f"[tritonvllm] request {request_id} cancelled; engine aborted it")
            await self._send_quietly(
                exchange, _error("request was cancelled", pb_utils.TritonError.CANCELLED)
            )
        except Exception as err:
            invalid = _client_error(err)
            if invalid is not None:
                response = _error(str(invalid), pb_utils.TritonError.INVALID_ARG)
            else:
                self._log.log_error(
                    f"[tritonvllm] request {request_id} failed: {traceback.format_exc()}"
                )
                response = _error(f"generation failed: {err!r}", pb_utils.TritonError.INTERNAL)
            await self._send_quietly(exchange, response)
        finally:
            self._inflight.pop(request_id, None)

    async def watch_cancellations(self) -> None:
        """Abort the engine requests whose clients went away (runs for the loop's lifetime)."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(CANCEL_POLL_SECONDS)
            if not self._inflight:
                continue
            watched = list(self._inflight.items())
            cancelled = await loop.run_in_executor(self._send_pool, _cancelled, watched)
            for request_id in cancelled:
                exchange = self._inflight.get(request_id)
                if exchange is not None and exchange.task is not None:
                    exchange.task.cancel()  # generate() aborts the engine request when cancelled

    async def drain(self, timeout: float) -> None:
        """Let in-flight requests finish for up to ``timeout`` seconds, then cancel the rest."""
        deadline = asyncio.get_running_loop().time() + timeout
        while self._inflight and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.1)
        tasks = [ex.task for ex in self._inflight.values() if ex.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def close(self) -> None:
        self._send_pool.shutdown(wait=True)

    async def _generate(
        self,
        exchange: _Exchange,
        parsed: ParsedRequest,
        prompt: Any,
        params: SamplingParams,
        request_id: str,
    ) -> None:
        stream = parsed.wanted.stream
        loop = asyncio.get_running_loop()
        last: RequestOutput | None = None
        produced = 0
        async for output in self._engine.generate(prompt, params, request_id):
            if stream:
                taken = loop.time()
                response = self._response(parsed, output, final=output.finished)
                await self._send(exchange, response, FINAL if output.finished else 0)
                delta = len(output.outputs[0].token_ids) if output.outputs else 0
                produced += delta
                pause = stream_pause(
                    len(self._inflight), params.max_tokens, produced, delta,
                    self._responses_per_second,
                )  # fmt: skip
                if pause and not output.finished:
                    await asyncio.sleep(max(0.0, taken + pause - loop.time()))
            last = output
        if last is None or not last.finished:
            raise RuntimeError("the engine ended the request without a final output")
        if not stream:
            await self._send(exchange, self._response(parsed, last, final=True), FINAL)

    def _sampling_params(self, parsed: ParsedRequest) -> SamplingParams:
        kind = RequestOutputKind.DELTA if parsed.wanted.stream else RequestOutputKind.FINAL_ONLY
        if parsed.wanted.stream and int(parsed.sampling.get("n") or 1) > 1:
            raise RequestError("sampling parameter 'n' > 1 is not supported with stream")
        try:
            return SamplingParams(**parsed.sampling, output_kind=kind)
        except (ValueError, TypeError, VLLMClientError) as err:
            raise RequestError(f"invalid sampling_parameters: {err}") from None

    def _prompt(self, parsed: ParsedRequest) -> Any:
        if not parsed.images:
            return parsed.prompt
        from PIL import Image

        try:
            images = [Image.open(io.BytesIO(base64.b64decode(data))) for data in parsed.images]
        except Exception as err:
            raise RequestError(f"image must be base64-encoded image files: {err}") from None
        return {"prompt": parsed.prompt, "multi_modal_data": {"image": images}}

    def _response(self, parsed: ParsedRequest, output: RequestOutput, final: bool) -> Any:
        sequences = [
            SequenceDelta(
                text=seq.text,
                num_tokens=len(seq.token_ids),
                finish_reason=seq.finish_reason,
                cumulative_logprob=seq.cumulative_logprob,
                logprobs=seq.logprobs,
            )
            for seq in output.outputs
        ]
        num_input = len(output.prompt_token_ids or [])
        tensors = shape_response(parsed.wanted, sequences, parsed.prompt, num_input, final)
        return pb_utils.InferenceResponse(
            output_tensors=[
                pb_utils.Tensor(name, np.asarray(values, dtype=_DTYPES[dtype]))
                for name, values, dtype in tensors
            ]
        )

    async def _send(self, exchange: _Exchange, response: Any, flags: int) -> None:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._send_pool, exchange.send, response, flags)

    async def _send_quietly(self, exchange: _Exchange, response: Any) -> None:
        """Send a final error; the client may be gone already (cancellation), so never raise."""
        try:
            await asyncio.shield(self._send(exchange, response, FINAL))
        except Exception as err:
            self._log.log_verbose(f"[tritonvllm] final response not delivered: {err}")


def _client_error(err: BaseException) -> BaseException | None:
    """The request's own fault behind ``err``, if any (vLLM wraps it in EngineGenerateError)."""
    seen: BaseException | None = err
    while seen is not None:
        if isinstance(seen, ValueError | TypeError | VLLMClientError):
            return seen
        seen = seen.__cause__
    return None


def _error(message: str, code: Any) -> Any:
    return pb_utils.InferenceResponse(error=pb_utils.TritonError(message=message, code=code))


def _cancelled(watched: list[tuple[str, _Exchange]]) -> list[str]:
    """The ids of requests whose clients cancelled (runs on the sender thread)."""
    cancelled = []
    for request_id, exchange in watched:
        try:
            if exchange.cancelled():
                cancelled.append(request_id)
        except Exception:
            continue
    return cancelled
