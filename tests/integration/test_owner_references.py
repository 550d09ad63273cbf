"""The test cluster runs kube-apiserver with OwnerReferencesPermissionEnforcement (as OpenShift
does): a child whose ownerReference blocks its model's deletion is admitted only from an identity
that may update the model's finalizers, which the chart grants the operator.

(The operator itself, running with only the chart's rights, creating every child of a model on
this cluster: test_chart.py::test_the_operator_serves_a_model_with_only_the_charts_rights.)
"""

from __future__ import annotations

import json
from typing import Any

from tests.kube import ClusterHandle
from tests.operator_process import CRD

MODEL = {
    "apiVersion": "tritonvllm.io/v1alpha1",
    "kind": "TritonVLLMModel",
    "metadata": {"name": "owner"},
    "spec": {"model": "meta-llama/Llama-3.1-8B-Instruct", "tensorParallelSize": 1},
}


def _role(namespace: str, rules: list[dict[str, Any]]) -> str:
    return json.dumps(
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": {"name": "child-maker", "namespace": namespace},
            "rules": rules,
        }
    )


def _child(namespace: str, uid: str) -> str:
    return json.dumps(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": "owner-child",
                "namespace": namespace,
                "ownerReferences": [
                    {
                        "apiVersion": "tritonvllm.io/v1alpha1",
                        "kind": "TritonVLLMModel",
                        "name": "owner",
                        "uid": uid,
                        "controller": True,
                        "blockOwnerDeletion": True,
                    }
                ],
            },
        }
    )


def test_a_child_blocking_its_models_deletion_needs_the_charts_finalizers_right(
    cluster: ClusterHandle, namespace: str
) -> None:
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CRD))
    cluster.kubectl("wait", "--for=condition=Established", "crd/tritonvllmmodels.tritonvllm.io")
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(MODEL))
    uid = cluster.kubectl(
        "get", "tvm", "owner", "-n", namespace, "-o", "jsonpath={.metadata.uid}"
    ).stdout
    cluster.kubectl("create", "serviceaccount", "maker", "-n", namespace)
    binding = ["rolebinding", "maker", "--role=child-maker", f"--serviceaccount={namespace}:maker"]
    cluster.kubectl("create", "-n", namespace, *binding)
    creates = {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["create"]}
    cluster.kubectl("apply", "-f", "-", input=_role(namespace, [creates]))
    maker = f"--as=system:serviceaccount:{namespace}:maker"
    refused = cluster.kubectl("create", maker, "-f", "-", input=_child(namespace, uid), check=False)
    assert refused.returncode != 0
    assert "cannot set blockOwnerDeletion" in refused.stderr, refused.stderr
    # The rule the chart grants (templates/_rbac.tpl) is what admits it.
    finalizers = {
        "apiGroups": ["tritonvllm.io"],
        "resources": ["tritonvllmmodels/finalizers"],
        "verbs": ["update"],
    }
    cluster.kubectl("apply", "-f", "-", input=_role(namespace, [creates, finalizers]))
    cluster.kubectl("create", maker, "-f", "-", input=_child(namespace, uid))
