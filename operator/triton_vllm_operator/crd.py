"""Generate the CustomResourceDefinition from the pydantic models (make crds)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from . import api

# Keys of JSON Schema that a Kubernetes structural schema does not accept.
_DROPPED_KEYS = {"title", "$defs", "discriminator"}


def _resolve(node: Any, defs: dict[str, Any]) -> Any:
    """Inline $refs, so the schema has no references (structural schemas forbid them)."""
    if isinstance(node, list):
        return [_resolve(item, defs) for item in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        target = defs[node["$ref"].rsplit("/", 1)[-1]]
        merged = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
        return _resolve(merged, defs)
    return {key: _resolve(value, defs) for key, value in node.items()}


def _structural(node: Any) -> Any:
    """Rewrite a resolved JSON Schema node into Kubernetes' structural OpenAPI v3 dialect."""
    if isinstance(node, list):
        return [_structural(item) for item in node]
    if not isinstance(node, dict):
        return node
    node = {k: v for k, v in node.items() if k not in _DROPPED_KEYS}
    if node.get("x-kubernetes-int-or-string"):
        kept = (
            "description",
            "default",
            "pattern",
            "x-kubernetes-int-or-string",
            "x-kubernetes-validations",
        )
        return {k: node[k] for k in kept if node.get(k) is not None}
    if "anyOf" in node:
        options = [opt for opt in node.pop("anyOf") if opt.get("type") != "null"]
        if len(options) != 1:
            raise ValueError(f"cannot express anyOf {options} in a structural schema")
        return _structural({**options[0], **node})
    if "const" in node:
        node["enum"] = [node.pop("const")]
    if isinstance(node.get("exclusiveMinimum"), int | float):
        node["minimum"] = node.pop("exclusiveMinimum")
        node["exclusiveMinimum"] = True
    if "properties" in node:
        node.pop("additionalProperties", None)
        node["type"] = "object"
    if node.get("x-kubernetes-preserve-unknown-fields"):
        node["type"] = "object"
        node.pop("additionalProperties", None)
    if "default" in node and (node["default"] is None or isinstance(node["default"], dict | list)):
        del node["default"]
    return {key: _structural(value) for key, value in node.items()}


def openapi_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The structural schema of one pydantic model."""
    raw = model.model_json_schema(by_alias=True)
    schema: dict[str, Any] = _structural(_resolve(raw, raw.get("$defs", {})))
    return schema


PRINTER_COLUMNS = [
    {"name": "Model", "type": "string", "jsonPath": ".spec.model"},
    {"name": "TP", "type": "integer", "jsonPath": ".status.tensorParallelSize"},
    {"name": "Replicas", "type": "integer", "jsonPath": ".status.replicas"},
    {"name": "Ready", "type": "integer", "jsonPath": ".status.readyReplicas"},
    {
        "name": "Status",
        "type": "string",
        "jsonPath": '.status.conditions[?(@.type=="Ready")].reason',
    },
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
]


def custom_resource_definition() -> dict[str, Any]:
    """The whole CRD object, ready to dump as YAML."""
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{api.PLURAL}.{api.GROUP}"},
        "spec": {
            "group": api.GROUP,
            "names": {
                "kind": api.KIND,
                "listKind": f"{api.KIND}List",
                "plural": api.PLURAL,
                "singular": api.SINGULAR,
                "shortNames": [api.SHORT_NAME],
                "categories": ["all"],
            },
            "scope": "Namespaced",
            "versions": [
                {
                    "name": api.VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {
                        "status": {},
                        # `kubectl scale tvm NAME --replicas=N` sets spec.replicas.
                        "scale": {
                            "specReplicasPath": ".spec.replicas",
                            "statusReplicasPath": ".status.currentReplicas",
                            "labelSelectorPath": ".status.selector",
                        },
                    },
                    "additionalPrinterColumns": PRINTER_COLUMNS,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "description": "An LLM served by NVIDIA Triton with the bundled "
                            "vLLM backend.",
                            "required": ["spec"],
                            "x-kubernetes-validations": [
                                {
                                    "rule": "self.metadata.name.matches("
                                    f"'{api.OBJECT_NAME_PATTERN}') && "
                                    f"size(self.metadata.name) <= {api.OBJECT_NAME_MAX}",
                                    "message": api.OBJECT_NAME_RULE,
                                }
                            ],
                            "properties": {
                                "apiVersion": {"type": "string"},
                                "kind": {"type": "string"},
                                "metadata": {"type": "object"},
                                "spec": openapi_schema(api.TritonVLLMModelSpec),
                                "status": openapi_schema(api.TritonVLLMModelStatus),
                            },
                        }
                    },
                }
            ],
        },
    }
