"""The autoscaling stack is real: KEDA (operator and metrics apiserver) and Prometheus, built
from the Go module proxy, scale a kwok Deployment on a series the test serves.

The chain under test: the test's HTTP server (a gateway's queue depth, standing in for the
real gateway) -> Prometheus (1 s scrapes) -> KEDA's prometheus scaler -> KEDA's operator
(activation, scale to and from zero) and, through the aggregator, KEDA's metrics apiserver ->
kube-controller-manager's HPA controller (5 s syncs, hack/cluster.sh) -> the Deployment -> kwok
pods Ready.

Each step's time is printed and written to $WORK_DIR/keda-stack/timings.json: series change
-> Prometheus has it -> Deployment replicas changed -> pods Ready (or gone).
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable, Iterator
from typing import Any, cast

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from tests.autoscaling_stack import AutoscalingStack, ScrapeTarget, SeriesServer
from tests.kube import ClusterHandle, work_dir

pytestmark = pytest.mark.cluster

SERIES = "gateway_queue_depth"
POLL_S = 0.1
# KEDA times its cooldowns from creationTimestamp / status.lastActiveTime, which the API keeps to
# the second; its 1 s polls and Prometheus' 1 s scrapes shift them by up to a second more.
SLACK_S = 2
TIMINGS: dict[str, dict[str, float]] = {}


@pytest.fixture(scope="module")
def stack(
    cluster: ClusterHandle, gateway: SeriesServer, request: pytest.FixtureRequest
) -> Iterator[AutoscalingStack]:
    # Kept after the run (logs); cleared by the next one.
    wd = work_dir() / "keda-stack"
    shutil.rmtree(wd, ignore_errors=True)
    stack = AutoscalingStack(
        cluster.kubeconfig,
        wd,
        targets=[ScrapeTarget(gateway.address, labels={"job": "gateway"}, honor_labels=True)],
        kubectl=cluster.bin_dir / "kubectl",
    )
    t0 = time.monotonic()
    stack.start()
    record(
        "stack", "start", {"Prometheus ready, KEDA's APIService Available": time.monotonic() - t0}
    )
    yield stack
    stack.stop()
    (wd / "timings.json").write_text(json.dumps(TIMINGS, indent=2) + "\n")
    # Shown without -s too: the benchmark table is made from these lines.
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    if capture is not None and reporter is not None:
        with capture.global_and_fixture_disabled():
            reporter.write_line("")
            for test, steps in TIMINGS.items():
                for step, seconds in steps.items():
                    reporter.write_line(f"[keda-stack] {test} / {step}: {seconds:.2f} s")
            reporter.write_line(f"[keda-stack] timings: {wd / 'timings.json'}")


def follow(
    steps: dict[str, Callable[[], bool]],
    timeout: float,
    stack: AutoscalingStack,
    since: float | None = None,
) -> dict[str, float]:
    """Poll every step each POLL_S until all hold; the seconds (from `since`, default now)
    until each first held. A timeout fails with the steps still open and the stack's logs."""
    t0 = since if since is not None else time.monotonic()
    deadline = time.monotonic() + timeout
    seen: dict[str, float] = {}
    while len(seen) < len(steps):
        for name, probe in steps.items():
            if name not in seen and probe():
                seen[name] = round(time.monotonic() - t0, 2)
        if len(seen) == len(steps):
            break
        if time.monotonic() > deadline:
            stack.check_alive()
            open_steps = [n for n in steps if n not in seen]
            pytest.fail(
                f"after {timeout:g}s still waiting for {open_steps} (done: {seen})\n"
                f"{stack.diagnostics()}"
            )
        time.sleep(POLL_S)
    return seen


def record(test: str, step: str, times: dict[str, float]) -> None:
    TIMINGS.setdefault(test, {}).update({f"{step}: {k}": round(v, 2) for k, v in times.items()})
    print(f"[keda-stack] {test} / {step}: " + ", ".join(f"{k} {v:.2f} s" for k, v in times.items()))


def kwok_deployment(name: str, replicas: int) -> dict[str, Any]:
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "nodeSelector": {"type": "kwok"},
                    "tolerations": [
                        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
                    ],
                    "containers": [
                        {
                            "name": "main",
                            "image": "registry.k8s.io/pause:3.10",  # kwok plays the kubelet
                            "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}},
                        }
                    ],
                },
            },
        },
    }


def scaled_object(
    name: str,
    namespace: str,
    prometheus_url: str,
    *,
    min_replicas: int,
    max_replicas: int,
    threshold: float,
    activation_threshold: float,
    cooldown_s: int,
    initial_cooldown_s: int,
    scale_down_window_s: int,
) -> dict[str, Any]:
    """A hand-written KEDA ScaledObject: one prometheus trigger on the gateway's series."""
    return {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "scaleTargetRef": {"name": name},
            "pollingInterval": 1,
            "cooldownPeriod": cooldown_s,
            "initialCooldownPeriod": initial_cooldown_s,
            "minReplicaCount": min_replicas,
            "maxReplicaCount": max_replicas,
            "advanced": {
                "horizontalPodAutoscalerConfig": {
                    "behavior": {"scaleDown": {"stabilizationWindowSeconds": scale_down_window_s}}
                }
            },
            "triggers": [
                {
                    "type": "prometheus",
                    "metadata": {
                        "serverAddress": prometheus_url,
                        "query": f'sum({SERIES}{{namespace="{namespace}"}})',
                        "threshold": str(threshold),
                        "activationThreshold": str(activation_threshold),
                        # An empty answer (the series gone) counts as 0, not as an error.
                        "ignoreNullValues": "true",
                    },
                }
            ],
        },
    }


class Target:
    """The Deployment under test and its pods, read each poll."""

    def __init__(self, api_client: Any, namespace: str, name: str) -> None:
        self.apps = client.AppsV1Api(api_client)
        self.core = client.CoreV1Api(api_client)
        self.custom = client.CustomObjectsApi(api_client)
        self.autoscaling = client.AutoscalingV2Api(api_client)
        self.namespace = namespace
        self.name = name

    def spec_replicas(self) -> int:
        dep = self.apps.read_namespaced_deployment(self.name, self.namespace)
        return int(dep.spec.replicas or 0)

    def ready_replicas(self) -> int:
        dep = self.apps.read_namespaced_deployment_status(self.name, self.namespace)
        return int(dep.status.ready_replicas or 0) if dep.status else 0

    def pods(self) -> int:
        """Pods of the Deployment, terminating ones included."""
        return len(
            self.core.list_namespaced_pod(self.namespace, label_selector=f"app={self.name}").items
        )

    def replicas_are(self, n: int) -> Callable[[], bool]:
        return lambda: self.spec_replicas() == n

    def ready_are(self, n: int) -> Callable[[], bool]:
        return lambda: self.ready_replicas() == n and self.pods() == n

    def scaled_object(self) -> dict[str, Any]:
        obj = self.custom.get_namespaced_custom_object(
            "keda.sh", "v1alpha1", self.namespace, "scaledobjects", self.name
        )
        return cast(dict[str, Any], obj)

    def so_condition(self, kind: str) -> str | None:
        for cond in self.scaled_object().get("status", {}).get("conditions", []):
            if cond.get("type") == kind:
                return str(cond.get("status"))
        return None

    def hpa_condition(self, kind: str) -> str | None:
        try:
            hpa = self.autoscaling.read_namespaced_horizontal_pod_autoscaler(
                f"keda-hpa-{self.name}", self.namespace
            )
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        for cond in (hpa.status.conditions if hpa.status else None) or []:
            if cond.type == kind:
                return str(cond.status)
        return None


def prometheus_has(
    stack: AutoscalingStack, namespace: str, value: float | None
) -> Callable[[], bool]:
    query = f'{SERIES}{{namespace="{namespace}"}}'
    return lambda: stack.prometheus.query_value(query) == value


def test_keda_scales_a_deployment_out_and_back_on_a_prometheus_series(
    api_client: Any, namespace: str, stack: AutoscalingStack, gateway: SeriesServer
) -> None:
    test = "scale-out-and-in"
    name = "scale-out"
    labels = {"namespace": namespace}
    gateway.set(SERIES, labels, 0)
    t = Target(api_client, namespace, name)
    client.AppsV1Api(api_client).create_namespaced_deployment(
        namespace, cast(client.V1Deployment, kwok_deployment(name, 1))
    )
    so = scaled_object(
        name,
        namespace,
        stack.prometheus_url,
        min_replicas=1,
        max_replicas=4,
        threshold=5,
        activation_threshold=0,
        cooldown_s=5,
        initial_cooldown_s=0,
        scale_down_window_s=5,
    )
    t.custom.create_namespaced_custom_object("keda.sh", "v1alpha1", namespace, "scaledobjects", so)
    # KEDA made the HPA, and the HPA controller reads the metric through the aggregator.
    record(
        test,
        "setup",
        follow(
            {
                "prometheus has the series": prometheus_has(stack, namespace, 0),
                "ScaledObject Ready": lambda: t.so_condition("Ready") == "True",
                "HPA ScalingActive": lambda: t.hpa_condition("ScalingActive") == "True",
                "pods Ready": t.ready_are(1),
            },
            90,
            stack,
        ),
    )
    assert stack.keda.external_metric(namespace, "s0-prometheus", name) == [0.0]

    # Queue 30 at 5 per replica: 6 wanted, capped at maxReplicaCount 4.
    gateway.set(SERIES, labels, 30)
    up = follow(
        {
            "prometheus has it": prometheus_has(stack, namespace, 30),
            "replicas 4": t.replicas_are(4),
            "pods Ready": t.ready_are(4),
        },
        90,
        stack,
    )
    record(test, "queue 0 -> 30", up)
    assert stack.keda.external_metric(namespace, "s0-prometheus", name) == [30.0]
    assert t.hpa_condition("ScalingLimited") == "True"  # 6 wanted, 4 allowed

    # The queue drains: back to minReplicaCount once the 5 s stabilization window holds no
    # higher recommendation (counted from the HPA's last high one, so possibly < 5 s from here).
    gateway.set(SERIES, labels, 0)
    down = follow(
        {
            "prometheus has it": prometheus_has(stack, namespace, 0),
            "replicas 1": t.replicas_are(1),
            "pods gone": t.ready_are(1),
        },
        120,
        stack,
    )
    record(test, "queue 30 -> 0", down)
    t.custom.delete_namespaced_custom_object(
        "keda.sh", "v1alpha1", namespace, "scaledobjects", name
    )


def test_keda_scales_to_zero_and_activates_on_a_series_outside_the_pods(
    api_client: Any, namespace: str, stack: AutoscalingStack, gateway: SeriesServer
) -> None:
    test = "scale-to-zero"
    name = "to-zero"
    labels = {"namespace": namespace}
    initial_cooldown, cooldown, window = 10, 15, 3
    gateway.set(SERIES, labels, 0)
    t = Target(api_client, namespace, name)
    client.AppsV1Api(api_client).create_namespaced_deployment(
        namespace, cast(client.V1Deployment, kwok_deployment(name, 1))
    )
    follow({"pods Ready": t.ready_are(1)}, 60, stack)
    so = scaled_object(
        name,
        namespace,
        stack.prometheus_url,
        min_replicas=0,
        max_replicas=3,
        threshold=5,
        activation_threshold=2,
        cooldown_s=cooldown,
        initial_cooldown_s=initial_cooldown,
        scale_down_window_s=window,
    )
    t.custom.create_namespaced_custom_object("keda.sh", "v1alpha1", namespace, "scaledobjects", so)

    # Never active yet: to zero once initialCooldownPeriod has passed since creation (without
    # it, a new target is scaled to zero at once, before its first request).
    idle = follow({"replicas 0": t.replicas_are(0), "pods gone": t.ready_are(0)}, 60, stack)
    record(test, "new, idle (from ScaledObject creation)", idle)
    assert idle["replicas 0"] >= initial_cooldown - SLACK_S, "to zero within initialCooldownPeriod"

    # Below the activation threshold: stays at zero.
    gateway.set(SERIES, labels, 1)
    follow({"prometheus has it": prometheus_has(stack, namespace, 1)}, 30, stack)
    hold_until = time.monotonic() + 5
    while time.monotonic() < hold_until:
        assert t.spec_replicas() == 0, "activated below activationThreshold"
        time.sleep(0.5)
    assert t.so_condition("Active") == "False"

    # Above it: KEDA scales 0 -> 1, then the HPA 1 -> 3 (12 at 5 per replica).
    gateway.set(SERIES, labels, 12)
    act = follow(
        {
            "prometheus has it": prometheus_has(stack, namespace, 12),
            "replicas 1 (KEDA activation)": lambda: t.spec_replicas() >= 1,
            "replicas 3 (HPA)": t.replicas_are(3),
            "pods Ready": t.ready_are(3),
        },
        90,
        stack,
    )
    record(test, "queue 1 -> 12 (from 0 replicas)", act)
    assert t.so_condition("Active") == "True"

    # The gateway's series vanishes (empty answer, ignoreNullValues): the HPA takes 3 -> 1
    # after its stabilization window; cooldownPeriod governs only the last step, 1 -> 0.
    gateway.remove(SERIES, labels)
    t_down = time.monotonic()
    steps = {
        "prometheus has no series": prometheus_has(stack, namespace, None),
        "replicas 1 (HPA)": t.replicas_are(1),
        "replicas 0 (KEDA cooldown)": t.replicas_are(0),
        "pods gone": t.ready_are(0),
    }
    down = follow(steps, cooldown + 60, stack, since=t_down)
    record(test, "series gone (from 3 replicas)", down)
    assert down["replicas 1 (HPA)"] < down["replicas 0 (KEDA cooldown)"]
    assert down["replicas 0 (KEDA cooldown)"] >= cooldown - SLACK_S, "to zero within cooldownPeriod"
    t.custom.delete_namespaced_custom_object(
        "keda.sh", "v1alpha1", namespace, "scaledobjects", name
    )
