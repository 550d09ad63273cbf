"""The drift check: a live child still holds every field the operator rendered (hand edits are
drift; defaults, status and other managers' fields are not)."""

from __future__ import annotations

from typing import Any

import pytest

from triton_vllm_operator.drift import covers

DESIRED = {
    "apiVersion": "apps/v1",
    "kind": "Deployment",
    "metadata": {"name": "llama", "labels": {"app": "llama"}},
    "spec": {
        "replicas": 2,
        "template": {
            "spec": {
                "containers": [
                    {
                        "name": "triton",
                        "resources": {"limits": {"nvidia.com/gpu": 2, "memory": "0.5Gi"}},
                        "env": [{"name": "A", "value": "1"}],
                    }
                ]
            }
        },
    },
}


def live(**changes: Any) -> dict[str, Any]:
    """The stored object: what we rendered plus defaults, status and others' fields."""
    container = {
        "name": "triton",
        "image": "serving:1",
        "resources": {"limits": {"nvidia.com/gpu": "2", "memory": "512Mi"}},
        "env": [{"name": "INJECTED", "value": "x"}, {"name": "A", "value": "1"}],
    }
    obj: dict[str, Any] = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "llama", "labels": {"app": "llama", "team": "ml"}, "uid": "u"},
        "spec": {
            "replicas": 2,
            "revisionHistoryLimit": 10,
            "template": {"spec": {"containers": [container], "dnsPolicy": "ClusterFirst"}},
        },
        "status": {"readyReplicas": 2},
    }
    for path, value in changes.items():
        *parents, leaf = path.split("__")
        target = obj
        for part in parents:
            target = target[part]
        if value is None:
            target.pop(leaf, None)
        else:
            target[leaf] = value
    return obj


def test_defaults_status_canonical_quantities_and_others_fields_are_not_drift() -> None:
    assert covers(live(), DESIRED)


@pytest.mark.parametrize(
    "changes",
    [
        {"spec__replicas": 3},  # edited by hand
        {"metadata__labels": {"team": "ml"}},  # our label removed
        {"apiVersion": None},  # an object without its apiVersion cannot be ours as rendered
        {"kind": "StatefulSet"},
    ],
    ids=["replicas-edited", "label-removed", "no-apiVersion", "other-kind"],
)
def test_a_field_we_set_that_differs_or_is_missing_is_drift(changes: dict[str, Any]) -> None:
    assert not covers(live(**changes), DESIRED)


def test_named_list_items_are_matched_by_name_and_a_missing_one_is_drift() -> None:
    without_a = live()
    without_a["spec"]["template"]["spec"]["containers"][0]["env"] = [{"name": "INJECTED"}]
    assert not covers(without_a, DESIRED)


def test_a_gpu_count_or_quantity_that_differs_is_drift() -> None:
    other = live()
    other["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["memory"] = "1Gi"
    assert not covers(other, DESIRED)
    assert not covers({"a": True}, {"a": "true"})
