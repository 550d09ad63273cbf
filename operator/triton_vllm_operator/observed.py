"""What a reconcile pass is given: the model's world as the watches observed it.

Plain types, built by the runtime's cache (runtime/store.py) and read by the pure pipeline.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .model_facts import ModelFacts, ModelFactsError

Key = tuple[str, str]  # (kind, name) of a child


@dataclass(frozen=True)
class OwnPod:
    """One of the model's pods, as far as status and config clean-up care."""

    name: str
    config_hash: str | None
    config_map: str | None
    scheduled: tuple[str, str, str] | None = None  # PodScheduled (status, reason, message)
    terminating: bool = False
    job: str | None = None  # the prefetch Job of a download pod
    phase: str | None = None
    node: str | None = None
    ready: bool = False
    group: str | None = None  # the multi-node group (StatefulSet) of the pod, and its rank
    rank: int | None = None
    uid: str | None = None
    restarts: int = 0  # container restarts, all containers together


@dataclass(frozen=True)
class Observed:
    """What the watches saw: nodes, other pods holding GPUs, the model's pods and children."""

    nodes: Sequence[Mapping[str, Any]]
    pods: Sequence[Mapping[str, Any]]  # bound pods of everything else, holding GPUs
    own_pods: Sequence[OwnPod] = ()
    own_gpu_pods: Sequence[Mapping[str, Any]] = ()  # this model's bound pods, holding GPUs
    children: Mapping[Key, Mapping[str, Any]] = field(default_factory=dict)
    # The model's facts as looked up for this pass, or why they could not be; None when no
    # lookup was made (a path model, lookups off, or a placement kept from the live Deployment).
    facts: ModelFacts | ModelFactsError | None = None
    # Pods of the model's prefetch Jobs, ended ones too (the pod watch leaves those out), listed
    # for a pass once a Job has failed or completed attempts: their termination messages say why
    # one failed, or what the completed one downloaded.
    prefetch_pods: Sequence[Mapping[str, Any]] = ()
    # The last lines of the log of the running prefetch pod (`progress_pod`), when read.
    prefetch_log: str | None = None
    # Whether the cluster serves KEDA's ScaledObject kind (its CRD is established).
    keda_served: bool = False
    # Children that differ from what we render only where the API server's admission changed
    # them (a mutating webhook's rewrite), as a dry-run apply showed: not drift, not re-applied.
    server_made: frozenset[Key] = frozenset()
    # Whether the cluster serves the InferencePool kind (spec.gateway's pool).
    pool_served: bool = False
