"""vLLM's own OpenAI-compatible server, run on the engine's event loop against the same engine.

vLLM builds the FastAPI application and its serving state (chat templates, tool and reasoning
parsers, structured outputs, error shapes, ``/health``, ``/metrics``) from an argparse namespace
and an engine client. This module builds that namespace from model.json (the engine arguments
and the frontend arguments), binds the port before the engine starts (a busy port fails the
model load early), then serves the app with uvicorn on the loop where ``AsyncLLM`` lives, so
OpenAI requests and Triton requests share one engine, one scheduler and one set of metrics.

uvicorn runs without signal handlers (the loop is not on the main thread; Triton owns the
process) and stops in ``stop``, which closes the listening socket.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import gc
import os
import socket
from typing import Any

from tritonvllm_backend.lora import LoraAdapters
from tritonvllm_backend.openai_config import (
    ListenAddress,
    OpenAIConfigError,
    check_not_reserved,
    served_names,
)

START_TIMEOUT_S = 120.0
# Kept out of the access log unless model.json sets disable_access_log_for_endpoints: the pods'
# probes call them every few seconds.
PROBE_PATHS = "/health,/ping"
# How long an idle connection is kept open, unless VLLM_HTTP_TIMEOUT_KEEP_ALIVE says. vLLM's 5 s
# equals the idle expiry of httpx's connection pool (the openai client's): a client reusing a
# connection idle for about 5 s raced the server closing it and got "Server disconnected
# without sending a response". Longer than the pools of common clients and load balancers (60 s).
KEEP_ALIVE_S = 65


def frontend_arg_names() -> set[str]:
    """The names of vLLM's OpenAI server arguments (FrontendArgs fields)."""
    return {f.name for f in dataclasses.fields(_args_api()[0])}


class OpenAIServer:
    """vLLM's OpenAI app on one port, served by uvicorn on the engine loop."""

    def __init__(self, args: argparse.Namespace, address: ListenAddress) -> None:
        self.args = args
        self.address = address
        self._sock: socket.socket | None = _bind(address)
        self._server: Any = None
        self._task: asyncio.Task[None] | None = None

    @classmethod
    def prepare(
        cls, address: ListenAddress, model_name: str, frontend: dict[str, Any], engine_args: Any
    ) -> OpenAIServer:
        """Validate the frontend arguments, name the served model and bind the port.

        Sets ``engine_args.served_model_name`` (the Triton model's name first), so responses
        and the engine's metric labels carry the name clients use. Call before the engine
        starts; raises OpenAIConfigError saying what is wrong.
        """
        engine_args.served_model_name = served_names(model_name, engine_args.served_model_name)
        args = namespace(frontend, engine_args, address)
        return cls(args, address)

    async def start(
        self, engine: Any, loras: LoraAdapters | None = None, timeout: float = START_TIMEOUT_S
    ) -> None:
        """Build vLLM's app and state for ``engine`` and serve it; return once it listens.

        ``loras``, the adapters of multi_lora.json, are those vLLM's /v1/models lists and its
        requests may name as their model (one dict of LoRARequests, shared).
        """
        import uvicorn
        from vllm import envs
        from vllm.utils.system_utils import set_ulimit

        build_app, init_app_state, NoSignalServer = _app_api()

        if self._sock is None:
            raise RuntimeError("the OpenAI server was stopped")
        args = self.args
        supported_tasks = await engine.get_supported_tasks()
        app = build_app(args, supported_tasks, engine.model_config)
        await init_app_state(engine, app.state, args, supported_tasks)
        if loras is not None:
            loras.share_with(app.state.openai_serving_models)
        set_ulimit()  # as vLLM's server does: one open file per connection
        config = uvicorn.Config(
            app,
            log_config=_uvicorn_log_config(args),
            log_level=args.uvicorn_log_level,
            access_log=not args.disable_uvicorn_access_log,
            timeout_keep_alive=_keep_alive(envs.VLLM_HTTP_TIMEOUT_KEEP_ALIVE),
            h11_max_incomplete_event_size=args.h11_max_incomplete_event_size,
        )
        config.h11_max_header_count = args.h11_max_header_count
        self._server = NoSignalServer(config)
        self._task = asyncio.create_task(self._server.serve(sockets=[self._sock]))
        deadline = asyncio.get_running_loop().time() + timeout
        while not self._server.started:
            if self._task.done():
                self._task.result()  # raises what uvicorn raised
                raise RuntimeError("the OpenAI server stopped while starting")
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError(f"the OpenAI server did not start within {timeout:.0f} s")
            await asyncio.sleep(0.01)

    async def stop(self, timeout: float) -> None:
        """Stop accepting, let open requests finish (bounded), close the port."""
        server, task = self._server, self._task
        self._server = self._task = None
        try:
            if server is not None and task is not None:
                server.should_exit = True
                done, _ = await asyncio.wait({task}, timeout=timeout)
                if not done:
                    server.force_exit = True
                    task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        finally:
            self.close()
            # vLLM's app freezes the heap it starts with (less GC work while serving); the
            # backend frees the engine with the garbage collector at unload.
            gc.unfreeze()

    def close(self) -> None:
        """Close the listening socket (frees the port)."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def namespace(
    frontend: dict[str, Any], engine_args: Any, address: ListenAddress
) -> argparse.Namespace:
    """The arguments ``vllm serve`` would parse for this model: its defaults, then ours.

    Engine fields come from ``engine_args`` (model.json), frontend fields from ``frontend``
    (validated by vLLM's own FrontendArgs), host and port from ``address``.
    """
    from pydantic import ValidationError
    from vllm.engine.arg_utils import AsyncEngineArgs
    from vllm.entrypoints.openai.models.protocol import LoRAModulePath
    from vllm.tool_parsers import ToolParserManager
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    FrontendArgs, make_arg_parser, validate_parsed_serve_args, validate_api_server_args = (
        _args_api()
    )
    check_not_reserved(frontend)
    values = dict(frontend)
    if values.get("lora_modules"):
        values["lora_modules"] = [
            LoRAModulePath(**item) if isinstance(item, dict) else item
            for item in values["lora_modules"]
        ]
    try:
        validated = FrontendArgs(**values)
    except (ValidationError, TypeError) as err:
        raise OpenAIConfigError(f"model.json: OpenAI server arguments: {err}") from None

    args = make_arg_parser(FlexibleArgumentParser()).parse_args([])
    for field in dataclasses.fields(AsyncEngineArgs):
        setattr(args, field.name, getattr(engine_args, field.name))
    for field in dataclasses.fields(FrontendArgs):
        setattr(args, field.name, getattr(validated, field.name))
    args.host, args.port = address.host, address.port
    if "disable_access_log_for_endpoints" not in frontend and hasattr(
        args, "disable_access_log_for_endpoints"
    ):
        args.disable_access_log_for_endpoints = PROBE_PATHS
    # What the engine will do with reasoning_parser when it builds its config, done now so the
    # server's checks below see it.
    merge = getattr(engine_args, "create_structured_outputs_config", None)
    if merge is not None:
        args.structured_outputs_config = merge()
    else:  # vLLM 0.24 merges the reasoning parser into the config when it builds the engine
        args.structured_outputs_config = engine_args.structured_outputs_config
        if engine_args.reasoning_parser:
            args.structured_outputs_config.reasoning_parser = engine_args.reasoning_parser
    try:
        if args.tool_parser_plugin:
            ToolParserManager.import_tool_parser(args.tool_parser_plugin)
        validate_parsed_serve_args(args)
        validate_api_server_args(args)
    except Exception as err:  # vLLM's checks raise several kinds, VLLMValidationError among them
        message = err.args[0] if isinstance(err, KeyError) and err.args else err
        raise OpenAIConfigError(f"model.json: OpenAI server arguments: {message}") from None
    return args


def _args_api() -> tuple[Any, Any, Any, Any]:
    """FrontendArgs, make_arg_parser, validate_parsed_serve_args, validate_api_server_args.

    Under vllm.entrypoints.launchers since vLLM 0.3x; under vllm.entrypoints.openai in 0.24 (the
    GPU benchmark's release, forced by the GPU machine's torch).
    """
    try:
        from vllm.entrypoints.launchers.cli_args import (
            FrontendArgs,
            make_arg_parser,
            validate_parsed_serve_args,
        )
        from vllm.entrypoints.launchers.launcher import validate_api_server_args
    except ImportError:  # vLLM 0.24
        from vllm.entrypoints.openai.api_server import validate_api_server_args
        from vllm.entrypoints.openai.cli_args import (
            FrontendArgs,
            make_arg_parser,
            validate_parsed_serve_args,
        )
    return FrontendArgs, make_arg_parser, validate_parsed_serve_args, validate_api_server_args


def _keep_alive(vllm_default: float) -> float:
    """VLLM_HTTP_TIMEOUT_KEEP_ALIVE when set, else KEEP_ALIVE_S (not vLLM's 5 s default)."""
    return vllm_default if "VLLM_HTTP_TIMEOUT_KEEP_ALIVE" in os.environ else KEEP_ALIVE_S


def _uvicorn_log_config(args: argparse.Namespace) -> dict[str, Any] | None:
    """uvicorn's logging config as ``vllm serve`` builds it from the arguments (a log config
    file, the access-log filter, the JSON format); None (uvicorn's defaults) when this vLLM has
    no such builder."""
    try:
        from vllm.entrypoints.launchers.utils.server_utils import get_uvicorn_log_config
    except ImportError:
        try:  # vLLM 0.24
            from vllm.entrypoints.openai.api_server import (  # type: ignore[no-redef]
                get_uvicorn_log_config,
            )
        except ImportError:
            return None
    config: dict[str, Any] | None = get_uvicorn_log_config(args)
    return config


def _app_api() -> tuple[Any, Any, Any]:
    """build_app, init_app_state and a uvicorn Server that installs no signal handlers."""
    try:
        from vllm.entrypoints.launchers.api_server.app_state import init_app_state
        from vllm.entrypoints.launchers.app import build_app
        from vllm.entrypoints.launchers.launcher import NoSignalServer
    except ImportError:  # vLLM 0.24: no NoSignalServer; uvicorn installs none off the main thread
        import uvicorn
        from vllm.entrypoints.openai.api_server import build_app, init_app_state

        class NoSignalServer(uvicorn.Server):  # type: ignore[no-redef]
            def install_signal_handlers(self) -> None:
                pass

    return build_app, init_app_state, NoSignalServer


def _bind(address: ListenAddress) -> socket.socket:
    family = socket.AF_INET6 if ":" in address.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((address.host, address.port))
    except OSError as err:
        sock.close()
        raise OpenAIConfigError(
            f"the OpenAI server cannot listen on {address}: {err.strerror or err}"
        ) from None
    return sock
