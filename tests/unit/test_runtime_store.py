"""The informers' cache: a re-list replaces a collection (what it lacks is gone, and its models are
woken), deletes are uid-aware, and node noise (heartbeats, GFD's timestamp, labels no model
reads) wakes no model."""

from __future__ import annotations

from typing import Any

import pytest

from triton_vllm_operator.runtime.kinds import CHILD_KINDS
from triton_vllm_operator.runtime.store import World

NS = "team"
OURS = {"app.kubernetes.io/managed-by": "triton-vllm-operator", "tritonvllm.io/model": "llama"}


def model(name: str, uid: str = "m1", rv: str = "1", scheduled: bool = False,
          node_selector: dict[str, str] | None = None) -> dict[str, Any]:  # fmt: skip
    status = "True" if scheduled else "False"
    return {
        "kind": "TritonVLLMModel",
        "metadata": {"namespace": NS, "name": name, "uid": uid, "resourceVersion": rv},
        "spec": {"model": "m", "nodeSelector": node_selector or {}},
        "status": {"conditions": [{"type": "Scheduled", "status": status}]},
    }


def deployment(uid: str, rv: str = "5", name: str = "llama") -> dict[str, Any]:
    return {
        "kind": "Deployment",
        "metadata": {
            "namespace": NS,
            "name": name,
            "uid": uid,
            "resourceVersion": rv,
            "labels": OURS,
            "managedFields": [{"manager": "x"}],
        },
        "spec": {"replicas": 1},
    }


def node(name: str = "gpu-1", **labels: str) -> dict[str, Any]:
    return {
        "kind": "Node",
        "metadata": {
            "name": name,
            "uid": f"uid-{name}",
            "labels": {"nvidia.com/gpu.product": "H100", **labels},
        },
        "spec": {},
        "status": {
            "allocatable": {"nvidia.com/gpu": "8"},
            "conditions": [
                {"type": "Ready", "status": "True", "lastHeartbeatTime": "2026-12-07T10:00:00Z"}
            ],
        },
    }


@pytest.fixture
def world() -> World:
    w = World(CHILD_KINDS)
    w.replace("models", [w.slimmer("models")(model("llama"))])
    return w


def slims(world: World, source: str, *objs: dict[str, Any]) -> list[dict[str, Any]]:
    slim = world.slimmer(source)
    return [s for s in (slim(o) for o in objs) if s is not None]


def test_a_relist_that_lacks_a_child_removes_it_and_wakes_its_model(world: World) -> None:
    assert world.replace("Deployment", slims(world, "Deployment", deployment("d1"))) == {
        (NS, "llama")
    }
    assert ("Deployment", "llama") in world.observe((NS, "llama")).children
    # The Deployment was deleted while no watch was open: the next list does not have it.
    woken = world.replace("Deployment", [])
    assert woken == {(NS, "llama")}
    assert world.observe((NS, "llama")).children == {}


def test_a_relist_that_finds_nothing_changed_wakes_nobody(world: World) -> None:
    world.replace("Deployment", slims(world, "Deployment", deployment("d1")))
    assert world.replace("Deployment", slims(world, "Deployment", deployment("d1"))) == set()


def test_a_relist_of_one_namespace_leaves_the_others(world: World) -> None:
    other = deployment("d2")
    other["metadata"]["namespace"] = "elsewhere"
    world.replace("Deployment", slims(world, "Deployment", other), namespace="elsewhere")
    world.replace("Deployment", slims(world, "Deployment", deployment("d1")), namespace=NS)
    world.replace("Deployment", [], namespace="elsewhere")
    assert ("Deployment", "llama") in world.observe((NS, "llama")).children


def test_a_model_missing_from_a_relist_is_gone_and_woken(world: World) -> None:
    assert world.replace("models", []) == {(NS, "llama")}
    assert world.model((NS, "llama")) is None


def test_an_old_delete_does_not_remove_the_object_recreated_since(world: World) -> None:
    world.apply_event("Deployment", "ADDED", deployment("old"))
    world.apply_event("Deployment", "ADDED", deployment("new", rv="9"))
    # The DELETED of the old object arrives late: the new one stays.
    assert world.apply_event("Deployment", "DELETED", deployment("old", rv="7")) == set()
    child = world.observe((NS, "llama")).children[("Deployment", "llama")]
    assert child["metadata"]["uid"] == "new"
    assert world.apply_event("Deployment", "DELETED", deployment("new", rv="10"))
    assert world.observe((NS, "llama")).children == {}


def test_an_older_version_of_the_same_object_does_not_replace_a_newer(world: World) -> None:
    world.apply_event("Deployment", "MODIFIED", deployment("d1", rv="12"))
    world.apply_event("Deployment", "MODIFIED", deployment("d1", rv="11"))
    child = world.observe((NS, "llama")).children[("Deployment", "llama")]
    assert child["metadata"]["resourceVersion"] == "12"
    assert "managedFields" not in child["metadata"]


def test_a_recreated_model_replaces_the_old_one_whatever_its_version(world: World) -> None:
    world.apply_event("models", "ADDED", model("llama", uid="m2", rv="1"))
    body = world.model((NS, "llama"))
    assert body is not None and body["metadata"]["uid"] == "m2"


def test_node_heartbeats_and_gfd_timestamps_wake_no_model(world: World) -> None:
    world.replace("nodes", slims(world, "nodes", node(**{"nvidia.com/gfd.timestamp": "1"})))
    beat = node(**{"nvidia.com/gfd.timestamp": "2"})
    beat["status"]["conditions"][0]["lastHeartbeatTime"] = "2026-12-07T10:01:00Z"
    assert world.apply_event("nodes", "MODIFIED", beat) == set()


def test_a_label_no_model_reads_wakes_no_model(world: World) -> None:
    world.replace("nodes", slims(world, "nodes", node()))
    assert world.apply_event("nodes", "MODIFIED", node(team="blue")) == set()


def test_a_label_a_model_selects_on_wakes_that_model() -> None:
    world = World(CHILD_KINDS)
    world.replace("models", slims(world, "models", model("picky", node_selector={"team": "blue"}),
                                  model("other", uid="m9")))  # fmt: skip
    world.replace("nodes", slims(world, "nodes", node()))
    assert world.apply_event("nodes", "MODIFIED", node(team="blue")) == {(NS, "picky")}


def test_gpu_capacity_and_gpu_labels_wake_unscheduled_models_only() -> None:
    world = World(CHILD_KINDS)
    placed = model("placed", uid="m3", scheduled=True)
    world.replace("models", slims(world, "models", model("waiting"), placed))
    world.replace("nodes", slims(world, "nodes", node()))
    bigger = node()
    bigger["status"]["allocatable"]["nvidia.com/gpu"] = "16"
    assert world.apply_event("nodes", "MODIFIED", bigger) == {(NS, "waiting")}
    relabelled = node(**{"nvidia.com/gpu.product": "H200"})
    relabelled["status"]["allocatable"]["nvidia.com/gpu"] = "16"
    assert world.apply_event("nodes", "MODIFIED", relabelled) == {(NS, "waiting")}
    assert world.apply_event("nodes", "DELETED", relabelled) == {(NS, "waiting")}


def test_pods_of_others_count_only_when_they_hold_gpus() -> None:
    world = World(CHILD_KINDS)

    def pod(name: str, resources: dict[str, Any], labels: dict[str, str] | None = None) -> Any:
        return {
            "metadata": {"namespace": NS, "name": name, "uid": name, "labels": labels or {}},
            "spec": {"nodeName": "gpu-1", "containers": [{"resources": resources}]},
            "status": {"phase": "Running"},
        }

    gpu = {"limits": {"nvidia.com/gpu": "2"}}
    world.replace("bound-pods", slims(
        world, "bound-pods", pod("web", {"limits": {"cpu": "1"}}), pod("train", gpu),
        pod("llama-0", gpu, OURS),
    ))  # fmt: skip
    observed = world.observe((NS, "llama"))
    assert [p["spec"]["nodeName"] for p in observed.pods] == ["gpu-1"]
    assert len(world.observe((NS, "someone-else")).pods) == 2


def test_nodes_without_gpus_wake_no_model(world: World) -> None:
    cpu = node("cpu-1")
    cpu["status"]["allocatable"] = {"cpu": "8", "memory": "32Gi", "pods": "110"}
    assert world.apply_event("nodes", "ADDED", cpu) == set()
    cpu["spec"]["taints"] = [{"key": "node.kubernetes.io/not-ready", "effect": "NoExecute"}]
    assert world.apply_event("nodes", "MODIFIED", cpu) == set()
    assert world.apply_event("nodes", "DELETED", cpu) == set()
