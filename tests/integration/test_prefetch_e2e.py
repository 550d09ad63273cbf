"""spec.storage.prefetch on the real control plane: the download Job runs first, and the serving
Deployment appears only once the weights are cached.

kwok completes the Job's pod (its pod-complete stage), as a finished download would; the Job
controller of kube-controller-manager then marks the Job Complete.

kwok runs no containers, so for the download's progress the test runs the Job's own program (its
command and environment, read from the Job) as a local process against the Hub stand-in, and
plays the container runtime and the kubelet for it: the program's output goes, in CRI log
format, into the file kwok serves as the log of `prefetch` containers (hack/cluster.sh), and its
exit into the pod's status. A pod of the image HOLD_IMAGE stays Running until then.
"""

from __future__ import annotations

import datetime
import json
import os
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from tests.integration.models import Models, models, operator, wait_for
from tests.kube import work_dir
from tests.unit.hub_standin import HubStandIn, serve
from tests.unit.test_prefetch import REPO, make_repo

__all__ = ["models", "operator"]  # fixtures
HOLD_IMAGE = "kwok.invalid/hold-running"  # hack/cluster.sh: kwok keeps such a pod Running
SHARD = "model-00002-of-00002.safetensors"


def _shared_claim(models: Models) -> str:
    """A PersistentVolumeClaim bound to a hostPath volume made for it (no provisioner here)."""
    name = f"models-{models.namespace}"[:63]
    models.core.create_persistent_volume(
        client.V1PersistentVolume(
            metadata=client.V1ObjectMeta(name=name, labels={"tritonvllm.io/test": "true"}),
            spec=client.V1PersistentVolumeSpec(
                capacity={"storage": "1Gi"},
                access_modes=["ReadWriteMany"],
                storage_class_name="",
                persistent_volume_reclaim_policy="Delete",
                host_path=client.V1HostPathVolumeSource(path=f"/tmp/{name}"),
                claim_ref=client.V1ObjectReference(namespace=models.namespace, name="models"),
            ),
        )
    )
    models.core.create_namespaced_persistent_volume_claim(
        models.namespace,
        client.V1PersistentVolumeClaim(
            metadata=client.V1ObjectMeta(name="models"),
            spec=client.V1PersistentVolumeClaimSpec(
                access_modes=["ReadWriteMany"],
                storage_class_name="",
                volume_name=name,
                resources=client.V1VolumeResourceRequirements(requests={"storage": "1Gi"}),
            ),
        ),
    )
    return name


def _deployments(models: Models) -> list[str]:
    items = models.apps.list_namespaced_deployment(models.namespace).items
    return [d.metadata.name for d in items]


def test_prefetch_caches_the_weights_before_the_serving_pods_start(models: Models) -> None:
    volume = _shared_claim(models)
    try:
        models.create(
            "cached",
            tensorParallelSize=1,
            storage={"existingClaim": "models", "prefetch": True},
        )
        models.wait_condition("cached", "Ready", "False", "Caching", timeout=30)
        batch = client.BatchV1Api(models.custom.api_client)
        (job,) = wait_for(
            lambda: batch.list_namespaced_job(models.namespace).items, 30, "the prefetch Job"
        )
        assert job.metadata.name.startswith("cached-prefetch-")
        assert job.metadata.owner_references[0].name == "cached"
        cond = models.wait_condition("cached", "Cached", "True", "Downloaded", timeout=90)
        assert "models" in cond["message"]
        wait_for(lambda: "cached" in _deployments(models), 30, "the Deployment")
        models.wait_condition("cached", "Ready", "True", timeout=90)
        # The Deployment was made only after the download had completed.
        done = batch.read_namespaced_job(job.metadata.name, models.namespace).status
        deployment = models.apps.read_namespaced_deployment("cached", models.namespace)
        assert done.completion_time is not None
        assert deployment.metadata.creation_timestamp >= done.completion_time
    finally:
        models.core.delete_persistent_volume(volume)


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[HubStandIn]:
    make_repo(tmp_path / "hub", REPO)
    with serve(HubStandIn(tmp_path / "hub")) as running:
        yield running


def _container_log() -> Path:
    """The file kwok serves as the log of every `prefetch` container (hack/cluster.sh)."""
    return work_dir() / "cluster" / "container-logs" / "prefetch.log"


def _run_as_the_pod(job: client.V1Job, cache: Path, termination: Path) -> subprocess.Popen[str]:
    """The Job's container command and environment, as a local process (a cache of its own)."""
    container = job.spec.template.spec.containers[0]
    env = {e.name: e.value for e in container.env if e.value is not None}
    env |= {
        "PATH": os.environ["PATH"],
        "HF_HOME": str(cache),
        "PREFETCH_TERMINATION_LOG": str(termination),
        # The stand-in holds the shard until the test releases it: no read timeout before that.
        "HF_HUB_DOWNLOAD_TIMEOUT": "120",
    }
    command = [sys.executable, *container.command[1:]]  # python3 -c SCRIPT REPO REVISION
    return subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def _as_container_runtime(process: subprocess.Popen[str], log: Path) -> list[threading.Thread]:
    """Copy the program's stdout and stderr into `log` line by line, as containerd writes a
    CRI log (`<time> <stream> F <line>`)."""
    lock = threading.Lock()

    def copy(stream: Any, name: str) -> None:
        for line in stream:
            now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
            with lock, log.open("a", encoding="utf-8") as out:
                out.write(f"{now} {name} F {line.rstrip(chr(10))}\n")

    threads = [
        threading.Thread(target=copy, args=(process.stdout, "stdout"), daemon=True),
        threading.Thread(target=copy, args=(process.stderr, "stderr"), daemon=True),
    ]
    for thread in threads:
        thread.start()
    return threads


def _as_kubelet_the_container_ended(
    core: client.CoreV1Api, pod: client.V1Pod, code: int, message: str
) -> None:
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    terminated = {"exitCode": code, "message": message, "startedAt": now, "finishedAt": now}
    status: dict[str, Any] = {
        "phase": "Succeeded" if code == 0 else "Failed",
        "containerStatuses": [
            {
                "name": "prefetch",
                "image": HOLD_IMAGE,
                "imageID": "",
                "ready": False,
                "restartCount": 0,
                "state": {"terminated": {**terminated, "reason": "Completed"}},
            }
        ],
    }
    core.patch_namespaced_pod_status(pod.metadata.name, pod.metadata.namespace, {"status": status})


def test_a_running_download_shows_its_bytes_in_cached_until_the_weights_are_in(
    models: Models, hub: HubStandIn, tmp_path: Path
) -> None:
    hub.stall_after[SHARD] = 12 * 1024**2  # halfway through the 24 MiB shard, until released
    log = _container_log()
    log.write_text("")
    volume = _shared_claim(models)
    process: subprocess.Popen[str] | None = None
    try:
        models.create(
            "progress",
            model=REPO,
            tensorParallelSize=1,
            triton={"image": HOLD_IMAGE},
            storage={"existingClaim": "models", "prefetch": True, "endpoint": hub.url},
        )
        batch = client.BatchV1Api(models.custom.api_client)
        (job,) = wait_for(
            lambda: batch.list_namespaced_job(models.namespace).items, 30, "the prefetch Job"
        )
        selector = f"batch.kubernetes.io/job-name={job.metadata.name}"

        def running() -> client.V1Pod | None:
            pods = models.core.list_namespaced_pod(models.namespace, label_selector=selector)
            return next((p for p in pods.items if p.status.phase == "Running"), None)

        pod = wait_for(running, 30, "the prefetch pod Running")
        termination = tmp_path / "termination-log"
        process = _run_as_the_pod(job, tmp_path / "cache", termination)
        copiers = _as_container_runtime(process, log)

        def progress() -> tuple[float, float, int] | None:
            message = models.condition("progress", "Cached").get("message", "")
            found = re.match(r"Downloading: ([\d.]+) MiB of ([\d.]+) MiB \((\d+)%\) of ", message)
            if not found or not 0 < int(found[3]) < 100:
                return None
            return float(found[1]), float(found[2]), int(found[3])

        done, total, share = wait_for(progress, 60, "Cached to show the bytes downloaded")
        assert 10 <= done < total and 26 <= total < 27, (done, total, share)
        assert models.condition("progress", "Cached")["reason"] == "Downloading"
        assert models.condition("progress", "Ready")["reason"] == "Caching"

        hub.release.set()  # the rest of the shard comes
        assert process.wait(timeout=120) == 0
        for copier in copiers:
            copier.join(timeout=10)
        report = json.loads(termination.read_text())
        assert report["event"] == "done"
        _as_kubelet_the_container_ended(models.core, pod, 0, termination.read_text())
        cond = models.wait_condition("progress", "Cached", "True", "Downloaded", timeout=60)
        assert (
            f"{report['total'] / 1024**2:.1f} MiB of {REPO}@{hub.commit(REPO)[:12]}"
            in (cond["message"])
        )
        wait_for(lambda: "progress" in _deployments(models), 30, "the Deployment")
    finally:
        hub.release.set()
        if process is not None and process.poll() is None:
            process.kill()
        models.core.delete_persistent_volume(volume)
