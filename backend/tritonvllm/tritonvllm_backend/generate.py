"""Serve requests on the engine loop: generate, shape, send; streamed or not; cancellable.

Each request is one task on the engine's event loop. Responses are sent from sender threads
(sending.py: a stream's first response and every final one on a lane of their own), and a task
awaits its previous send before taking the next engine output, so while a send is in flight vLLM
merges the newly produced tokens into that request's next output (its DELTA outputs aggregate).
Under load streams are also paced (pacing.py): each streamed response then carries every token
produced since the previous one, and the per-response cost of the python backend (Python, a
shared-memory message, Triton's response path) is paid once per send, not once per token; a
finished output ends the pause, so no final response waits for it.
"""

from __future__ import annotations

import asyncio
import json
import threading
import traceback
import uuid
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils
from vllm import SamplingParams

try:
    from vllm.exceptions import VLLMClientError
except ImportError:  # older vLLM (0.24) raises ValueError subclasses for a request's own faults
    VLLMClientError = ValueError  # type: ignore[assignment,misc]
from vllm.lora.request import LoRARequest
from vllm.outputs import EmbeddingRequestOutput, RequestOutput
from vllm.pooling_params import PoolingParams
from vllm.sampling_params import RequestOutputKind, StructuredOutputsParams
from vllm.v1.engine.exceptions import EngineDeadError

from .cancel_polls import CANCEL_POLL_SECONDS, PollTurns
from .embedding import EmbeddingAsk
from .health import EngineHealth
from .hops import HopLog, RequestHops
from .images import decode_images
from .lora import LoraAdapters
from .outputs import SequenceDelta, shape_response
from .pacing import STREAM_RESPONSES_PER_SECOND, GatheredOutputs, stream_pause
from .requests import ParsedRequest, parse_request
from .sampling import RequestError
from .sending import ResponseLanes
from .typekinds import Kind

FINAL = pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL
# A final response waits at most this long for the metrics push before it (metrics.py).
METRICS_WAIT_SECONDS = 2.0
# The official backend's words, kept so that clients and probes matching on them work.
UNHEALTHY_MESSAGE = "Model is unavailable due to unhealthy vLLM engine"
LORA_DISABLED_MESSAGE = "LoRA feature is not enabled."
_DTYPES = {"object": np.object_, "float32": np.float32, "uint32": np.uint32}


class ResponseNotDelivered(Exception):
    """Triton refused a response: the client is gone (or its request already ended)."""


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
        health: EngineHealth,
        sampling_kinds: Mapping[str, Kind],
        logger: Any,
        responses_per_second: float = STREAM_RESPONSES_PER_SECOND,
        loras: LoraAdapters | None = None,
        when_metrics_pushed: Callable[[Callable[[], None]], None] | None = None,
        hop_log: HopLog | None = None,
        tasks: frozenset[str] = frozenset({"generate"}),
        model_name: str = "",
    ) -> None:
        """``loras``: the adapters of multi_lora.json, None when LoRA is off;
        ``when_metrics_pushed``: calls its argument (on any thread) once the engine's metrics
        recorded so far reached Triton; a final response waits for it; ``hop_log``: where each
        request's hop times go (hops.py), None for nowhere; ``tasks``: what the engine
        supports (``get_supported_tasks``: generate, embed, ...).
        """
        self._engine = engine
        self._health = health
        self._tasks = tasks
        self._model = model_name
        self._responses_per_second = responses_per_second
        self._kinds = sampling_kinds
        self._log = logger
        self._loras = loras
        self._when_metrics_pushed = when_metrics_pushed
        self._hop_log = hop_log
        self._lanes = ResponseLanes()
        # is_cancelled() polls have their own thread, so they never queue ahead of responses.
        self._poll_pool = ThreadPoolExecutor(1, thread_name_prefix="tritonvllm-cancel")
        self._inflight: dict[str, _Exchange] = {}
        self._streaming = 0  # streams that sent their first response and are not finished
        self._poll_turns = PollTurns[tuple[str, _Exchange]]()

    @property
    def engine_dead(self) -> bool:
        """Whether vLLM's engine has died (a flag read, no round trip to the engine)."""
        return self._health.dead

    @property
    def inflight(self) -> int:
        return len(self._inflight)

    async def serve(self, request: Any, received: float | None = None) -> None:
        """Answer one request: an error response, or the generated text (streamed or not).

        Whatever goes wrong on the way, the request gets a final response: INVALID_ARG for the
        request's own faults, UNAVAILABLE when the engine died, INTERNAL otherwise.
        ``received``: when ``execute`` was given it (time.monotonic), for the hop log.
        """
        exchange = _Exchange(request.get_response_sender(), asyncio.current_task())
        hops = RequestHops(self._hop_log, request.request_id(), received)
        hops.mark("started")
        request_id = f"{request.request_id() or 'req'}-{uuid.uuid4().hex}"
        try:
            try:
                parsed = parse_request(request, self._kinds)
                task = "generate" if parsed.embedding is None else "embed"
                if task not in self._tasks:  # the official backend's words
                    raise RequestError(f"Model {self._model} does not support '{task}' request")
                if parsed.embedding is None:
                    params = self._sampling_params(parsed)
                    lora = self._lora(parsed)
                    prompt = await self._prompt(parsed)
            except RequestError as err:
                await self._send_quietly(
                    exchange, _error(str(err), pb_utils.TritonError.INVALID_ARG)
                )
                return
            if self.engine_dead:
                await self._send_quietly(exchange, _unavailable())
                return
            self._inflight[request_id] = exchange
            if parsed.embedding is not None:
                await self._embed(exchange, parsed, parsed.embedding, request_id)
            else:
                await self._generate(exchange, parsed, prompt, params, request_id, lora, hops)
        except asyncio.CancelledError:
            self._log.log_info(f"[vllm] Successfully cancelled the request {request_id}")
            await self._send_quietly(
                exchange, _error("request was cancelled", pb_utils.TritonError.CANCELLED)
            )
        except ResponseNotDelivered as err:
            # The engine request was aborted when generate() was left. A client that went away
            # is routine (verbose); any other refusal is worth a warning, without a traceback.
            loop = asyncio.get_running_loop()
            if await loop.run_in_executor(self._poll_pool, _gone, exchange):
                self._log.log_verbose(f"[tritonvllm] request {request_id}: client gone ({err})")
            else:
                self._log.log_warn(f"[tritonvllm] request {request_id}: response refused: {err}")
            await self._send_quietly(
                exchange, _error(f"response not delivered: {err}", pb_utils.TritonError.INTERNAL)
            )
        except Exception as err:
            await self._send_quietly(exchange, self._failure(request_id, err))
        finally:
            self._inflight.pop(request_id, None)
            hops.end()

    def _failure(self, request_id: str, err: Exception) -> Any:
        """The error response for a request that failed with ``err``."""
        if isinstance(err, EngineDeadError) or self.engine_dead:
            return _unavailable()
        invalid = _client_error(err)
        if invalid is not None:
            return _error(str(invalid) or repr(invalid), pb_utils.TritonError.INVALID_ARG)
        self._log.log_error(f"[tritonvllm] request {request_id} failed: {traceback.format_exc()}")
        return _error(f"generation failed: {err!r}", pb_utils.TritonError.INTERNAL)

    async def watch_cancellations(self) -> None:
        """Abort the engine requests whose clients went away (runs for the loop's lifetime)."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(CANCEL_POLL_SECONDS)
            if not self._inflight:
                continue
            watched = self._poll_turns.next(list(self._inflight.items()))
            cancelled = await loop.run_in_executor(self._poll_pool, _cancelled, watched)
            for request_id in cancelled:
                exchange = self._inflight.get(request_id)
                if exchange is not None and exchange.task is not None:
                    self._log.log_info(f"[vllm] Cancelling the request {request_id}")
                    exchange.task.cancel()  # generate() aborts the engine request when cancelled

    async def drain(self, timeout: float) -> None:
        """Let in-flight requests finish for up to ``timeout`` seconds, then cancel the rest."""
        deadline = asyncio.get_running_loop().time() + timeout
        while self._inflight and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.1)
        tasks = [ex.task for ex in self._inflight.values() if ex.task is not None]
        for request_id in list(self._inflight):
            self._log.log_info(f"[vllm] Cancelling the request {request_id}")
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def close(self) -> None:
        self._poll_pool.shutdown(wait=True)
        self._lanes.close()

    async def _generate(
        self,
        exchange: _Exchange,
        parsed: ParsedRequest,
        prompt: Any,
        params: SamplingParams,
        request_id: str,
        lora: LoRARequest | None,
        hops: RequestHops,
    ) -> None:
        stream = parsed.wanted.stream
        loop = asyncio.get_running_loop()
        last: RequestOutput | None = None
        state = _SequenceState(params.n)
        extra: dict[str, Any] = {}
        if lora is not None:
            extra["lora_request"] = lora
        if parsed.sampling.priority:
            extra["priority"] = parsed.sampling.priority
        prompt = await self._rendered(prompt)
        outputs = GatheredOutputs[RequestOutput](
            self._engine.generate(prompt, params, request_id, **extra)
        )
        streaming = False
        try:
            until: float | None = None
            while (output := await outputs.next(until)) is not None:
                last = output
                if not stream:
                    continue
                if output.finished or not streaming:
                    hops.mark("final_output" if output.finished else "first_output")
                response = self._response(parsed, output, state, final=output.finished)
                if output.finished:
                    await self._metrics_pushed()
                    hops.mark("pushed")
                    await self._send(exchange, response, FINAL)
                    hops.mark("final_sent")
                    break
                taken = loop.time()
                await self._send(exchange, response, 0, urgent=not streaming)
                if not streaming:
                    hops.mark("first_sent")
                    self._streaming += 1
                    streaming = True
                until = taken + stream_pause(self._streaming, self._responses_per_second)
        finally:
            if streaming:
                self._streaming -= 1
            await outputs.aclose()
        if last is None or not last.finished:
            raise RuntimeError("the engine ended the request without a final output")
        if not stream:
            hops.mark("final_output")
            response = self._response(parsed, last, state, final=True)
            await self._metrics_pushed()
            hops.mark("pushed")
            await self._send(exchange, response, FINAL)
            hops.mark("final_sent")

    async def _embed(
        self, exchange: _Exchange, parsed: ParsedRequest, asked: EmbeddingAsk, request_id: str
    ) -> None:
        """One embedding: ``text_output`` holds it as a JSON list (as the official backend)."""
        try:
            params = PoolingParams(task="embed", dimensions=asked.dimensions)
        except Exception as err:
            raise RequestError(f"invalid embedding_request: {_reason(err)}") from None
        prompt: Any = (
            {"prompt": asked.input}
            if isinstance(asked.input, str)
            else {"prompt_token_ids": asked.input}
        )
        last = None
        async for output in self._engine.encode(prompt, params, request_id):
            last = output
        if last is None or not last.finished:
            raise RuntimeError("the engine ended the request without a final output")
        embedding = EmbeddingRequestOutput.from_base(last).outputs.embedding
        tensors = [pb_utils.Tensor("text_output", np.asarray([json.dumps(embedding)], np.object_))]
        if parsed.wanted.return_num_input_tokens:
            count = len(last.prompt_token_ids or [])
            tensors.append(pb_utils.Tensor("num_input_tokens", np.asarray([count], np.uint32)))
        if parsed.wanted.return_num_output_tokens:
            tensors.append(pb_utils.Tensor("num_output_tokens", np.asarray([0], np.uint32)))
        await self._metrics_pushed()
        await self._send(exchange, pb_utils.InferenceResponse(output_tensors=tensors), FINAL)

    def _sampling_params(self, parsed: ParsedRequest) -> SamplingParams:
        """SamplingParams from the request; whatever vLLM says about the values is INVALID_ARG."""
        kind = RequestOutputKind.DELTA if parsed.wanted.stream else RequestOutputKind.FINAL_ONLY
        extra: dict[str, Any] = {}
        if parsed.sampling.structured_outputs is not None:
            try:
                extra["structured_outputs"] = StructuredOutputsParams(
                    **parsed.sampling.structured_outputs
                )
            except Exception as err:  # vLLM checks with asserts and ValueErrors alike
                raise RequestError(f"invalid structured_outputs: {_reason(err)}") from None
        try:
            return SamplingParams(**parsed.sampling.params, **extra, output_kind=kind)
        except Exception as err:  # AssertionError too: vLLM asserts on some values
            raise RequestError(f"invalid sampling_parameters: {_reason(err)}") from None

    def _lora(self, parsed: ParsedRequest) -> LoRARequest | None:
        """The adapter a request names (sampling parameter lora_name), from multi_lora.json."""
        name = parsed.sampling.lora_name
        if name is None:
            return None
        if self._loras is None:
            raise RequestError(LORA_DISABLED_MESSAGE)
        request: LoRARequest = self._loras.request_for(name)
        return request

    async def _prompt(self, parsed: ParsedRequest) -> Any:
        if not parsed.images:
            return parsed.prompt
        # Decoded on a worker thread (PIL releases the GIL): a large image decoded on the engine
        # loop would stall every stream. RGB, as the official backend converts them.
        loop = asyncio.get_running_loop()
        images = await loop.run_in_executor(None, decode_images, parsed.images)
        return {"prompt": parsed.prompt, "multi_modal_data": {"image": images}}

    async def _rendered(self, prompt: Any) -> Any:
        """A text prompt tokenized on vLLM's renderer threads, as vLLM's own server does it.

        Given the text, vLLM 0.24's ``generate`` tokenizes it on the engine loop, where every
        request's start, output and final response wait for it; the renderer's async path runs
        the tokenizer (which releases the GIL) on a thread pool. Image prompts, and engines
        without a renderer, keep vLLM's own path.
        """
        renderer = getattr(self._engine, "renderer", None)
        if not isinstance(prompt, str) or renderer is None:
            return prompt
        rendered = await renderer.render_cmpl_async([{"prompt": prompt}])
        return rendered[0]

    def _response(
        self, parsed: ParsedRequest, output: RequestOutput, state: _SequenceState, final: bool
    ) -> Any:
        sequences = state.update(output.outputs)
        num_input = len(output.prompt_token_ids or [])
        tensors = shape_response(parsed.wanted, sequences, parsed.prompt, num_input, final)
        return pb_utils.InferenceResponse(
            output_tensors=[
                pb_utils.Tensor(name, np.asarray(values, dtype=_DTYPES[dtype]))
                for name, values, dtype in tensors
            ]
        )

    async def _send(
        self, exchange: _Exchange, response: Any, flags: int, urgent: bool = True
    ) -> None:
        """Send one response on a sender thread: on the urgent lane unless ``urgent`` is False
        (a stream's responses after its first, but for its last)."""
        try:
            await self._lanes.send(partial(exchange.send, response, flags), urgent)
        except Exception as err:
            raise ResponseNotDelivered(str(err)) from err

    async def _metrics_pushed(self) -> None:
        """Wait (bounded) until the metrics recorded so far are in Triton, so that a scrape
        right after a final response sees its request."""
        if self._when_metrics_pushed is None:
            return
        loop = asyncio.get_running_loop()
        pushed: asyncio.Future[None] = loop.create_future()

        def settle() -> None:
            if not pushed.done():
                pushed.set_result(None)

        try:
            self._when_metrics_pushed(lambda: loop.call_soon_threadsafe(settle))
            await asyncio.wait_for(asyncio.shield(pushed), METRICS_WAIT_SECONDS)
        except TimeoutError:
            self._log.log_warn("[tritonvllm] metrics push late; final response sent without it")

    async def _send_quietly(self, exchange: _Exchange, response: Any) -> None:
        """Send a final error; the client may be gone already (cancellation), so never raise."""
        try:
            await asyncio.shield(self._send(exchange, response, FINAL))
        except Exception as err:
            self._log.log_verbose(f"[tritonvllm] final response not delivered: {err}")


class _SequenceState:
    """Per request: the last finish reason and cumulative logprob of each of its n sequences.

    A streamed response carries one element per sequence, in order; a sequence that produced
    nothing since the previous response has empty text and repeats its last known values.
    """

    def __init__(self, n: int) -> None:
        self._finish: list[str | None] = [None] * n
        self._logprob: list[float | None] = [None] * n

    def update(self, outputs: list[Any]) -> list[SequenceDelta]:
        n = len(self._finish)
        new: dict[int, Any] = {}
        for position, seq in enumerate(outputs):
            index = getattr(seq, "index", position)
            new[index if 0 <= index < n else position] = seq
        deltas = []
        for index in range(max(n, len(new))):
            seq = new.get(index)
            if seq is None:
                deltas.append(SequenceDelta("", 0, self._finish[index], self._logprob[index], None))
                continue
            if index < n:
                self._finish[index] = seq.finish_reason
                self._logprob[index] = seq.cumulative_logprob
            deltas.append(
                SequenceDelta(
                    text=seq.text,
                    num_tokens=len(seq.token_ids),
                    finish_reason=seq.finish_reason,
                    cumulative_logprob=seq.cumulative_logprob,
                    logprobs=seq.logprobs,
                )
            )
        return deltas


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


def _unavailable() -> Any:
    return _error(UNHEALTHY_MESSAGE, pb_utils.TritonError.UNAVAILABLE)


def _reason(err: BaseException) -> str:
    """An exception's message, or its type when it has none (a bare assert)."""
    text = str(err)
    if isinstance(err, AssertionError) or not text:
        return (
            f"{type(err).__name__}: {text}" if text else f"{type(err).__name__} (rejected by vLLM)"
        )
    return text


def _gone(exchange: _Exchange) -> bool:
    """Whether the client of a request went away (runs on the poll thread).

    After a final send the sender must not be touched again: assume the client went away.
    """
    if exchange.closed:
        return True
    try:
        return exchange.cancelled()
    except Exception:
        return True


def _cancelled(watched: list[tuple[str, _Exchange]]) -> list[str]:
    """The ids of requests whose clients cancelled (runs on the poll thread)."""
    cancelled = []
    for request_id, exchange in watched:
        try:
            if exchange.cancelled():
                cancelled.append(request_id)
        except Exception:
            continue
    return cancelled
