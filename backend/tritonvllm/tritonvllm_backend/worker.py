"""A multi-node engine's rank > 0: vLLM's headless workers for one node of the group.

    PYTHONPATH=<backend dir> python3 -m tritonvllm_backend.worker <version dir>/model.json

Run on every node but the leader's, from the same image and the same model.json as the leader
(whose tritonserver runs the engine's rank 0), with TRITONVLLM_NODE_RANK (1..nnodes-1) and
TRITONVLLM_MASTER_ADDR (the leader's address) in the environment. It is what ``vllm serve
--headless --node-rank R`` does (vLLM's MultiprocExecutor without an engine), plus the group's
membership (multinode.py): it joins the leader first, and exits non-zero when the leader goes or
one of its vLLM workers dies, so that the whole group is restarted; SIGTERM stops it with 0.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import multiprocessing
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from tritonvllm_backend.engine_config import OPENAI_SECTION
from tritonvllm_backend.multinode import (
    DEFAULT_JOIN_TIMEOUT_S,
    GroupMember,
    MultiNodeError,
    multinode_args,
)

_PREFIX = "[tritonvllm worker]"


def engine_arguments(model_json: Path, accepted: set[str]) -> dict[str, Any]:
    """model.json's engine arguments. The leader validates the file; settings of the OpenAI
    server (under "openai" or top-level frontend names) are the leader's and are left out."""
    config = json.loads(model_json.read_text(encoding="utf-8"))
    if not isinstance(config, dict):
        raise MultiNodeError(f"{model_json} must hold a JSON object")
    return {
        key: value for key, value in config.items() if key in accepted and key != OPENAI_SECTION
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python3 -m tritonvllm_backend.worker", description=__doc__
    )
    parser.add_argument("model_json", type=Path, help="the model's model.json (as the leader's)")
    parser.add_argument(
        "--join-timeout",
        type=float,
        default=DEFAULT_JOIN_TIMEOUT_S,
        help="seconds to wait for the leader's membership port (default %(default)g)",
    )
    options = parser.parse_args(argv)

    from vllm.engine.arg_utils import AsyncEngineArgs

    accepted = {field.name for field in dataclasses.fields(AsyncEngineArgs)}
    try:
        args, settings = multinode_args(engine_arguments(options.model_json, accepted), os.environ)
        if settings is None or settings.node_rank == 0:
            raise MultiNodeError(
                "this is the entry point of ranks 1..nnodes-1 of a multi-node engine (model.json "
                "nnodes > 1, TRITONVLLM_NODE_RANK > 0); rank 0 is tritonserver with the backend"
            )
        member = GroupMember.join(settings, options.join_timeout)
    except (MultiNodeError, OSError, ValueError) as err:
        print(f"{_PREFIX} {err}", file=sys.stderr, flush=True)
        return 2
    print(
        f"{_PREFIX} rank {settings.node_rank} of {settings.nnodes} joined the leader at "
        f"{settings.join_address}; starting vLLM's workers",
        flush=True,
    )
    return _serve(AsyncEngineArgs(**args), member)


def _serve(engine_args: Any, member: GroupMember) -> int:
    """Run this node's vLLM workers until the leader or one of them goes."""
    from vllm.usage.usage_lib import UsageContext
    from vllm.v1.executor.multiproc_executor import MultiprocExecutor

    stopping = threading.Event()
    ended = threading.Event()

    def on_sigterm(*_: Any) -> None:
        stopping.set()
        ended.set()

    def on_leader_gone() -> None:
        member.leader_gone.wait()
        ended.set()

    signal.signal(signal.SIGTERM, on_sigterm)
    # Building the executor blocks in vLLM's rendezvous; a leader gone meanwhile ends us.
    threading.Thread(target=on_leader_gone, daemon=True).start()
    ready = threading.Event()
    failed: list[BaseException] = []
    executor: Any = None

    def run() -> None:
        nonlocal executor
        try:
            config = engine_args.create_engine_config(
                usage_context=UsageContext.OPENAI_API_SERVER, headless=True
            )
            executor = MultiprocExecutor(config, monitor_workers=False)
            ready.set()
            executor.start_worker_monitor(inline=True)  # returns when a worker died
        except BaseException as err:
            failed.append(err)
        ended.set()

    threading.Thread(target=run, name="tritonvllm-worker", daemon=True).start()
    ended.wait()
    if stopping.is_set():
        reason, code = "stopping (SIGTERM)", 0
    elif member.leader_gone.is_set():
        reason, code = "the leader is gone", 1
    elif failed:
        reason, code = f"vLLM's workers failed: {failed[0]!r}", 1
    else:
        reason, code = "one of vLLM's worker processes died", 1
    print(f"{_PREFIX} {reason}; shutting down", file=sys.stderr, flush=True)
    member.close()
    if code == 0 and executor is not None and ready.is_set():
        executor.shutdown()  # graceful; without a leader vLLM's workers wait on it: killed below
    # Workers still starting (no executor yet) are children of this process: end them too.
    for child in multiprocessing.active_children():
        child.kill()
    return code


if __name__ == "__main__":
    sys.exit(main())
