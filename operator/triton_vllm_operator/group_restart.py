"""A multi-node replica is whole or being replaced. When a member of a group that was whole is
lost (its pod deleted, evicted or replaced, its node gone) or its container restarts, the other
ranks hold an engine that cannot go on; the group is restarted whole (its StatefulSet scaled to
0, then back once its pods are gone) rather than left until each rank notices on its own.

The memory of "whole" is the model's status.ranks of the pass before (each rank's pod uid and
container restarts, all ready); with no such record nothing is restarted here and the ranks' own
exits (docs/backend.md, "Multi-node") are what re-forms the group.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .children import with_applied_hash
from .conditions import spec_observed
from .observed import OwnPod


@dataclass(frozen=True)
class LostMember:
    """The member whose loss broke a whole group."""

    group: str
    rank: int
    pod: str
    node: str | None
    why: str

    def message(self) -> str:
        where = f" on {self.node}" if self.node else ""
        return (
            f"{self.group} rank {self.rank} ({self.pod}{where}) {self.why}: restarting the whole "
            "group (every rank anew; the engine cannot go on without one of its ranks)."
        )


def lost_members(
    previous: Sequence[Mapping[str, Any]], pods: Sequence[OwnPod], nodes: int
) -> list[LostMember]:
    """For each group that was whole (all its `nodes` ranks ready in `previous`, the
    status.ranks of the pass before) and is no more because one member was lost while another
    still runs: the first member lost."""
    now = {p.name: p for p in pods if p.group and not p.terminating}
    groups: dict[str, list[Mapping[str, Any]]] = {}
    for member in previous:
        groups.setdefault(str(member.get("group")), []).append(member)
    out = []
    for group, members in sorted(groups.items()):
        if len(members) != nodes or not all(m.get("ready") for m in members):
            continue
        lost: list[LostMember] = []
        still = False
        for member in sorted(members, key=lambda m: int(m.get("rank") or 0)):
            why = _why_lost(member, now.get(str(member.get("pod"))))
            if why is None:
                still = True
            else:
                lost.append(
                    LostMember(
                        group,
                        int(member.get("rank") or 0),
                        str(member.get("pod")),
                        member.get("node"),
                        why,
                    )
                )
        if lost and still:  # all lost at once: the group is already being made anew
            out.append(lost[0])
    return out


def _why_lost(member: Mapping[str, Any], pod: OwnPod | None) -> str | None:
    if pod is None:
        return "is gone (its pod was deleted or evicted, or its node lost)"
    if member.get("uid") and pod.uid and pod.uid != member["uid"]:
        return "was replaced by a new pod"
    if pod.restarts > int(member.get("restarts") or 0):
        return "restarted its container"
    return None


def scaled_to_zero(group: Mapping[str, Any]) -> dict[str, Any]:
    """The group's StatefulSet at 0 pods: the first half of a restart."""
    out = copy.deepcopy(dict(group))
    out["spec"]["replicas"] = 0
    return with_applied_hash(out)


def restarting(live: Mapping[str, Any] | None) -> bool:
    """A group restart in progress: its live StatefulSet is at 0 and its pods not all gone yet
    (or the controller has not seen the 0): it stays at 0 until they are."""
    if live is None:
        return False
    spec = live.get("spec") or {}
    if spec.get("replicas") != 0:
        return False
    pods = int((live.get("status") or {}).get("replicas") or 0)
    return not spec_observed(live) or pods > 0
