"""The model control mode of the tritonserver this stub serves, from its command line.

It decides what a dead engine takes down: in mode ``none`` (the pods: one model a server) the
server stops, so the pod's probes fail and Kubernetes restarts it; in ``explicit`` or ``poll``
mode other models may share the server, so only this model is unloaded.
"""

from __future__ import annotations

import os

DEFAULT_MODE = "none"  # tritonserver's own default
_FLAG = "--model-control-mode"


def model_control_mode(argv: list[str]) -> str:
    """The ``--model-control-mode`` of a tritonserver command line (the last one given wins)."""
    mode = DEFAULT_MODE
    for position, arg in enumerate(argv):
        if arg.startswith(_FLAG + "="):
            mode = arg.split("=", 1)[1]
        elif arg == _FLAG and position + 1 < len(argv):
            mode = argv[position + 1]
    return mode.strip().lower() or DEFAULT_MODE


def server_argv(pid: int) -> list[str]:
    """The command line of process ``pid`` (the stub's parent: tritonserver); [] if unreadable."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
            raw = cmdline.read()
    except OSError:
        return []
    return [part.decode("utf-8", "replace") for part in raw.split(b"\0") if part]


def stops_server_on_death(mode: str) -> bool:
    """Whether a dead engine should stop the whole server (only one model can be loaded)."""
    return mode == DEFAULT_MODE


def parent_model_control_mode() -> str:
    """The model control mode of the tritonserver that started this stub."""
    return model_control_mode(server_argv(os.getppid()))
