"""spec.autoscaling on the real control plane: the API's refusals, `kubectl scale`, the real HPA
controller driving a Deployment the operator leaves its replicas to, and KEDA's CRDs appearing.

(The scaling itself, on a real engine's metrics through a real Prometheus and KEDA, is in
test_autoscaling_e2e.py.)
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from kubernetes import client

from tests.integration.models import Models, models, running_operator, wait_for
from tests.kube import ClusterHandle
from tests.operator_process import OperatorProcess

__all__ = ["models"]  # fixtures

ROOT = Path(__file__).resolve().parents[2]
KEDA_CRD = "scaledobjects.keda.sh"
AUTOSCALED = {"tensorParallelSize": 1, "autoscaling": {"minReplicas": 2, "maxReplicas": 3}}


def keda_crds() -> Path:
    """KEDA's CRDs as its module ships them (hack/autoscaling-tools.sh, cached)."""
    out = subprocess.run(
        [str(ROOT / "hack" / "autoscaling-tools.sh")],
        check=True,
        capture_output=True,
        text=True,
        timeout=3600,
    )
    return Path(out.stdout.strip().splitlines()[-1]) / "crds"


def remove_keda_crds(cluster: ClusterHandle) -> None:
    cluster.kubectl("delete", "crd", KEDA_CRD, "--ignore-not-found", "--wait=true")


@pytest.fixture(scope="module")
def operator(
    cluster: ClusterHandle, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OperatorProcess]:
    """An operator started in a cluster without KEDA (its CRDs are installed by a test)."""
    remove_keda_crds(cluster)
    with running_operator(cluster, tmp_path_factory.mktemp("operator") / "operator.log") as op:
        yield op


def _deployment_replicas(models: Models, name: str) -> int | None:
    deployment = models.apps.read_namespaced_deployment(name, models.namespace)
    return deployment.spec.replicas  # type: ignore[no-any-return]


def _replicas_managers(models: Models, name: str) -> set[str]:
    """Field managers that own the Deployment's spec.replicas."""
    deployment = models.apps.read_namespaced_deployment(name, models.namespace)
    return {
        entry.manager
        for entry in deployment.metadata.managed_fields or []
        if "f:replicas" in ((entry.fields_v1 or {}).get("f:spec") or {})
    }


def _dry_run(cluster: ClusterHandle, namespace: str, spec: dict[str, object]) -> str:
    model = {
        "apiVersion": "tritonvllm.io/v1alpha1",
        "kind": "TritonVLLMModel",
        "metadata": {"name": "refused"},
        "spec": {"model": "meta-llama/Llama-3.1-8B-Instruct", **spec},
    }
    out = cluster.kubectl(
        "apply",
        "--dry-run=server",
        "-n",
        namespace,
        "-f",
        "-",
        input=yaml.safe_dump(model),
        check=False,
    )
    assert out.returncode != 0, f"accepted: {spec}"
    return out.stderr


def test_the_api_refuses_autoscaling_that_cannot_work_and_says_what_to_change(
    cluster: ClusterHandle, operator: OperatorProcess, namespace: str
) -> None:
    err = _dry_run(cluster, namespace, {"autoscaling": {"minReplicas": 3, "maxReplicas": 2}})
    assert "minReplicas must not exceed autoscaling.maxReplicas" in err
    err = _dry_run(cluster, namespace, {"autoscaling": {"minReplicas": 0, "maxReplicas": 2}})
    assert "needs autoscaling.scaleToZero.activationQuery" in err
    assert "series vanish with its last pod" in err
    err = _dry_run(cluster, namespace, {"replicas": 2, "autoscaling": {"maxReplicas": 2}})
    assert "cannot both drive the replicas" in err


def test_kubectl_scale_sets_the_replicas_and_the_deployment_follows(
    cluster: ClusterHandle, models: Models
) -> None:
    models.create("scaled", tensorParallelSize=1)
    models.wait_condition("scaled", "Ready", "True", timeout=60)
    cluster.kubectl("scale", "-n", models.namespace, "tvm/scaled", "--replicas=3")
    wait_for(lambda: _deployment_replicas(models, "scaled") == 3, 30, "3 replicas")
    wait_for(
        lambda: "All 3 replicas" in models.wait_condition("scaled", "Ready", "True")["message"],
        60,
        "Ready with 3 replicas",
    )
    wait_for(lambda: models.get("scaled")["status"].get("currentReplicas") == 3, 30, "status")
    scale = cluster.kubectl(
        "get",
        "--raw",
        f"/apis/tritonvllm.io/v1alpha1/namespaces/{models.namespace}/tritonvllmmodels/scaled/scale",
    ).stdout
    assert '"replicas":3' in scale.replace(" ", "")
    assert "app.kubernetes.io/instance=scaled" in scale


def test_without_keda_an_hpa_drives_the_replicas_and_the_operator_leaves_them(
    cluster: ClusterHandle, models: Models
) -> None:
    models.create("hpa", **AUTOSCALED)
    autoscaling = models.wait_condition("hpa", "Autoscaling", "True", "HorizontalPodAutoscaler")
    assert "KEDA's CRDs are not served" in autoscaling["message"]
    autoscaling_api = client.AutoscalingV2Api(models.apps.api_client)
    hpa = autoscaling_api.read_namespaced_horizontal_pod_autoscaler("hpa", models.namespace)
    assert (hpa.spec.min_replicas, hpa.spec.max_replicas) == (2, 3)
    assert hpa.spec.metrics[0].pods.metric.name == "vllm:num_requests_waiting"
    # The real HPA controller raises the Deployment (created with 1) to its minimum; the
    # operator, whose apply leaves replicas out, never takes them back.
    wait_for(lambda: _deployment_replicas(models, "hpa") == 2, 60, "the HPA's 2 replicas")
    models.wait_condition("hpa", "Ready", "True", timeout=60)
    assert "operator" not in " ".join(_replicas_managers(models, "hpa"))
    # The status follows the Deployment on the operator's next look (it may have turned Ready
    # a moment before the HPA's change reached it).
    wait_for(lambda: models.get("hpa")["status"].get("replicas") == 2, 60, "status replicas 2")
    status = models.get("hpa")["status"]
    assert (status["replicas"], status["autoscaler"]) == (2, "HorizontalPodAutoscaler/hpa")
    # No custom-metrics adapter in this cluster: the HPA says it cannot read the metric, and so
    # does the model (with what the cluster needs).
    reported = models.wait_condition("hpa", "Autoscaling", "False", "FailedGetPodsMetric", 90)
    assert "custom-metrics adapter must serve the Pods metric" in reported["message"]
    time.sleep(3)
    assert _deployment_replicas(models, "hpa") == 2
    refused = cluster.kubectl(
        "scale", "-n", models.namespace, "tvm/hpa", "--replicas=1", check=False
    )
    assert refused.returncode != 0 and "cannot both drive" in refused.stderr


def test_keda_installed_later_replaces_the_hpa_and_removing_autoscaling_restores_replicas(
    cluster: ClusterHandle, models: Models
) -> None:
    spec = {
        **AUTOSCALED,
        "autoscaling": {**AUTOSCALED["autoscaling"], "prometheusAddress": "http://127.0.0.1:9"},
    }
    models.create("later", **spec)
    models.wait_condition("later", "Autoscaling", "True", "HorizontalPodAutoscaler")
    custom = client.CustomObjectsApi(models.apps.api_client)
    try:
        cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(keda_crds()))
        # (kubectl wait fails at once on a CRD whose status has no conditions yet)
        wait_for(
            lambda: (
                cluster.kubectl(
                    "wait", "--for=condition=Established", f"crd/{KEDA_CRD}", check=False
                ).returncode
                == 0
            ),
            30,
            "KEDA's CRD to be established",
        )
        models.wait_condition("later", "Autoscaling", "True", "KEDA", timeout=60)
        scaled = custom.get_namespaced_custom_object(
            "keda.sh", "v1alpha1", models.namespace, "scaledobjects", "later"
        )
        assert scaled["spec"]["minReplicaCount"] == 2
        assert scaled["spec"]["triggers"][0]["metadata"]["query"] == (
            f'sum(vllm:num_requests_waiting{{namespace="{models.namespace}",model_name="later"}})'
        )
        autoscaling_api = client.AutoscalingV2Api(models.apps.api_client)
        wait_for(
            lambda: (
                not [
                    h
                    for h in autoscaling_api.list_namespaced_horizontal_pod_autoscaler(
                        models.namespace
                    ).items
                    if h.metadata.name == "later"
                ]
            ),
            30,
            "the operator's HPA to be deleted",
        )
        assert models.get("later")["status"]["autoscaler"] == "ScaledObject/later"
        # Autoscaling off: the ScaledObject goes, spec.replicas (default 1) drives again.
        models.patch_spec("later", autoscaling=None)  # a merge patch's null removes it
        wait_for(
            lambda: (
                not custom.list_namespaced_custom_object(
                    "keda.sh", "v1alpha1", models.namespace, "scaledobjects"
                )["items"]
            ),
            30,
            "the ScaledObject to be deleted",
        )
        wait_for(lambda: _deployment_replicas(models, "later") == 1, 30, "spec.replicas' 1")
        models.wait_condition("later", "Ready", "True", timeout=60)
        assert models.condition("later", "Autoscaling") == {}
    finally:
        remove_keda_crds(cluster)
