"""A dead engine takes down the whole server only where the server can hold just this model
(model control mode none, the pods); in explicit and poll mode only the model is unloaded."""

from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "backend" / "tritonvllm"))
import pytest
from tritonvllm_backend.server_mode import model_control_mode, server_argv, stops_server_on_death


@pytest.mark.parametrize(
    ("argv", "mode"),
    [
        (["tritonserver", "--model-repository=/models"], "none"),
        (["tritonserver", "--model-control-mode=explicit", "--load-model=a"], "explicit"),
        (["tritonserver", "--model-control-mode", "poll"], "poll"),
        (["tritonserver", "--model-control-mode=NONE"], "none"),
        (["--model-control-mode=poll", "--model-control-mode=explicit"], "explicit"),
        ([], "none"),
    ],
)
def test_the_mode_is_read_from_the_server_command_line(argv: list[str], mode: str) -> None:
    assert model_control_mode(argv) == mode


def test_only_mode_none_stops_the_server() -> None:
    assert stops_server_on_death("none")
    assert not stops_server_on_death("explicit")
    assert not stops_server_on_death("poll")


def test_a_process_command_line_is_read_from_proc() -> None:
    assert server_argv(os.getpid())[0].endswith(("python", "python3", Path(sys.executable).name))
    assert server_argv(2**22 + 12345) == []
