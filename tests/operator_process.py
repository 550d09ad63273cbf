"""Run the operator as a real process against the local control plane (tests, demo, bench)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CRD = ROOT / "crds" / "tritonvllm.io_tritonvllmmodels.yaml"


def free_ports(count: int) -> list[int]:
    """``count`` distinct free TCP ports on 127.0.0.1 (all held open until all are chosen)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


class OperatorProcess:
    """`python -m triton_vllm_operator run` with a kubeconfig; logs go to a file."""

    def __init__(
        self,
        kubeconfig: Path,
        log_path: Path,
        extra_env: dict[str, str] | None = None,
    ) -> None:
        self.kubeconfig = kubeconfig
        self.log_path = log_path
        self.extra_env = dict(extra_env or {})
        self.port, self.metrics_port = free_ports(2)
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = {
            **os.environ,
            "KUBECONFIG": str(self.kubeconfig),
            "TRITON_VLLM_LIVENESS_ENDPOINT": f"http://127.0.0.1:{self.port}/healthz",
            "TRITON_VLLM_METRICS_BIND_ADDRESS": f"127.0.0.1:{self.metrics_port}",
            # No Hub lookups unless a test serves one (tests/integration/test_sizing_e2e.py).
            "TRITON_VLLM_MODEL_FACTS": "false",
            **self.extra_env,
        }
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "triton_vllm_operator", "run"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"operator exited; see {self.log_path}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/healthz", timeout=2):
                    return
            except OSError:
                time.sleep(0.3)
        raise TimeoutError(f"operator not live within 60 s; see {self.log_path}")

    def kill(self) -> None:
        """SIGKILL: no chance to clean up, as when a node dies."""
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=30)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None
