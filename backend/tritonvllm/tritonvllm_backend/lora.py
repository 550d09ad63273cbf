"""LoRA adapters from ``multi_lora.json``, kept in step with the file while the model serves.

The file (beside model.json) maps each adapter name a request may give as ``lora_name`` to the
adapter's directory. ``LoraAdapters`` holds the adapters served, name -> vLLM ``LoRARequest``, and
its ``watch`` (on the engine loop) reads the file every POLL_SECONDS and compares its content: a
Kubernetes ConfigMap update swaps a symlink, so the path's inode and mtime are no reliable sign.
A change is applied as one step: added adapters and those whose path changed are loaded into the
engine (vLLM's ``add_lora``) before any request may name them; a removed one is refused to new
requests at once and removed from the engine (``remove_lora``) once no request in flight uses it.
A file that cannot be read or parsed, or an adapter vLLM cannot load, changes nothing: the error
is logged and the adapters served are kept.

The dict of adapters can be vLLM's own OpenAI server's (``share_with``), so its /v1/models and
``model: <adapter>`` follow the file too. Nothing here imports Triton or vLLM: the engine, the
LoRARequest class and the id counter are handed in.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from .sampling import RequestError

MULTI_LORA_JSON = "multi_lora.json"
POLL_SECONDS = 1.0


class LoraFileError(ValueError):
    """multi_lora.json is missing, unreadable or malformed, or names an adapter vLLM cannot load."""


class Counter(Protocol):
    """An id counter, as vLLM's AtomicCounter."""

    def inc(self, num: int = 1) -> int: ...


class Logger(Protocol):
    def log_info(self, message: str) -> None: ...

    def log_error(self, message: str) -> None: ...


@dataclass(frozen=True)
class Changes:
    """What turns one set of adapters (name -> path) into another."""

    load: dict[str, str] = field(default_factory=dict)  # added, or at a new path
    drop: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.load or self.drop)


def parse_multi_lora(text: str, source: str, base_dir: Path) -> dict[str, str]:
    """The adapters of a multi_lora.json's text: name -> path (relative paths from ``base_dir``)."""
    try:
        adapters = json.loads(text)
    except json.JSONDecodeError as err:
        raise LoraFileError(f"{source} is not valid JSON: {err}") from None
    if not isinstance(adapters, dict) or not all(
        isinstance(name, str) and name and isinstance(where, str) and where
        for name, where in adapters.items()
    ):
        raise LoraFileError(f"{source} must map LoRA names to directory paths (strings)")
    return {name: str(base_dir / where) for name, where in adapters.items()}


def read_multi_lora(path: Path) -> tuple[str, dict[str, str]]:
    """The file's text and its adapters; LoraFileError saying what is wrong."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise LoraFileError(
            f"{path} is missing: with enable_lora it must map each LoRA name to its directory"
        ) from None
    except (OSError, UnicodeDecodeError) as err:
        raise LoraFileError(f"{path} cannot be read: {err}") from None
    return text, parse_multi_lora(text, str(path), path.parent)


def diff_adapters(served: Mapping[str, str], listed: Mapping[str, str]) -> Changes:
    """The adapters to load (new names, or a new path) and to drop (no longer listed)."""
    load = {name: path for name, path in listed.items() if served.get(name) != path}
    return Changes(load, [name for name in served if name not in listed])


def unknown_adapter_message(name: str, served: Iterable[str]) -> str:
    """The official backend's words for a lora_name it does not serve, naming those it does."""
    return f"LoRA {name} is not supported, we currently support {list(served)}"


def adapters_in_use(engine: Any) -> set[int] | None:
    """The ids of the adapters that requests in flight use; None if the engine does not say.

    Read from vLLM's output processor, which holds one state per request in flight, from both
    Triton's endpoints and the OpenAI server.
    """
    states = getattr(getattr(engine, "output_processor", None), "request_states", None)
    if not isinstance(states, dict):
        return None
    requests = (getattr(state, "lora_request", None) for state in list(states.values()))
    return {request.lora_int_id for request in requests if request is not None}


class LoraAdapters:
    """The adapters a model serves, following its multi_lora.json."""

    def __init__(
        self,
        path: Path,
        make_request: Callable[..., Any],
        counter: Counter,
        logger: Logger,
        prefix: str = "",
    ) -> None:
        """``make_request``: vLLM's LoRARequest (called with its keyword arguments)."""
        self.path = path
        self.requests: dict[str, Any] = {}  # served: name -> LoRARequest
        self._make_request = make_request
        self._counter = counter
        self._log = logger
        self._prefix = prefix
        self._listed: dict[str, str] = {}  # the file's adapters, as last applied
        self._seen: str | None = None  # the file's text (or why it could not be read), last seen
        self._retiring: list[Any] = []  # removed or replaced, still in the engine

    def share_with(self, models: Any) -> None:
        """Serve the same adapters as vLLM's OpenAIServingModels: its dict and its id counter.

        Call before ``load``; adapters the OpenAI server loaded itself (its ``lora_modules``)
        stay served beside the file's.
        """
        models.lora_requests.update(self.requests)
        self.requests = models.lora_requests
        self._counter = models.lora_id_counter

    def request_for(self, name: str) -> Any:
        """The LoRARequest for a request's ``lora_name``; RequestError naming those served."""
        request = self.requests.get(name)
        if request is None:
            raise RequestError(unknown_adapter_message(name, self.requests))
        return request

    async def load(self, engine: Any) -> None:
        """Load the file's adapters into the engine (at model load); raise LoraFileError."""
        text, listed = read_multi_lora(self.path)
        self._seen = text
        await self._apply(engine, listed)

    async def watch(self, engine: Any, interval: float = POLL_SECONDS) -> None:
        """Follow the file for the loop's lifetime."""
        while True:
            await asyncio.sleep(interval)
            try:
                await self.refresh(engine)
            except Exception as err:  # the watch must outlive any one failure
                self._log.log_error(f"{self._prefix}{self.path}: LoRA update failed: {err!r}")

    async def refresh(self, engine: Any) -> None:
        """Apply the file if its content changed; remove retired adapters no longer in use."""
        error = None
        try:
            text = self.path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as err:
            text = error = f"{self.path} cannot be read: {err}"  # logged once, not every poll
        if text != self._seen:
            self._seen = text
            try:
                if error is not None:
                    raise LoraFileError(error)
                await self._apply(engine, parse_multi_lora(text, str(self.path), self.path.parent))
            except LoraFileError as err:
                self._log.log_error(
                    f"{self._prefix}{err}; the adapters served are kept: {list(self.requests)}"
                )
        await self._retire(engine)

    async def _apply(self, engine: Any, listed: dict[str, str]) -> None:
        """Load what is new first; only once all of it loaded, change what is served."""
        changes = diff_adapters(self._listed, listed)
        if not changes:
            return
        staged: dict[str, Any] = {}
        for name, path in changes.load.items():
            request = self._make_request(
                lora_name=name, lora_int_id=self._counter.inc(1), lora_path=path
            )
            try:
                await engine.add_lora(request)
            except Exception as err:
                self._retiring.extend(staged.values())
                reason = " ".join(str(err).split()) or repr(err)  # one log line
                raise LoraFileError(
                    f"{self.path}: LoRA {name} cannot be loaded from {path}: {reason}"
                ) from None
            staged[name] = request
        for name in changes.drop:
            if name in self.requests:
                self._retiring.append(self.requests.pop(name))
        for name, request in staged.items():
            if name in self.requests:
                self._retiring.append(self.requests[name])
            self.requests[name] = request
        self._listed = dict(listed)
        self._log.log_info(
            f"{self._prefix}{self.path}: LoRA adapters {list(self.requests)} "
            f"(loaded {list(staged)}, removed {changes.drop})"
        )

    async def _retire(self, engine: Any) -> None:
        """Remove from the engine the retired adapters that no request in flight uses."""
        if not self._retiring:
            return
        # An engine that does not say: remove now (vLLM would load an adapter again from its
        # path for a request still using it).
        busy = adapters_in_use(engine) or set()
        served = {request.lora_int_id for request in self.requests.values()}
        keep = []
        for request in self._retiring:
            if request.lora_int_id in busy:
                keep.append(request)
            elif request.lora_int_id not in served:
                await self._remove(engine, request)
        self._retiring = keep

    async def _remove(self, engine: Any, request: Any) -> None:
        """Remove one adapter from the engine; a failure is logged (vLLM's cache evicts it)."""
        adapter = f"LoRA {request.lora_name} ({request.lora_path})"
        try:
            await engine.remove_lora(request.lora_int_id)
        except Exception as err:
            self._log.log_error(f"{self._prefix}{adapter} not removed from the engine: {err!r}")
            return
        self._log.log_info(f"{self._prefix}{adapter} left the engine: no request uses it")
