"""Handing spec.replicas between the model and an autoscaler on the real control plane: the
Deployment never drops below the floor on the way (server-side apply resets a field its manager
stops sending unless the ownership was handed over first).

The autoscaler is the real HPA controller of kube-controller-manager (no KEDA here).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from kubernetes import client

from tests.integration.models import Models, models, operator, wait_for
from tests.kube import ClusterHandle

__all__ = ["models", "operator"]  # fixtures


class ReplicasSampler:
    """Reads the Deployment's .spec.replicas every 100 ms in a thread."""

    def __init__(self, apps: client.AppsV1Api, namespace: str, name: str) -> None:
        self.apps, self.namespace, self.name = apps, namespace, name
        self.samples: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            deployment = self.apps.read_namespaced_deployment(self.name, self.namespace)
            self.samples.append(deployment.spec.replicas)
            self._stop.wait(0.1)

    @contextmanager
    def running(self) -> Iterator[ReplicasSampler]:
        self._thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            self._thread.join(timeout=5)


def _replicas(models: Models, name: str) -> int:
    return int(models.apps.read_namespaced_deployment(name, models.namespace).spec.replicas)


def _hpa_names(models: Models) -> list[str]:
    autoscaling = client.AutoscalingV2Api(models.apps.api_client)
    items = autoscaling.list_namespaced_horizontal_pod_autoscaler(models.namespace).items
    return [h.metadata.name for h in items]


def _ready_with(models: Models, name: str, replicas: int) -> bool:
    ready = models.condition(name, "Ready")
    status = models.get(name).get("status") or {}
    return ready.get("status") == "True" and status.get("readyReplicas") == replicas


def _autoscaler(models: Models, name: str) -> str | None:
    autoscaler: str | None = (models.get(name).get("status") or {}).get("autoscaler")
    return autoscaler


def replicas_through_autoscaling(
    cluster: ClusterHandle, models: Models, autoscaler: str, hand_scaling_kept: bool
) -> list[int]:
    """replicas: 2, kubectl scale to 3, autoscaling {3, 5} (`autoscaler`: the Autoscaling
    reason), back to replicas: 3, kubectl scale to 4; the Deployment's replicas sampled every
    100 ms from before the first switch to the end. `hand_scaling_kept`: also scale the
    Deployment by hand while autoscaled and check the operator leaves it (where the autoscaler
    has no metric to move it back)."""
    models.create("handoff", tensorParallelSize=1, replicas=2)
    models.wait_condition("handoff", "Ready", "True", timeout=60)
    # kubectl scale before the switch: the model's scale subresource, as a user scales it.
    cluster.kubectl("scale", "-n", models.namespace, "tvm/handoff", "--replicas=3")
    wait_for(lambda: _ready_with(models, "handoff", 3), 60, "Ready with 3 replicas")

    sampler = ReplicasSampler(models.apps, models.namespace, "handoff")
    with sampler.running():
        # replicas -> autoscaling (a merge patch's null removes spec.replicas).
        autoscaling = {"minReplicas": 3, "maxReplicas": 5}
        models.patch_spec("handoff", replicas=None, autoscaling=autoscaling)
        models.wait_condition("handoff", "Autoscaling", "True", autoscaler, timeout=60)
        # Long enough for the HPA controller to have looked at its new target (5 s syncs).
        time.sleep(20)
        assert min(sampler.samples) >= 3, sampler.samples
        if hand_scaling_kept:
            # kubectl scale of the Deployment while autoscaled: the operator leaves the
            # replicas to whoever scales it (the HPA, or this user) and never takes them back.
            cluster.kubectl("scale", "-n", models.namespace, "deployment/handoff", "--replicas=4")
            wait_for(lambda: _ready_with(models, "handoff", 4), 60, "Ready with 4 replicas")
            time.sleep(3)
            assert _replicas(models, "handoff") == 4
        # autoscaling -> replicas: the autoscaler goes, spec.replicas drives again.
        models.patch_spec("handoff", autoscaling=None, replicas=3)
        wait_for(lambda: _autoscaler(models, "handoff") is None, 30, "the autoscaler to go")
        wait_for(lambda: _ready_with(models, "handoff", 3), 60, "Ready with 3 replicas")
        # kubectl scale after the switch back.
        cluster.kubectl("scale", "-n", models.namespace, "tvm/handoff", "--replicas=4")
        wait_for(lambda: _ready_with(models, "handoff", 4), 60, "Ready with 4 replicas")
    assert len(sampler.samples) > 100, "the sampler did not run through the switches"
    return sampler.samples


def test_replicas_to_an_hpa_and_back_never_takes_the_deployment_below_the_floor(
    cluster: ClusterHandle, models: Models
) -> None:
    samples = replicas_through_autoscaling(cluster, models, "HorizontalPodAutoscaler", True)
    assert min(samples) >= 3, f"the Deployment went below 3: {samples}"
    assert "handoff" not in _hpa_names(models)
