"""tritonvllm: a Triton python-based backend that serves LLMs with the vLLM engine.

It keeps the official Triton vLLM backend's request contract (see docs/backend.md):
``auto_complete_config`` fills in the contract and refuses what vLLM cannot serve, ``initialize``
validates ``<version>/model.json`` against vLLM's AsyncEngineArgs and starts the engine on its own
event loop thread (with ``OPENAI_API_PORT``, vLLM's OpenAI-compatible server too, on that loop and
engine), ``execute`` hands each request to that loop, ``finalize`` drains and stops it.
When the engine dies, the model is unloaded, or the server stopped, so that it is not "ready".
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
import json
import locale
import os
import signal
import sys
import threading
import time
import typing
from pathlib import Path
from typing import Any

import triton_python_backend_utils as pb_utils
from tritonvllm_backend.contract import instance_kind_error, plan_auto_complete
from tritonvllm_backend.engine_chores import freeze_loaded_heap, log_stats_every
from tritonvllm_backend.engine_config import (
    OPENAI_SECTION,
    EngineConfigError,
    load_model_json,
    parallel_size,
    redacted,
)
from tritonvllm_backend.engine_loop import EngineLoop
from tritonvllm_backend.health import EngineHealth, EngineHealthError
from tritonvllm_backend.hops import HopLog
from tritonvllm_backend.lora import (
    MULTI_LORA_JSON,
    LoraAdapters,
    LoraFileError,
    read_multi_lora,
)
from tritonvllm_backend.multinode import (
    GroupLeader,
    GroupSettings,
    MultiNodeError,
    join_timeout,
    kill_engine_processes,
    multinode_args,
)
from tritonvllm_backend.openai_config import OpenAIConfigError, listen_address
from tritonvllm_backend.pacing import response_budget
from tritonvllm_backend.sending import gil_switch_interval
from tritonvllm_backend.server_mode import parent_model_control_mode, stops_server_on_death
from tritonvllm_backend.typekinds import Kind, kind_of

ENGINE_START_TIMEOUT_S = 900.0
# In-flight requests (Triton's and the OpenAI port's together) get this long to finish at unload;
# with the engine's shutdown after it, within the pods' 60 s termination grace period.
DRAIN_TIMEOUT_S = 30.0
ENGINE_STOP_TIMEOUT_S = 20.0
# How long after its engine died a model may take to be unloaded before the server is stopped.
UNLOAD_WAIT_S = 3.0
_LOG_PREFIX = "[tritonvllm]"


class TritonPythonModel:
    """One vLLM engine behind one Triton model instance."""

    @staticmethod
    def auto_complete_config(auto_complete_model_config: Any) -> Any:
        """Add the contract's missing tensors and settings; refuse what vLLM cannot serve."""
        config = auto_complete_model_config.as_dict()
        plan = plan_auto_complete(config)
        if plan.errors:
            raise pb_utils.TritonModelException(
                f"{config.get('name', '?')}: config.pbtxt cannot be served by vLLM: "
                + "; ".join(plan.errors)
            )
        for spec in plan.add_inputs:
            auto_complete_model_config.add_input(spec)
        for spec in plan.add_outputs:
            auto_complete_model_config.add_output(spec)
        if plan.set_decoupled:
            auto_complete_model_config.set_model_transaction_policy({"decoupled": True})
        if plan.set_max_batch_size:
            auto_complete_model_config.set_max_batch_size(0)
        return auto_complete_model_config

    def initialize(self, args: dict[str, str]) -> None:
        """Validate model.json and the model configuration, then start the engine."""
        # The stub's embedded Python keeps an ASCII locale whatever the environment says, and
        # importing vLLM (through torch) reads UTF-8 files: switch before the first vLLM import.
        locale.setlocale(locale.LC_CTYPE, "C.UTF-8")
        from tritonvllm_backend.generate import RequestRunner
        from tritonvllm_backend.metrics import StatLoggerFactory
        from tritonvllm_backend.openai_server import OpenAIServer

        self._log = pb_utils.Logger
        self._name = args["model_name"]
        config = json.loads(args["model_config"])
        parameters = config.get("parameters", {})
        if not pb_utils.using_decoupled_model_transaction_policy(config):
            raise pb_utils.TritonModelException(
                f"{self._name}: the model transaction policy must be decoupled"
            )
        try:
            budget = response_budget(
                parameters.get("STREAM_RESPONSES_PER_SECOND", {}).get("string_value")
            )
            openai_address = listen_address(parameters)
            switch_interval = gil_switch_interval(
                parameters.get("GIL_SWITCH_INTERVAL_MS", {}).get("string_value")
            )
            group_timeout = join_timeout(
                parameters.get("MULTINODE_JOIN_TIMEOUT_S", {}).get("string_value")
            )
        except (ValueError, MultiNodeError) as err:
            raise pb_utils.TritonModelException(f"{self._name}: {err}") from None
        sys.setswitchinterval(switch_interval)  # this stub runs this one model (sending.py)
        version_dir = os.path.join(args["model_repository"], args["model_version"])
        engine_args, openai_args = self._engine_args(version_dir, openai_address is not None)
        self._place_instance(args, engine_args)
        loras = self._lora_adapters(version_dir) if engine_args.enable_lora else None
        self._openai: OpenAIServer | None = None
        if openai_address is not None:
            try:
                self._openai = OpenAIServer.prepare(
                    openai_address, self._name, openai_args, engine_args
                )
            except OpenAIConfigError as err:
                raise pb_utils.TritonModelException(f"{self._name}: {err}") from None

        self._stat_loggers: StatLoggerFactory | None = None
        if (
            _bool_parameter(parameters, "REPORT_CUSTOM_METRICS")
            and not engine_args.disable_log_stats
        ):
            labels = {"model": self._name, "version": args["model_version"]}
            self._stat_loggers = StatLoggerFactory(labels)

        self._loop: EngineLoop[Any] = EngineLoop()
        self._finalizing = threading.Event()
        self._unload_requested = False
        self._group: GroupLeader | None = None
        if self._group_settings is not None:
            self._form_group(self._group_settings, parameters, group_timeout)
        engine = self._start_engine(engine_args)
        try:
            self._health = EngineHealth(
                engine, _bool_parameter(parameters, "ENABLE_VLLM_HEALTH_CHECK")
            )
        except EngineHealthError as err:
            self._stop_started(err)
        self._stops_server = stops_server_on_death(parent_model_control_mode())
        pushed = self._stat_loggers.when_pushed if self._stat_loggers is not None else None
        self._hop_log = HopLog.from_environment()
        tasks = frozenset(self._loop.call(engine.get_supported_tasks(), timeout=60))
        self._runner = RequestRunner(
            engine, self._health, sampling_kinds(), self._log, budget, loras, pushed,
            self._hop_log, tasks, self._name,
        )  # fmt: skip
        self._loop.submit(self._runner.watch_cancellations())
        self._loop.submit(self._health.watch(self._engine_died))
        limits = _scheduler_limits(engine)
        self._log.log_info(f"{_LOG_PREFIX} {self._name}: engine ready ({limits})")
        if self._openai is not None:
            self._start_openai(self._openai, engine, loras)
        else:
            self._run_engine_chores(engine, engine_args)
        if loras is not None:
            self._load_loras(loras, engine)

    def _run_engine_chores(self, engine: Any, engine_args: Any) -> None:
        """With the OpenAI port off, what vLLM's app would do: log stats, freeze the heap."""
        from vllm import envs

        if not engine_args.disable_log_stats:
            self._loop.submit(log_stats_every(engine, envs.VLLM_LOG_STATS_INTERVAL))
        frozen = freeze_loaded_heap()
        self._log.log_info(
            f"{_LOG_PREFIX} {self._name}: {frozen} objects of the loaded heap frozen"
        )

    def _engine_args(self, version_dir: str, openai: bool) -> tuple[Any, dict[str, Any]]:
        """AsyncEngineArgs and the OpenAI server's arguments from ``<version_dir>/model.json``.

        A load error names what is wrong. With the OpenAI port off (``openai`` False) nothing of
        vLLM's OpenAI server is imported, and its settings in model.json are left unchecked.
        """
        from vllm.engine.arg_utils import AsyncEngineArgs

        accepted = {field.name for field in dataclasses.fields(AsyncEngineArgs)}
        frontend: set[str] | None = None
        if openai:
            from tritonvllm_backend.openai_server import frontend_arg_names

            frontend = frontend_arg_names()
        try:
            config = load_model_json(version_dir, accepted, frontend)
            engine, self._group_settings = multinode_args(config.engine, os.environ)
            if self._group_settings is not None and self._group_settings.node_rank != 0:
                raise MultiNodeError(
                    f"node rank {self._group_settings.node_rank}: tritonserver runs the "
                    "engine's rank 0; ranks 1 and up run `python3 -m tritonvllm_backend.worker`"
                )
            if config.openai and not openai:
                self._log.log_info(
                    f"{_LOG_PREFIX} {self._name}: OpenAI port off: model.json's "
                    f"{OPENAI_SECTION!r} settings are not used"
                )
            self._log.log_info(f"{_LOG_PREFIX} {self._name}: vLLM engine args {redacted(engine)}")
            return AsyncEngineArgs(**engine), config.openai
        except (EngineConfigError, MultiNodeError, TypeError, ValueError) as err:
            raise pb_utils.TritonModelException(f"{self._name}: {err}") from None

    def _place_instance(self, args: dict[str, str], engine_args: Any) -> None:
        """A KIND_GPU instance runs a single-GPU engine on the GPU Triton gave it."""
        kind = args.get("model_instance_kind", "")
        error = instance_kind_error(kind, parallel_size(engine_args))
        if error is not None:
            raise pb_utils.TritonModelException(f"{self._name}: {error}")
        device = int(args.get("model_instance_device_id", "-1") or -1)
        if kind == "GPU" and device >= 0:
            os.environ["CUDA_VISIBLE_DEVICES"] = str(device)

    def _form_group(
        self, settings: GroupSettings, parameters: dict[str, Any], timeout: float
    ) -> None:
        """Wait until every worker rank joined (multinode.py); else fail the load naming them."""
        host = parameters.get("MULTINODE_JOIN_HOST", {}).get("string_value") or "0.0.0.0"
        self._log.log_info(
            f"{_LOG_PREFIX} {self._name}: rank 0 of a {settings.nnodes}-node engine: waiting up "
            f"to {timeout:g} s for ranks 1..{settings.nnodes - 1} at {host}:{settings.join_port}"
        )
        try:
            self._group = GroupLeader(settings, host, self._member_lost)
            self._group.wait_for_members(timeout)
        except MultiNodeError as err:
            self._stop_started(err)
        self._log.log_info(f"{_LOG_PREFIX} {self._name}: all {settings.nnodes} nodes joined")

    def _member_lost(self, message: str) -> None:
        """A worker left: the engine cannot step without it; stop it, as if it died."""
        self._log.log_error(f"{_LOG_PREFIX} {self._name}: {message}; stopping the engine")
        kill_engine_processes()

    def _start_engine(self, engine_args: Any) -> Any:
        """Build AsyncLLM on the loop thread; on failure stop everything started so far."""
        try:
            return self._loop.start(lambda: self._build_engine(engine_args), ENGINE_START_TIMEOUT_S)
        except Exception as err:
            self._stop_started(err)

    def _stop_started(self, err: Exception) -> typing.NoReturn:
        """Stop the engine and what was started beside it; fail the load with ``err``."""
        self._loop.stop(_shutdown_engine)
        group: GroupLeader | None = getattr(self, "_group", None)
        if group is not None:
            group.close()
            if group.lost is not None:  # the engine's failure was the kill of _member_lost
                err = MultiNodeError(group.lost)
        if self._stat_loggers is not None:
            self._stat_loggers.close()
        if self._openai is not None:
            self._openai.close()
        raise pb_utils.TritonModelException(
            f"{self._name}: the vLLM engine did not start: {err}"
        ) from err

    def _lora_adapters(self, version_dir: str) -> LoraAdapters:
        """The adapters of multi_lora.json (loaded once the engine runs, then followed).

        The file is checked now, so that a missing or malformed one fails the load before the
        engine starts.
        """
        from vllm.lora.request import LoRARequest
        from vllm.utils.counter import AtomicCounter

        path = Path(version_dir) / MULTI_LORA_JSON
        try:
            read_multi_lora(path)
        except LoraFileError as err:
            raise pb_utils.TritonModelException(f"{self._name}: {err}") from None
        prefix = f"{_LOG_PREFIX} {self._name}: "
        return LoraAdapters(path, LoRARequest, AtomicCounter(0), self._log, prefix)

    def _load_loras(self, loras: LoraAdapters, engine: Any) -> None:
        """Load the adapters into the engine, then follow the file; on failure unload."""
        try:
            self._loop.call(loras.load(engine), timeout=ENGINE_START_TIMEOUT_S)
        except LoraFileError as err:
            self.finalize()
            raise pb_utils.TritonModelException(f"{self._name}: {err}") from None
        self._loop.submit(loras.watch(engine))

    def _start_openai(self, server: Any, engine: Any, loras: LoraAdapters | None) -> None:
        """Serve vLLM's OpenAI app on the engine loop; on failure unload everything."""
        try:
            self._loop.call(server.start(engine, loras), timeout=ENGINE_START_TIMEOUT_S)
        except Exception as err:
            self.finalize()
            raise pb_utils.TritonModelException(
                f"{self._name}: the OpenAI server did not start: {err}"
            ) from err
        self._log.log_info(
            f"{_LOG_PREFIX} {self._name}: OpenAI API on http://{server.address} "
            f"as model {server.args.served_model_name[0]!r}"
        )

    async def _build_engine(self, engine_args: Any) -> Any:
        from tritonvllm_backend.metrics import NoPrometheusStatLogger
        from vllm.usage.usage_lib import UsageContext
        from vllm.v1.engine.async_llm import AsyncLLM

        loggers: list[Any] = [self._stat_loggers] if self._stat_loggers is not None else []
        if self._openai is None:  # vLLM's own registry is exported by the OpenAI port only
            loggers.append(NoPrometheusStatLogger)
        # A server's defaults, as `vllm serve` and the official backend build their engines: what
        # model.json leaves unset is then the same engine there and here. The library's defaults
        # (AsyncLLM's own) are smaller: in vLLM 0.32 on an H100/H200 128 sequences and 2,048
        # batched tokens a step against a server's 1,024 and 8,192.
        return AsyncLLM.from_engine_args(
            engine_args,
            usage_context=UsageContext.OPENAI_API_SERVER,
            stat_loggers=loggers or None,
        )

    def execute(self, requests: list[Any]) -> None:
        """Hand each request to the engine loop; responses go out through their senders.

        A dead engine is known from a flag (no round trip to the engine loop): its requests get
        UNAVAILABLE at once. With ENABLE_VLLM_HEALTH_CHECK a failed health check (asked on the
        engine loop, health.py) sets it too.
        """
        if self._runner.engine_dead:
            from tritonvllm_backend.generate import UNHEALTHY_MESSAGE

            if self._runner.inflight == 0:
                # Not while the sender threads still answer requests in flight: the unload
                # message and their responses share the stub's IPC, and the stub crashed on
                # that race. A later request asks again; the server stops after UNLOAD_WAIT_S.
                self._request_unload()
            for request in requests:
                request.get_response_sender().send(
                    pb_utils.InferenceResponse(
                        error=pb_utils.TritonError(
                            message=UNHEALTHY_MESSAGE, code=pb_utils.TritonError.UNAVAILABLE
                        )
                    ),
                    flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL,
                )
            return None
        received = time.monotonic()
        for request in requests:
            self._loop.submit(self._runner.serve(request, received))
        return None

    def _request_unload(self) -> None:
        """Ask Triton to unload this model, once (as the official backend does).

        Only from the stub's main thread (``execute``): called from another thread the stub
        crashes. Triton unloads on request only in explicit model control mode.
        """
        if self._unload_requested:
            return
        self._unload_requested = True
        held = (
            self._stat_loggers.pushes_held()
            if self._stat_loggers is not None
            else contextlib.nullcontext()
        )
        try:
            with held:  # the metrics thread's pushes share the stub's IPC with this message
                pb_utils.unload_model(self._name)
        except Exception as err:
            self._log.log_warn(f"{_LOG_PREFIX} {self._name}: unload refused: {err}")

    def _engine_died(self) -> None:
        """Make the model stop being ready: unloaded, or else the server stopped (it restarts).

        Runs on a thread of its own once the engine died. In explicit or poll model control
        mode other models may share the server: the model's next request unloads it (as the
        official backend does) and nothing else is touched. In mode none (the pods: one model a
        server) the model cannot be unloaded, so unless it is finalizing within UNLOAD_WAIT_S
        the server is stopped: its readiness and liveness probes fail and Kubernetes restarts
        the container with a fresh engine.
        """
        self._log.log_error(
            f"[vllm] Engine is not healthy and model will be unloaded: {self._name}: "
            f"{self._health.reason}"
        )
        if not self._stops_server or self._finalizing.wait(UNLOAD_WAIT_S):
            return
        self._log.log_error(
            f"{_LOG_PREFIX} {self._name}: the model is not being unloaded; stopping the server "
            "so that it is restarted"
        )
        os.kill(os.getppid(), signal.SIGTERM)

    async def _drain(self, timeout: float) -> None:
        """Drain both front doors at once, within one deadline."""
        drains = [self._runner.drain(timeout)]
        if self._openai is not None:
            drains.append(self._openai.stop(timeout))
        await asyncio.gather(*drains)

    def finalize(self) -> None:
        """Let in-flight requests finish (bounded), then stop the engine and the threads."""
        self._log.log_info(f"{_LOG_PREFIX} {self._name}: finalizing")
        finalizing = getattr(self, "_finalizing", None)
        if finalizing is not None:
            finalizing.set()
        loop = getattr(self, "_loop", None)
        if loop is None:
            return
        try:
            loop.call(self._drain(DRAIN_TIMEOUT_S), timeout=DRAIN_TIMEOUT_S + 5)
        finally:
            loop.stop(_shutdown_engine, timeout=ENGINE_STOP_TIMEOUT_S)
            group: GroupLeader | None = getattr(self, "_group", None)
            if group is not None:
                group.close()  # after the engine: its workers exit on this
            self._runner.close()
            if self._stat_loggers is not None:
                self._stat_loggers.close()
            hop_log = getattr(self, "_hop_log", None)
            if hop_log is not None:
                hop_log.close()
            # Drop the engine and the Triton objects now, while the stub and every module are
            # still alive, rather than at interpreter exit.
            del self._runner, self._loop, self._stat_loggers, self._openai
            gc.unfreeze()
            gc.collect()
        self._log.log_info(f"{_LOG_PREFIX} {self._name}: engine stopped")


async def _shutdown_engine(engine: Any) -> None:
    engine.shutdown()
    # AsyncLLM.__del__ shuts down again; at interpreter exit vLLM's module globals are gone
    # and that second call fails noisily. It has nothing left to do.
    engine.shutdown = lambda *args, **kwargs: None


def _bool_parameter(parameters: dict[str, Any], name: str) -> bool:
    value = parameters.get(name, {}).get("string_value", "")
    return str(value).strip().lower() in {"true", "1", "yes", "on"}


def sampling_kinds() -> dict[str, Kind]:
    """SamplingParams field -> kind, for coercing request values."""
    from vllm import SamplingParams

    try:
        hints = typing.get_type_hints(SamplingParams)
    except Exception:
        hints = dict(getattr(SamplingParams, "__annotations__", {}))
    names = getattr(SamplingParams, "__struct_fields__", tuple(hints))
    return {name: kind_of(hints.get(name, Any)) for name in names if not name.startswith("_")}


def _scheduler_limits(engine: Any) -> str:
    """The engine's batch limits, for the load log: what a model.json left unset came to."""
    scheduler = engine.vllm_config.scheduler_config
    return (
        f"max_num_seqs={scheduler.max_num_seqs}, "
        f"max_num_batched_tokens={scheduler.max_num_batched_tokens}"
    )
