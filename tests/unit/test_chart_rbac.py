"""The chart's RBAC as `helm template` renders it: Secrets only by `get` (the token of a gated
model's facts lookup) and pod logs only by `get` (a running download's progress), each behind a
value that is on by default, in the watched namespaces only.

helm is the pinned one hack/cluster.sh builds with the control plane (`hack/cluster.sh
bin-dir`); without it built the module is skipped, as `make test` builds it first.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from triton_vllm_operator.runtime import kinds

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "triton-vllm-operator"


def _helm() -> Path | None:
    out = subprocess.run(
        [str(ROOT / "hack" / "cluster.sh"), "bin-dir"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    path = Path(out.stdout.strip()) / "helm"
    return path if out.returncode == 0 and path.is_file() else None


HELM = _helm()
pytestmark = pytest.mark.skipif(HELM is None, reason="helm is built by hack/cluster.sh build")


def template(*values: str) -> list[dict[str, Any]]:
    assert HELM is not None
    out = subprocess.run(
        [str(HELM), "template", "tvo", str(CHART), "--namespace", "ops", *values],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def rules_for(docs: list[dict[str, Any]], resource: str) -> dict[str, list[dict[str, Any]]]:
    """Per Role or ClusterRole (kind/namespace/name), its rules that name `resource`."""
    found: dict[str, list[dict[str, Any]]] = {}
    for doc in docs:
        if doc["kind"] in ("Role", "ClusterRole"):
            where = (
                f"{doc['kind']}/{doc['metadata'].get('namespace', '')}/{doc['metadata']['name']}"
            )
            found[where] = [r for r in doc["rules"] if resource in r["resources"]]
    return {k: v for k, v in found.items() if v}


def env(docs: list[dict[str, Any]]) -> dict[str, Any]:
    (deploy,) = [d for d in docs if d["kind"] == "Deployment"]
    return {
        e["name"]: e.get("value")
        for e in deploy["spec"]["template"]["spec"]["containers"][0]["env"]
    }


def test_by_default_secrets_may_only_be_got_never_listed_or_watched() -> None:
    rules = rules_for(template(), "secrets")
    assert list(rules) == ["ClusterRole//tvo-triton-vllm-operator-ops"]
    (rule,) = rules["ClusterRole//tvo-triton-vllm-operator-ops"]
    assert rule == {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]}


def test_the_token_secrets_can_be_narrowed_to_named_ones() -> None:
    docs = template("--set", "operator.modelFacts.tokenSecretNames={hf,hf-gated}")
    ((rule,),) = rules_for(docs, "secrets").values()
    assert rule["verbs"] == ["get"] and rule["resourceNames"] == ["hf", "hf-gated"]


@pytest.mark.parametrize(
    "values",
    [
        ["--set", "operator.modelFacts.readTokenSecrets=false"],
        ["--set", "operator.modelFacts.enabled=false"],
    ],
    ids=["value-off", "facts-off"],
)
def test_no_secret_rights_when_lookups_do_not_read_tokens(values: list[str]) -> None:
    assert rules_for(template(*values), "secrets") == {}


def test_namespaced_mode_reads_secrets_in_the_watched_namespaces_only() -> None:
    rules = rules_for(template("--set", "watchNamespaces={team-a,team-b}"), "secrets")
    assert set(rules) == {
        "Role/team-a/tvo-triton-vllm-operator",
        "Role/team-b/tvo-triton-vllm-operator",
    }


def test_pod_logs_may_be_got_for_progress_and_the_operator_is_told() -> None:
    docs = template()
    ((rule,),) = rules_for(docs, "pods/log").values()
    assert rule == {"apiGroups": [""], "resources": ["pods/log"], "verbs": ["get"]}
    assert env(docs)["TRITON_VLLM_PREFETCH_PROGRESS"] == "true"
    off = template("--set", "operator.prefetch.readProgress=false")
    assert rules_for(off, "pods/log") == {}
    assert env(off)["TRITON_VLLM_PREFETCH_PROGRESS"] == "false"


def test_no_rule_lists_or_watches_secrets_or_uses_wildcards() -> None:
    for values in ([], ["--set", "watchNamespaces={team-a}"]):
        for doc in template(*values):
            for rule in doc.get("rules") or [] if doc["kind"] in ("Role", "ClusterRole") else []:
                assert "*" not in rule["verbs"] + rule["resources"] + rule["apiGroups"], rule
                if {"secrets", "pods/log"} & set(rule["resources"]):
                    assert rule["verbs"] == ["get"], rule


@pytest.mark.parametrize("values", [[], ["--set", "watchNamespaces={team-a}"]], ids=["all", "ns"])
def test_the_chart_grants_every_verb_the_runtime_calls_on_every_collection(
    values: list[str],
) -> None:
    """The registry the reflectors and the API client use (runtime/kinds.py) is the list of what
    RBAC must allow: a kind added there without a rule fails here, not in a cluster."""
    docs = template(*values)
    granted: dict[tuple[str, str], set[str]] = {}
    for doc in docs:
        if doc["kind"] in ("Role", "ClusterRole"):
            for rule in doc["rules"]:
                for group in rule["apiGroups"]:
                    for resource in rule["resources"]:
                        granted.setdefault((group, resource), set()).update(rule["verbs"])
    for collection in kinds.BY_KIND.values():
        have = granted.get((collection.group, collection.plural), set())
        assert set(collection.verbs) <= have, (collection.kind, collection.verbs, have)
    for collection in (kinds.OWN_PODS, kinds.BOUND_PODS):
        assert set(collection.verbs) <= granted.get(("", "pods"), set())
    lease = granted.get(("coordination.k8s.io", "leases"), set())
    assert {"get", "create", "update"} <= lease


@pytest.mark.parametrize("values", [[], ["--set", "watchNamespaces={ml}"]])
def test_children_may_block_their_models_deletion_under_owner_reference_enforcement(
    values: list[str],
) -> None:
    # The children's ownerReferences carry blockOwnerDeletion: with the API server's
    # OwnerReferencesPermissionEnforcement that needs update on the owner's finalizers.
    found = rules_for(template(*values), "tritonvllmmodels/finalizers")
    assert found, "no rule grants update on tritonvllmmodels/finalizers"
    for rules in found.values():
        assert [r["verbs"] for r in rules] == [["update"]]
        assert all(r["apiGroups"] == ["tritonvllm.io"] for r in rules)


def test_the_chart_refuses_lease_timings_that_allow_two_leaders() -> None:
    assert HELM is not None
    out = subprocess.run(
        [str(HELM), "template", "tvo", str(CHART), "--namespace", "ops",
         "--set", "operator.leaderElection.renewDeadlineSeconds=20"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert out.returncode != 0
    assert "leaseDurationSeconds > renewDeadlineSeconds > retryPeriodSeconds" in out.stderr
    assert env(template())["TRITON_VLLM_LEASE_RENEW_DEADLINE_SECONDS"] == "10"
