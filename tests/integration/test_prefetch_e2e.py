"""spec.storage.prefetch on the real control plane: the download Job runs first, and the serving
Deployment appears only once the weights are cached.

kwok completes the Job's pod (its pod-complete stage), as a finished download would; the Job
controller of kube-controller-manager then marks the Job Complete.
"""

from __future__ import annotations

from kubernetes import client

from tests.integration.models import Models, models, operator, wait_for

__all__ = ["models", "operator"]  # fixtures


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
