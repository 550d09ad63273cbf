"""Helpers for tests that run against the local control plane (hack/cluster.sh).

ensure_cluster() reuses a control plane that already answers, or builds and starts one;
ClusterHandle.release() stops it when the last test session using it leaves, if a test session
started it (one started by `make cluster-up` is left running).
kubectl() runs the pinned kubectl against it; add_gpu_node()/remove_node() add simulated
(kwok) nodes beyond the pool declared in tests/gpu-nodes.yaml.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import yaml

ROOT = Path(__file__).resolve().parents[1]
CLUSTER_SH = ROOT / "hack" / "cluster.sh"
GPU_NODES = ROOT / "tests" / "gpu-nodes.yaml"

T = TypeVar("T")


def work_dir() -> Path:
    """Same default as the Makefile and hack/cluster.sh."""
    return Path(os.environ.get("WORK_DIR") or ROOT / ".work")


def _script(*args: str, timeout: float | None = None) -> str:
    out = subprocess.run(
        [str(CLUSTER_SH), *args], check=True, capture_output=True, text=True, timeout=timeout
    )
    return out.stdout.strip()


class KubectlError(subprocess.CalledProcessError):
    """A failed kubectl, with its stderr in the message (CalledProcessError leaves it out)."""

    def __str__(self) -> str:
        return f"{super().__str__()}\n{self.stderr}"


@dataclass(frozen=True)
class ClusterHandle:
    kubeconfig: Path
    bin_dir: Path
    started: bool  # True when this ensure_cluster() call started it

    def env(self) -> dict[str, str]:
        """os.environ plus what `hack/cluster.sh env` exports (nothing is written under HOME)."""
        wd = work_dir()
        env = dict(os.environ)
        env.update(
            KUBECONFIG=str(self.kubeconfig),
            PATH=f"{self.bin_dir}{os.pathsep}{env.get('PATH', '')}",
            KUBECACHEDIR=str(wd / "kube-cache"),
            HELM_CACHE_HOME=str(wd / "helm" / "cache"),
            HELM_CONFIG_HOME=str(wd / "helm" / "config"),
            HELM_DATA_HOME=str(wd / "helm" / "data"),
        )
        return env

    def kubectl(
        self, *args: str, input: str | None = None, check: bool = True, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        res = subprocess.run(
            [str(self.bin_dir / "kubectl"), *args],
            input=input,
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and res.returncode != 0:
            raise KubectlError(res.returncode, res.args, res.stdout, res.stderr)
        return res

    def answers(self) -> bool:
        if not self.kubeconfig.is_file() or not (self.bin_dir / "kubectl").is_file():
            return False
        try:
            res = self.kubectl("--request-timeout=5s", "get", "--raw", "/readyz", check=False)
        except subprocess.TimeoutExpired:
            return False
        return res.returncode == 0

    def api_client(self) -> Any:
        """A kubernetes.client.ApiClient for this control plane (close it when done)."""
        from kubernetes import config

        return config.new_client_from_config(config_file=str(self.kubeconfig))

    def stop(self) -> None:
        """Stop it now, whoever else uses it."""
        _script("down", timeout=120)

    def release(self, keep: bool = False) -> None:
        """Leave: the last session out stops it if a test session started it (keep=True leaves
        it running for good, as if started by `make cluster-up`)."""
        users = _users_dir()
        with _users_lock():
            (users / str(os.getpid())).unlink(missing_ok=True)
            marker = users / "started-by-tests"
            if keep:
                marker.unlink(missing_ok=True)
            elif marker.exists() and not _live_users():
                marker.unlink()
                self.stop()


# Sessions side by side (pytest runs, a bench) share one control plane: each registers its pid,
# so the first to finish does not pull it from under the others.
def _users_dir() -> Path:
    users = work_dir() / "cluster-users"
    users.mkdir(parents=True, exist_ok=True)
    return users


@contextlib.contextmanager
def _users_lock() -> Iterator[None]:
    with (_users_dir() / ".lock").open("w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        yield


def _live_users() -> list[int]:
    live = []
    for entry in _users_dir().iterdir():
        if not entry.name.isdigit():
            continue
        try:
            os.kill(int(entry.name), 0)
            live.append(int(entry.name))
        except ProcessLookupError:
            entry.unlink(missing_ok=True)
        except PermissionError:
            live.append(int(entry.name))
    return live


def _handle(started: bool) -> ClusterHandle:
    return ClusterHandle(
        kubeconfig=work_dir() / "cluster" / "kubeconfig",
        bin_dir=Path(_script("bin-dir")),
        started=started,
    )


def ensure_cluster() -> ClusterHandle:
    """Reuse the control plane if its kubeconfig answers, else build (cached) and start it.
    Call release() on the handle when done."""
    with _users_lock():
        handle = _handle(started=False)
        if not handle.answers():
            # A cold build takes minutes; later ones return at once.
            subprocess.run([str(CLUSTER_SH), "build"], check=True, timeout=1800)
            subprocess.run([str(CLUSTER_SH), "up"], check=True, timeout=300)
            (_users_dir() / "started-by-tests").touch()
            handle = _handle(started=True)
        (_users_dir() / str(os.getpid())).touch()
    return handle


def kubectl(
    *args: str, input: str | None = None, check: bool = True, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run the pinned kubectl against the local control plane (which must be up)."""
    return _handle(started=False).kubectl(*args, input=input, check=check, timeout=timeout)


def wait_until(
    probe: Callable[[], T | None], timeout: float, what: str, interval: float = 0.25
) -> T:
    """Poll probe() until it returns something truthy; fail after timeout seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(interval)


def gpu_node_manifest(
    name: str,
    gpus: int,
    product: str = "NVIDIA-H100-80GB-HBM3",
    memory_mib: int = 81559,
    *,
    cpu: str = "192",
    memory: str = "2048Gi",
    labels: dict[str, str] | None = None,
    taints: list[dict[str, str]] | None = None,
) -> dict[str, Any]:
    """A kwok-managed GPU node shaped like those in tests/gpu-nodes.yaml (extra labels/taints
    are added to the GPU ones)."""
    gpu_taint = {"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}
    resources = {"cpu": cpu, "memory": memory, "pods": "110", "nvidia.com/gpu": str(gpus)}
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "annotations": {"kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0"},
            "labels": {
                "type": "kwok",
                "kubernetes.io/arch": "amd64",
                "kubernetes.io/os": "linux",
                "kubernetes.io/hostname": name,
                "nvidia.com/gpu.present": "true",
                "nvidia.com/gpu.product": product,
                "nvidia.com/gpu.memory": str(memory_mib),
                "nvidia.com/gpu.count": str(gpus),
                **(labels or {}),
            },
        },
        "spec": {"taints": [gpu_taint, *(taints or [])]},
        # A Node's status is accepted on create (a kubelet registers this way); kwok keeps it.
        "status": {"allocatable": resources, "capacity": dict(resources)},
    }


def add_gpu_node(
    name: str,
    gpus: int,
    product: str = "NVIDIA-H100-80GB-HBM3",
    memory_mib: int = 81559,
    *,
    wait: float = 60,
    **kwargs: Any,
) -> dict[str, Any]:
    """Add a simulated GPU node and wait until kwok reports it Ready. Returns the manifest."""
    manifest = gpu_node_manifest(name, gpus, product, memory_mib, **kwargs)
    kubectl("apply", "-f", "-", input=yaml.safe_dump(manifest))
    if wait:
        kubectl("wait", "--for=condition=Ready", f"node/{name}", f"--timeout={wait:g}s")
    return manifest


def remove_node(name: str, timeout: float = 60) -> None:
    """Cordon, drain and delete a node. Draining while kwok still manages the node lets its
    pod-delete stage finish the pods; pods left on a deleted node linger ~40 s until pod GC
    (and hold up their namespace's deletion)."""
    if kubectl("get", "node", name, check=False).returncode != 0:
        return
    kubectl("cordon", name)
    kubectl(
        "delete",
        "pods",
        "--all-namespaces",
        f"--field-selector=spec.nodeName={name}",
        "--wait=true",
        f"--timeout={timeout:g}s",
        timeout=timeout + 30,
    )
    kubectl("delete", "node", name, "--ignore-not-found", "--wait=true")
