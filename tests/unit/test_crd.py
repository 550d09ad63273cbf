"""The CRD is generated from the pydantic models, structural, and committed up to date."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from triton_vllm_operator.crd import custom_resource_definition

CRD_FILE = Path(__file__).parents[2] / "crds" / "tritonvllm.io_tritonvllmmodels.yaml"


def walk(node: Any, path: str = "") -> list[tuple[str, dict[str, Any]]]:
    found: list[tuple[str, dict[str, Any]]] = []
    if isinstance(node, dict):
        found.append((path, node))
        for key, value in node.get("properties", {}).items():
            found += walk(value, f"{path}.{key}")
        for key in ("items", "additionalProperties"):
            if isinstance(node.get(key), dict):
                found += walk(node[key], f"{path}[]")
    return found


def schema() -> dict[str, Any]:
    version = custom_resource_definition()["spec"]["versions"][0]
    result: dict[str, Any] = version["schema"]["openAPIV3Schema"]
    return result


def test_committed_crd_matches_the_models() -> None:
    committed = yaml.safe_load(CRD_FILE.read_text())
    assert committed == custom_resource_definition(), "crds/ is stale: run `make crds`"


def test_schema_is_structural() -> None:
    text = yaml.safe_dump(schema())
    for forbidden in ("$ref", "anyOf", "oneOf", "allOf", "title", "$defs", "const:"):
        assert forbidden not in text
    for path, node in walk(schema()):
        assert "type" in node or node.get("x-kubernetes-int-or-string"), path


def test_only_engine_args_openai_args_and_triton_config_preserve_unknown_fields() -> None:
    preserved = [p for p, n in walk(schema()) if n.get("x-kubernetes-preserve-unknown-fields")]
    assert preserved == [".spec.engineArgs", ".spec.triton.config", ".spec.openai.args"]


def test_int_or_string_fields() -> None:
    nodes = dict(walk(schema()))
    assert nodes[".spec.tensorParallelSize"]["default"] == "auto"
    assert nodes[".spec.tensorParallelSize"]["x-kubernetes-int-or-string"] is True
    assert nodes[".spec.storage.size"]["x-kubernetes-int-or-string"] is True


def test_api_names_and_subresources() -> None:
    crd = custom_resource_definition()
    assert crd["metadata"]["name"] == "tritonvllmmodels.tritonvllm.io"
    assert crd["spec"]["names"]["shortNames"] == ["tvm"]
    assert crd["spec"]["scope"] == "Namespaced"
    version = crd["spec"]["versions"][0]
    assert version["name"] == "v1alpha1"
    assert version["subresources"] == {
        "status": {},
        "scale": {
            "specReplicasPath": ".spec.replicas",
            "statusReplicasPath": ".status.currentReplicas",
            "labelSelectorPath": ".status.selector",
        },
    }
    columns = [c["name"] for c in version["additionalPrinterColumns"]]
    assert columns == ["Model", "TP", "Replicas", "Ready", "Status", "Age"]


def test_field_descriptions_reach_kubectl_explain() -> None:
    nodes = dict(walk(schema()))
    for path in (".spec.model", ".spec.engineArgs", ".spec.gpu.product", ".status.conditions"):
        assert nodes[path].get("description"), path
    assert nodes[".spec.replicas"]["minimum"] == 0
    assert nodes[".spec.modelSizeGiB"] == {
        "description": nodes[".spec.modelSizeGiB"]["description"],
        "exclusiveMinimum": True,
        "minimum": 0,
        "type": "number",
    }


def test_status_declares_every_field_the_operator_writes() -> None:
    status = schema()["properties"]["status"]["properties"]
    assert set(status) == {
        "observedGeneration",
        "conditions",
        "tensorParallelSize",
        "nodesPerReplica",
        "ranks",
        "replicas",
        "currentReplicas",
        "selector",
        "autoscaler",
        "readyReplicas",
        "updatedReplicas",
        "endpoint",
        "endpoints",
        "configHash",
        "configMap",
        "model",
        "lora",
    }
    assert {"parameters", "dtype", "weightsGiB", "kvBytesPerToken", "maxContext"} <= set(
        status["model"]["properties"]
    )
    condition = status["conditions"]["items"]["properties"]
    assert {"type", "status", "reason", "message", "lastTransitionTime"} <= set(condition)
