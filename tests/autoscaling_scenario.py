"""Autoscaling on engine load, end to end, for the e2e test and `make bench-autoscaling`.

The parts are real: a tritonserver with the bundled backend serving the tiny model (vLLM on the
CPU), Prometheus scraping its OpenAI port's /metrics labelled as the model's pod would be, KEDA
(operator and metrics apiserver) and kube-controller-manager's HPA controller scaling the
model's Deployment of kwok pods. The serving pods themselves are kwok's (no containers), so the
one real server stands for the engine of the replica that serves; the load is bounded.
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import openai
import requests
from kubernetes import client

from tests.autoscaling_stack import AutoscalingStack, ScrapeTarget, SeriesServer, wait_for
from tests.integration.models import Models
from tests.serving.conftest import (
    ROOT,
    rendered_files,
    start_tritonserver,
    stop_tritonserver,
    write_repository,
)

# Requests the tiny model runs at once: a few more clients than this and requests wait, so
# vllm:num_requests_waiting rises as it would on a full GPU.
MAX_NUM_SEQS = 2
START_TIMEOUT_S = 300


@dataclass(frozen=True)
class Engine:
    """The running tritonserver: the model's name, its OpenAI address, its log."""

    name: str
    openai: str  # host:port
    log: Path


def serving_python() -> Path:
    out = subprocess.run(
        [str(ROOT / "hack" / "serving-env.sh"), "--print"],
        check=True,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    return Path(out.stdout.strip()) / "venv" / "bin" / "python"


@contextmanager
def engine(name: str, work_dir: Path, openai_port: int) -> Iterator[Engine]:
    """tritonserver serving the tiny model as `name`, at most MAX_NUM_SEQS requests at once."""
    model_dir = work_dir / "tiny-model"
    subprocess.run(
        [str(serving_python()), str(ROOT / "hack" / "tiny_model.py"), str(model_dir)],
        check=True,
        timeout=300,
        capture_output=True,
    )
    files = rendered_files(name, model_dir, openai_port)
    engine_file = f"{name}/1/model.json"
    engine_args = {**json.loads(files[engine_file]), "max_num_seqs": MAX_NUM_SEQS}
    files[engine_file] = json.dumps(engine_args)
    repository = write_repository(work_dir / "model-repository", files)
    log = work_dir / "tritonserver.log"
    process, _ = start_tritonserver(repository, log, openai_port=openai_port)
    try:
        started = time.monotonic()
        while not _serves(f"http://127.0.0.1:{openai_port}/v1/models"):
            if process.poll() is not None or time.monotonic() - started > START_TIMEOUT_S:
                raise RuntimeError(f"tritonserver did not start:\n{log.read_text()[-4000:]}")
            time.sleep(0.5)
        yield Engine(name, f"127.0.0.1:{openai_port}", log)
    finally:
        stop_tritonserver(process)


def _serves(url: str) -> bool:
    try:
        return requests.get(url, timeout=2).status_code == 200
    except requests.RequestException:
        return False


class Load:
    """`clients` OpenAI clients streaming completions back to back until stop(); bounded by
    `max_seconds` whatever happens."""

    def __init__(self, server: Engine, clients: int, max_seconds: float = 180) -> None:
        self.server = server
        self.clients = clients
        self.max_seconds = max_seconds
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.completed = 0
        self.errors: list[str] = []
        self._lock = threading.Lock()

    def _client(self) -> None:
        api = openai.OpenAI(
            base_url=f"http://{self.server.openai}/v1", api_key="unused", timeout=120
        )
        deadline = time.monotonic() + self.max_seconds
        while not self._stop.is_set() and time.monotonic() < deadline:
            try:
                stream = api.completions.create(
                    model=self.server.name,
                    prompt="the quick brown fox",
                    max_tokens=96,
                    stream=True,
                    extra_body={"ignore_eos": True},
                )
                for _ in stream:
                    if self._stop.is_set():
                        break
                stream.close()
                with self._lock:
                    self.completed += 1
            except openai.OpenAIError as err:
                with self._lock:
                    self.errors.append(str(err))
                time.sleep(0.5)

    def start(self) -> None:
        for i in range(self.clients):
            thread = threading.Thread(target=self._client, name=f"load-{i}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=130)


@dataclass
class Timeline:
    """Seconds since a start, by event name, printed as a table."""

    t0: float = field(default_factory=time.monotonic)
    events: dict[str, float] = field(default_factory=dict)

    def mark(self, event: str) -> float:
        self.events[event] = time.monotonic() - self.t0
        return self.events[event]

    def between(self, first: str, then: str) -> float:
        return self.events[then] - self.events[first]


GATEWAY_QUEUE = "gateway_queue_depth"


def replicas(models: Models, name: str) -> int:
    deployment = models.apps.read_namespaced_deployment(name, models.namespace)
    return int(deployment.spec.replicas or 0)


def ready_pods(models: Models, name: str) -> int:
    status = models.apps.read_namespaced_deployment(name, models.namespace).status
    return int(status.ready_replicas or 0)


def scaled_object_ready(models: Models, name: str) -> bool:
    custom = client.CustomObjectsApi(models.apps.api_client)
    scaled = custom.get_namespaced_custom_object(
        "keda.sh", "v1alpha1", models.namespace, "scaledobjects", name
    )
    conditions = (scaled.get("status") or {}).get("conditions") or []
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def scale_out_and_in(
    models: Models,
    served: Engine,
    stack: AutoscalingStack,
    autoscaling: dict[str, Any],
    clients: int = 12,
    patience: float = 1.0,
) -> Timeline:
    """A model on the real engine: load until it has maxReplicas (3), then idle until it is back
    at minReplicas (1). `patience` stretches every wait (the default windows are long)."""
    name = served.name
    pod_labels = {"namespace": models.namespace, "pod": f"{name}-0"}
    gateway_targets = [t for t in stack.prometheus.targets if t.honor_labels]
    stack.prometheus.set_targets([*gateway_targets, ScrapeTarget(served.openai, labels=pod_labels)])
    models.create(
        name,
        servedModelName=served.name,
        tensorParallelSize=1,
        autoscaling={"minReplicas": 1, "maxReplicas": 3, "target": 2, **autoscaling},
    )
    models.wait_condition(name, "Ready", "True", timeout=90)
    autoscaling_condition = models.wait_condition(name, "Autoscaling", "True", "KEDA", timeout=60)
    assert "vllm:num_requests_waiting" in autoscaling_condition["message"]
    wait_for(lambda: scaled_object_ready(models, name), 90, "KEDA to take the ScaledObject")
    query = f'sum(vllm:num_requests_waiting{{namespace="{models.namespace}",model_name="{name}"}})'
    wait_for(lambda: stack.prometheus.query_value(query) is not None, 60, "the engine's series")
    assert replicas(models, name) == 1
    serving_since = models.condition(name, "Ready")["lastTransitionTime"]
    timeline = Timeline()
    load = Load(served, clients=clients, max_seconds=240 * patience)
    load.start()
    timeline.mark("load")
    try:
        wait_for(lambda: (stack.prometheus.query_value(query) or 0) >= 4, 60, "a queue")
        timeline.mark("queue")
        wait_for(lambda: replicas(models, name) > 1, 120 * patience, "a scale-out")
        timeline.mark("scale-out decided")
        wait_for(lambda: replicas(models, name) == 3, 120 * patience, "3 replicas")
        wait_for(lambda: ready_pods(models, name) == 3, 60, "3 ready pods")
        timeline.mark("3 replicas ready")
        wait_for(
            lambda: "All 3 replicas" in models.condition(name, "Ready").get("message", ""),
            60,
            "Ready with 3 replicas",
        )
        timeline.mark("model Ready with 3")
        assert models.get(name)["status"]["replicas"] == 3
    finally:
        load.stop()
    assert load.completed > 0, load.errors[:3]
    wait_for(lambda: stack.prometheus.query_value(query) == 0, 60, "an empty queue")
    timeline.mark("idle")
    wait_for(lambda: replicas(models, name) == 1, 180 * patience, "the scale-in")
    timeline.mark("scaled in")
    ready = models.wait_condition(name, "Ready", "True", timeout=60)
    # Scaling out and back in is not a rollout: Ready never left True on the way.
    assert ready["lastTransitionTime"] == serving_since, models.events(name)
    return timeline


def zero_and_back(
    models: Models,
    gateway: SeriesServer,
    stack: AutoscalingStack,
    autoscaling: dict[str, Any],
    idle_seconds: int,
    patience: float = 1.0,
) -> Timeline:
    """A model with minReplicas 0 and no engine series: it goes to zero when new and idle, wakes
    on the gateway's queue, and goes back to zero when that empties."""
    name = "sleepy"
    labels = {"namespace": models.namespace, "model": name}
    gateway.set(GATEWAY_QUEUE, labels, 0)
    activation = f'sum({GATEWAY_QUEUE}{{namespace="{models.namespace}",model="{name}"}})'
    models.create(
        name,
        tensorParallelSize=1,
        autoscaling={
            "minReplicas": 0,
            "maxReplicas": 2,
            **autoscaling,
            "scaleToZero": {"activationQuery": activation, "idleSeconds": idle_seconds},
        },
    )
    models.wait_condition(name, "Autoscaling", "True", "KEDA", timeout=60)
    timeline = Timeline()
    wait_for(lambda: replicas(models, name) == 0, 120 * patience, "the idle model at zero")
    timeline.mark("new model at zero")
    zero = models.wait_condition(name, "Ready", "False", "ScaledToZero", timeout=60)
    assert "activation query wakes it" in zero["message"]
    wait_for(lambda: not models.pods(name), 60, "its pods to go")
    gateway.set(GATEWAY_QUEUE, labels, 3)
    timeline.mark("gateway queue")
    wait_for(lambda: replicas(models, name) >= 1, 90 * patience, "the wake-up")
    timeline.mark("woken")
    models.wait_condition(name, "Ready", "True", timeout=60)
    timeline.mark("ready again")
    assert replicas(models, name) == 1  # the wake-only trigger never asks for more
    gateway.set(GATEWAY_QUEUE, labels, 0)
    timeline.mark("gateway idle")
    wait_for(lambda: replicas(models, name) == 0, 120 * patience, "back at zero")
    timeline.mark("back at zero")
    return timeline
