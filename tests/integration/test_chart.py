"""The Helm chart against real tools and the real control plane: helm lint, kubeconform (strict,
schemas from the local apiserver), checkov and kube-score over the chart and over what the
operator renders, helm install with the restricted Pod Security Standard, the ServiceAccount's
exact rights, and helm uninstall leaving nothing but the CRD."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.kube import ClusterHandle, wait_until
from tests.operator_process import OperatorProcess

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "triton-vllm-operator"
LINT = CHART / "lint"
CRD_FILE = ROOT / "crds" / "tritonvllm.io_tritonvllmmodels.yaml"
CRD_NAME = "tritonvllmmodels.tritonvllm.io"
RELEASE = "tvo"
SERVICE_ACCOUNT = f"{RELEASE}-triton-vllm-operator"
KUBE_SCORE_ARGS = ["--kubernetes-version", "v1.36"]
# Value sets every static check renders: the defaults and each switch that changes the output.
VARIANTS: dict[str, list[str]] = {
    "defaults": [],
    "namespaced": ["--set", "watchNamespaces={team-a,team-b}"],
    "no-crds": ["--set", "crds.enabled=false"],
    "digest": ["--set", "image.digest=sha256:" + "0" * 64],
    "existing-sa": ["--set", "serviceAccount.create=false", "--set", "serviceAccount.name=ops"],
}


# --------------------------------------------------------------------------------------------
# Tools


@pytest.fixture(scope="module")
def helm(cluster: ClusterHandle) -> Iterator[Any]:
    def run(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        out = subprocess.run(
            [str(cluster.bin_dir / "helm"), *args],
            env=cluster.env(),
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert not check or out.returncode == 0, f"helm {' '.join(args)}: {out.stderr}"
        return out

    yield run


@pytest.fixture(scope="module")
def tools() -> Path:
    """hack/chart-tools.sh installs the pinned linters once (cached) and prints their bin dir."""
    out = subprocess.run(
        [str(ROOT / "hack" / "chart-tools.sh")],
        check=True,
        capture_output=True,
        text=True,
        timeout=1200,
    )
    return Path(out.stdout.strip().splitlines()[-1])


def _template(helm: Any, *args: str, namespace: str = "triton-vllm-operator") -> str:
    out: str = helm("template", RELEASE, str(CHART), "--namespace", namespace, *args).stdout
    return out


def _docs(text: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(text) if d]


@pytest.fixture(scope="module")
def rendered(helm: Any) -> dict[str, str]:
    return {name: _template(helm, *args) for name, args in VARIANTS.items()}


@pytest.fixture(scope="module")
def operator_rendered(tmp_path_factory: pytest.TempPathFactory) -> str:
    """What the operator creates for examples/llama-3.1-8b.yaml on the simulated GPU pool, in a
    namespace of its own (as in a cluster, where it renders into the model's namespace)."""
    model = yaml.safe_load((ROOT / "examples" / "llama-3.1-8b.yaml").read_text())
    model["metadata"]["namespace"] = "models"
    path = tmp_path_factory.mktemp("operator") / "model.yaml"
    path.write_text(yaml.safe_dump(model))
    out = subprocess.run(
        [
            str(ROOT / ".venv" / "bin" / "python"),
            "-m",
            "triton_vllm_operator",
            "render",
            str(path),
            "--nodes",
            str(ROOT / "tests" / "gpu-nodes.yaml"),
        ],
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "kind: Deployment" in out.stdout
    return out.stdout


# --------------------------------------------------------------------------------------------
# helm lint and the values schema


def test_helm_lint_strict_passes(helm: Any) -> None:
    for args in VARIANTS.values():
        out = helm("lint", "--strict", str(CHART), *args)
        assert "0 chart(s) failed" in out.stdout, out.stdout


@pytest.mark.parametrize(
    "bad",
    [
        "replicaCount=0",
        "image.pullPolicy=Sometimes",
        "operator.logFormat=xml",
        "operator.unknown=1",
        "watchNamespaces={Not_A_Namespace}",
        "image.digest=latest",
    ],
)
def test_the_schema_rejects_unknown_or_malformed_values(helm: Any, bad: str) -> None:
    out = helm("template", RELEASE, str(CHART), "--set", bad, check=False)
    assert out.returncode != 0 and "schema" in out.stderr.lower(), out.stderr


def test_the_deployment_runs_one_hardened_non_root_operator(rendered: dict[str, str]) -> None:
    (deploy,) = [d for d in _docs(rendered["defaults"]) if d["kind"] == "Deployment"]
    spec = deploy["spec"]
    # Two replicas, one leader: upgrades surge a standby before the old pods stop.
    assert spec["replicas"] == 2 and spec["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    pod = spec["template"]["spec"]
    assert pod["automountServiceAccountToken"] is True
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    (container,) = pod["containers"]
    sc = container["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]} and sc["runAsUser"] >= 10000
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert container["readinessProbe"]["tcpSocket"] == {"port": "health"}
    assert container["ports"] == [
        {"name": "health", "containerPort": 8080, "protocol": "TCP"},
        {"name": "metrics", "containerPort": 8081, "protocol": "TCP"},
    ]
    env = {
        e["name"]: e["valueFrom"]["fieldRef"]["fieldPath"] if "valueFrom" in e else e["value"]
        for e in container["env"]
    }
    assert env == {
        "TRITON_VLLM_BACKEND": "tritonvllm",
        "TRITON_VLLM_NAMESPACES": "",
        "TRITON_VLLM_LOG_FORMAT": "text",
        "TRITON_VLLM_LEADER_ELECTION": "true",
        "TRITON_VLLM_LEASE_NAME": f"{RELEASE}-triton-vllm-operator",
        "TRITON_VLLM_LEASE_NAMESPACE": "metadata.namespace",
        "TRITON_VLLM_IDENTITY": "metadata.name",
        "TRITON_VLLM_LEASE_DURATION_SECONDS": "15",
        "TRITON_VLLM_LEASE_RENEW_DEADLINE_SECONDS": "10",
        "TRITON_VLLM_LEASE_RETRY_SECONDS": "2",
        "TRITON_VLLM_API_QPS": "400",
        "TRITON_VLLM_API_BURST": "800",
        "TRITON_VLLM_API_CONNECT_TIMEOUT_SECONDS": "5",
        "TRITON_VLLM_API_READ_TIMEOUT_SECONDS": "30",
        "TRITON_VLLM_RESYNC_SECONDS": "600",
        "TRITON_VLLM_RELIST_SECONDS": "1800",
        "TRITON_VLLM_METRICS_BIND_ADDRESS": ":8081",
        "TRITON_VLLM_LIVENESS_ENDPOINT": "http://0.0.0.0:8080/healthz",
        "TRITON_VLLM_MODEL_FACTS": "true",
        "TRITON_VLLM_FACTS_CACHE_DIR": "/var/cache/model-facts",
        "TRITON_VLLM_HF_TOKEN_ENDPOINTS": "https://huggingface.co",
        "TRITON_VLLM_PREFETCH_PROGRESS": "true",
    }
    assert container["resources"]["limits"] == container["resources"]["requests"]
    # The root filesystem is read-only: the facts cache is a mounted emptyDir.
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert mounts["model-facts"] == "/var/cache/model-facts"
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["model-facts"]["emptyDir"] == {"sizeLimit": "32Mi"}


def test_model_facts_settings_reach_the_operator_or_are_turned_off(helm: Any) -> None:
    def operator_env(*values: str) -> tuple[dict[str, Any], dict[str, Any]]:
        docs = _docs(_template(helm, *values))
        (deploy,) = [d for d in docs if d["kind"] == "Deployment"]
        (policy,) = [d for d in docs if d["kind"] == "NetworkPolicy"]
        container = deploy["spec"]["template"]["spec"]["containers"][0]
        return {e["name"]: e.get("value") for e in container["env"]}, policy

    env, policy = operator_env("--set", "operator.modelFacts.hfEndpoint=http://mirror.local")
    assert env["TRITON_VLLM_HF_ENDPOINT"] == "http://mirror.local"
    ports = [(p["port"], p["protocol"]) for rule in policy["spec"]["egress"] for p in rule["ports"]]
    assert (53, "UDP") in ports and (443, "TCP") in ports
    env, policy = operator_env("--set", "operator.modelFacts.enabled=false")
    assert env["TRITON_VLLM_MODEL_FACTS"] == "false"
    assert "TRITON_VLLM_FACTS_CACHE_DIR" not in env
    assert [p["port"] for p in policy["spec"]["egress"][0]["ports"]] == [443, 6443]
    assert len(policy["spec"]["egress"]) == 1


def test_values_reach_the_operators_environment(helm: Any) -> None:
    text = _template(
        helm,
        "--set",
        "operator.servingImage=registry.example/serving:1",
        "--set",
        "operator.logFormat=json",
        "--set",
        "watchNamespaces={team-a,team-b}",
        "--set",
        "operator.healthPort=9090",
        "--set",
        "operator.autoscaling.prometheusAddress=http://prometheus.monitoring:9090",
        "--set",
        "operator.hubTokenEndpoints={https://huggingface.co,https://hf.corp.example}",
    )
    (deploy,) = [d for d in _docs(text) if d["kind"] == "Deployment"]
    env = {
        e["name"]: e.get("value")
        for e in deploy["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    assert env["TRITON_VLLM_IMAGE"] == "registry.example/serving:1"
    assert env["TRITON_VLLM_LOG_FORMAT"] == "json"
    assert env["TRITON_VLLM_NAMESPACES"] == "team-a,team-b"
    assert env["TRITON_VLLM_LIVENESS_ENDPOINT"] == "http://0.0.0.0:9090/healthz"
    assert env["TRITON_VLLM_PROMETHEUS_ADDRESS"] == "http://prometheus.monitoring:9090"
    endpoints = "https://huggingface.co,https://hf.corp.example"
    assert env["TRITON_VLLM_HF_TOKEN_ENDPOINTS"] == endpoints


def test_pod_monitors_render_only_where_the_prometheus_operator_is_served(helm: Any) -> None:
    assert "PodMonitor" not in [d["kind"] for d in _docs(_template(helm))]
    served = ["--api-versions", "monitoring.coreos.com/v1"]
    monitors = {
        d["metadata"]["name"]: d["spec"]
        for d in _docs(_template(helm, *served, "--set", "metrics.podMonitors.labels.release=kps"))
        if d["kind"] == "PodMonitor"
    }
    operator = monitors[f"{RELEASE}-triton-vllm-operator"]
    assert [e["port"] for e in operator["podMetricsEndpoints"]] == ["metrics"]
    serving = monitors[f"{RELEASE}-triton-vllm-operator-serving"]
    # Triton's metrics port and vLLM's own /metrics on the OpenAI port, of the serving pods only.
    assert [e["port"] for e in serving["podMetricsEndpoints"]] == ["metrics", "openai"]
    assert serving["selector"]["matchLabels"]["llm-d.ai/engine-type"] == "vllm"
    assert serving["namespaceSelector"] == {"any": True}
    namespaced = _docs(_template(helm, *served, "--set", "watchNamespaces={team-a}"))
    (serving_ns,) = [d for d in namespaced if d["metadata"]["name"].endswith("-serving")]
    assert serving_ns["spec"]["namespaceSelector"] == {"matchNames": ["team-a"]}
    off = _template(helm, *served, "--set", "metrics.podMonitors.enabled=false")
    assert "PodMonitor" not in [d["kind"] for d in _docs(off)]


def test_the_metrics_port_is_open_to_scrapes_in_the_network_policy(helm: Any) -> None:
    (policy,) = [d for d in _docs(_template(helm)) if d["kind"] == "NetworkPolicy"]
    ports = [p["port"] for rule in policy["spec"]["ingress"] for p in rule["ports"]]
    assert ports == ["health", "metrics"]


def test_the_dashboard_ships_for_grafanas_sidecar_only_when_enabled(helm: Any) -> None:
    def dashboards(*args: str) -> list[dict[str, Any]]:
        docs = _docs(_template(helm, *args))
        return [
            d for d in docs if d["kind"] == "ConfigMap" and "dashboard" in d["metadata"]["name"]
        ]

    assert dashboards() == []
    (configmap,) = dashboards("--set", "dashboard.enabled=true")
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    board = json.loads(configmap["data"]["triton-vllm.json"])
    assert board["uid"] == "triton-vllm"
    assert json.loads((CHART / "files" / "dashboards" / "triton-vllm.json").read_text()) == board


def test_the_rendered_crd_is_crds_dir_plus_the_keep_policy(rendered: dict[str, str]) -> None:
    (crd,) = [d for d in _docs(rendered["defaults"]) if d["kind"] == "CustomResourceDefinition"]
    assert crd["metadata"]["annotations"] == {"helm.sh/resource-policy": "keep"}
    assert crd["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "Helm"
    source = yaml.safe_load(CRD_FILE.read_text())
    for key in ("labels", "annotations"):
        crd["metadata"].pop(key)
        source["metadata"].pop(key, None)
    assert crd == source
    assert not [d for d in _docs(rendered["no-crds"]) if d["kind"] == "CustomResourceDefinition"]


def _aggregated(doc: dict[str, Any]) -> bool:
    """A role for users, folded into Kubernetes' view/edit/admin: not the operator's."""
    labels = doc["metadata"].get("labels") or {}
    return any(k.startswith("rbac.authorization.k8s.io/aggregate-to-") for k in labels)


def _rules(docs: list[dict[str, Any]], kind: str) -> dict[str, list[dict[str, Any]]]:
    """The operator's own roles' rules, by namespace/name."""
    return {
        f"{d['metadata'].get('namespace', '')}/{d['metadata']['name']}": d["rules"]
        for d in docs
        if d["kind"] == kind and not _aggregated(d)
    }


def test_users_get_models_through_the_aggregated_view_and_edit_roles(
    rendered: dict[str, str],
) -> None:
    roles = {
        d["metadata"]["name"].rsplit("-", 1)[-1]: d
        for d in _docs(rendered["defaults"])
        if d["kind"] == "ClusterRole" and _aggregated(d)
    }
    assert set(roles) == {"view", "edit"}
    view, edit = roles["view"], roles["edit"]
    assert view["metadata"]["labels"]["rbac.authorization.k8s.io/aggregate-to-view"] == "true"
    assert set(view["rules"][0]["verbs"]) == {"get", "list", "watch"}
    assert "tritonvllmmodels/status" in view["rules"][0]["resources"]
    for role in ("edit", "admin"):
        assert edit["metadata"]["labels"][f"rbac.authorization.k8s.io/aggregate-to-{role}"]
    assert edit["rules"][0]["resources"] == ["tritonvllmmodels"]
    assert "create" in edit["rules"][0]["verbs"] and "escalate" not in edit["rules"][0]["verbs"]


def test_rbac_has_no_wildcards_gets_secrets_only_and_deletes_only_what_it_must(
    rendered: dict[str, str],
) -> None:
    allowed_verbs = {"list", "watch", "get", "create", "patch"}
    # Stale immutable configs and the budget of a model scaled to one replica; the Lease.
    # The autoscaler of a model whose spec.autoscaling went away. Secrets and pod logs: get
    # only (tests/unit/test_chart_rbac.py covers their values).
    extra = {
        "configmaps": {"delete"},
        "poddisruptionbudgets": {"delete"},
        "leases": {"update"},
        "horizontalpodautoscalers": {"delete"},
        "scaledobjects": {"delete"},
        "inferencepools": {"delete"},
        "statefulsets": {"delete"},
    }
    # The models' finalizers: update only, for blockOwnerDeletion (docs/security.md).
    only = {"secrets": {"get"}, "pods/log": {"get"}, "tritonvllmmodels/finalizers": {"update"}}
    for variant, text in rendered.items():
        docs = _docs(text)
        for kind in ("ClusterRole", "Role"):
            for name, rules in _rules(docs, kind).items():
                for rule in rules:
                    fields = rule["apiGroups"] + rule["resources"] + rule["verbs"]
                    assert "*" not in fields, f"{variant} {name}: {rule}"
                    (resource,) = rule["resources"] if len(rule["resources"]) == 1 else ("",)
                    allowed = only.get(resource) or allowed_verbs | extra.get(resource, set())
                    assert set(rule["verbs"]) <= allowed, f"{variant} {name}: {rule}"


def test_watch_namespaces_gives_a_role_per_namespace_and_only_cluster_reads(
    rendered: dict[str, str],
) -> None:
    docs = _docs(rendered["namespaced"])
    roles = {k: v for k, v in _rules(docs, "Role").items() if not k.endswith("-leader-election")}
    assert set(roles) == {
        f"team-a/{RELEASE}-triton-vllm-operator",
        f"team-b/{RELEASE}-triton-vllm-operator",
    }
    bindings = [
        d
        for d in docs
        if d["kind"] == "RoleBinding" and not d["metadata"]["name"].endswith("-leader-election")
    ]
    assert {b["metadata"]["namespace"] for b in bindings} == {"team-a", "team-b"}
    (cluster_rules,) = _rules(docs, "ClusterRole").values()
    cluster_resources = {r for rule in cluster_rules for r in rule["resources"]}
    assert cluster_resources == {"nodes", "namespaces", "customresourcedefinitions"}
    assert all(set(rule["verbs"]) == {"list", "watch"} for rule in cluster_rules)
    default_docs = _docs(rendered["defaults"])
    (leases,) = _rules(default_docs, "Role").values()  # leader election, release namespace only
    assert [r["resources"] for r in leases] == [["leases"]]
    (all_rules,) = _rules(default_docs, "ClusterRole").values()
    assert "namespaces" not in {r for rule in all_rules for r in rule["resources"]}


# --------------------------------------------------------------------------------------------
# kubeconform, strict, with schemas from the running apiserver


def _schema_file_name(api_version: str, kind: str) -> str:
    """The name kubeconform's template `{{ .ResourceKind }}_{{ .Group }}_{{ .ResourceAPIVersion }}`
    gives (its Group is the part before the slash, "v1" for the core group)."""
    parts = api_version.split("/")
    return f"{kind.lower()}_{parts[0]}_{parts[-1]}.json"


def _strict(node: Any) -> Any:
    """OpenAPI v2 -> JSON Schema as kubeconform expects it: int-or-string and quantities accept
    both types, and objects with declared properties reject unknown ones (strict)."""
    if isinstance(node, list):
        return [_strict(n) for n in node]
    if not isinstance(node, dict):
        return node
    if node.get("format") == "int-or-string":
        return {"oneOf": [{"type": "string"}, {"type": "integer"}]}
    out = {k: _strict(v) for k, v in node.items()}
    if (
        "properties" in out
        and "additionalProperties" not in out
        and not out.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


@pytest.fixture(scope="module")
def schema_dir(cluster: ClusterHandle, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One standalone strict schema per group/version/kind the apiserver serves. Kubernetes 1.36
    schemas cannot be downloaded here; the apiserver's own /openapi/v2 is the source of truth."""
    doc = json.loads(cluster.kubectl("get", "--raw", "/openapi/v2", timeout=120).stdout)
    definitions = doc["definitions"]
    definitions["io.k8s.apimachinery.pkg.api.resource.Quantity"] = {
        "oneOf": [{"type": "string"}, {"type": "number"}]
    }
    strict = {name: _strict(d) for name, d in definitions.items()}
    out = tmp_path_factory.mktemp("schemas")

    def reachable(name: str) -> set[str]:
        seen: set[str] = set()
        todo = [name]
        while todo:
            current = todo.pop()
            if current in seen:
                continue
            seen.add(current)
            todo += re.findall(r'"#/definitions/([^"]+)"', json.dumps(strict[current]))
        return seen

    for name, definition in definitions.items():
        for gvk in definition.get("x-kubernetes-group-version-kind", []):
            api_version = f"{gvk['group']}/{gvk['version']}" if gvk["group"] else gvk["version"]
            schema = {
                "$ref": f"#/definitions/{name}",
                "definitions": {n: strict[n] for n in reachable(name)},
            }
            (out / _schema_file_name(api_version, gvk["kind"])).write_text(json.dumps(schema))
    return out


def _kubeconform(tools: Path, schema_dir: Path, manifests: str) -> dict[str, Any]:
    out = subprocess.run(
        [
            str(tools / "kubeconform"),
            "-strict",
            "-summary",
            "-output",
            "json",
            "-schema-location",
            str(schema_dir / "{{ .ResourceKind }}_{{ .Group }}_{{ .ResourceAPIVersion }}.json"),
            "-",
        ],
        input=manifests,
        capture_output=True,
        text=True,
        timeout=300,
    )
    report: dict[str, Any] = json.loads(out.stdout)
    bad = [r for r in report.get("resources", []) if r["status"] != "statusValid"]
    assert out.returncode == 0 and not bad, json.dumps(bad, indent=1) + out.stderr
    return report


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_kubeconform_accepts_the_rendered_chart(
    tools: Path, schema_dir: Path, rendered: dict[str, str], variant: str
) -> None:
    report = _kubeconform(tools, schema_dir, rendered[variant])
    assert report["summary"]["valid"] == len(_docs(rendered[variant]))


def test_kubeconform_accepts_what_the_operator_renders(
    tools: Path, schema_dir: Path, operator_rendered: str
) -> None:
    report = _kubeconform(tools, schema_dir, operator_rendered)
    assert report["summary"]["valid"] == 3


def test_kubeconform_rejects_an_unknown_field(
    tools: Path, schema_dir: Path, rendered: dict[str, str]
) -> None:
    """Proves the generated schemas are strict: a typo in a pod field is an error."""
    broken = rendered["defaults"].replace("readOnlyRootFilesystem:", "readOnlyRootFileSystem:")
    with pytest.raises(AssertionError, match="readOnlyRootFileSystem"):
        _kubeconform(tools, schema_dir, broken)


# --------------------------------------------------------------------------------------------
# checkov and kube-score; exceptions in lint/*.yaml, justified in docs/security.md


def _checkov_failures(tools: Path, manifests: str, tmp: Path, config: Path | None) -> set[str]:
    (tmp / "manifests.yaml").write_text(manifests)
    args = [str(tools / "checkov"), "--directory", str(tmp), "--output", "json"]
    args += ["--config-file", str(config)] if config else ["--framework", "kubernetes"]
    args += ["--skip-download"]
    out = subprocess.run(args, capture_output=True, text=True, timeout=600)
    report = json.loads(out.stdout)
    reports = report if isinstance(report, list) else [report]
    assert sum(r["summary"]["passed"] for r in reports) > 0, out.stdout[-2000:] + out.stderr
    return {c["check_id"] for r in reports for c in r["results"]["failed_checks"]}


def _skips(config: Path) -> set[str]:
    return set(yaml.safe_load(config.read_text())["skip-check"])


@pytest.mark.parametrize(
    ("target", "config"),
    [("chart", "checkov-chart.yaml"), ("operator", "checkov-operator.yaml")],
)
def test_checkov_finds_nothing_but_the_justified_exceptions(
    tools: Path,
    rendered: dict[str, str],
    operator_rendered: str,
    tmp_path: Path,
    target: str,
    config: str,
) -> None:
    manifests = rendered["defaults"] if target == "chart" else operator_rendered
    (tmp_path / "with").mkdir()
    (tmp_path / "without").mkdir()
    assert _checkov_failures(tools, manifests, tmp_path / "with", LINT / config) == set()
    raw = _checkov_failures(tools, manifests, tmp_path / "without", None)
    skipped = _skips(LINT / config)
    assert not raw - skipped, f"new findings: {sorted(raw - skipped)}"
    assert not skipped - raw, f"stale exceptions (remove them and their docs): {skipped - raw}"


def test_checkov_passes_the_digest_check_when_a_digest_is_set(
    tools: Path, rendered: dict[str, str], tmp_path: Path
) -> None:
    assert "CKV_K8S_43" not in _checkov_failures(tools, rendered["digest"], tmp_path, None)


def _kube_score_failures(tools: Path, manifests: str, ignore: list[str]) -> set[str]:
    """Every test kube-score has, the optional ones included, minus `ignore`. (Its
    --all-default-optional cannot be combined with --ignore-test: enable them one by one.)"""
    listing = subprocess.run(
        [str(tools / "kube-score"), "list"], check=True, capture_output=True, text=True
    ).stdout
    tests = [line.split(",") for line in listing.splitlines() if line.count(",") >= 3]
    args = [str(tools / "kube-score"), "score", *KUBE_SCORE_ARGS, "--output-format", "json"]
    for row in tests:
        test_id, optional = row[0], row[-1] == "optional"
        if test_id in ignore:
            args += ["--ignore-test", test_id]
        elif optional:
            args += ["--enable-optional-test", test_id]
    out = subprocess.run([*args, "-"], input=manifests, capture_output=True, text=True, timeout=120)
    assert out.stdout.strip().startswith("["), out.stdout + out.stderr
    return {
        f"{c['check']['id']}"
        for obj in json.loads(out.stdout)
        for c in obj["checks"]
        if not c["skipped"] and c["grade"] < 10
    }


@pytest.mark.parametrize("target", ["chart", "operator"])
def test_kube_score_finds_nothing_but_the_justified_exceptions(
    tools: Path, rendered: dict[str, str], operator_rendered: str, target: str
) -> None:
    ignore = yaml.safe_load((LINT / "kube-score.yaml").read_text())[target] or []
    manifests = rendered["defaults"] if target == "chart" else operator_rendered
    assert _kube_score_failures(tools, manifests, ignore) == set()
    raw = _kube_score_failures(tools, manifests, [])
    assert not raw - set(ignore), f"new findings: {sorted(raw - set(ignore))}"
    assert not set(ignore) - raw, f"stale exceptions: {sorted(set(ignore) - raw)}"


def test_kube_score_finds_nothing_in_namespaced_mode(tools: Path, rendered: dict[str, str]) -> None:
    assert _kube_score_failures(tools, rendered["namespaced"], []) == set()


# --------------------------------------------------------------------------------------------
# helm install / uninstall on the local control plane


def _adopt_crd_if_present(cluster: ClusterHandle, namespace: str) -> None:
    """Helm refuses to take over an object it did not create: a CRD applied with kubectl (other
    tests do), or kept from an earlier release, is adopted as the chart's README says."""
    if cluster.kubectl("get", "crd", CRD_NAME, check=False).returncode != 0:
        return
    cluster.kubectl("label", "crd", CRD_NAME, "app.kubernetes.io/managed-by=Helm", "--overwrite")
    cluster.kubectl(
        "annotate",
        "crd",
        CRD_NAME,
        "--overwrite",
        f"meta.helm.sh/release-name={RELEASE}",
        f"meta.helm.sh/release-namespace={namespace}",
    )


def _sa(namespace: str) -> str:
    return f"system:serviceaccount:{namespace}:{RELEASE}-triton-vllm-operator"


def _can_i(cluster: ClusterHandle, user: str, *args: str) -> bool:
    out = cluster.kubectl("auth", "can-i", f"--as={user}", *args, check=False)
    assert out.stdout.strip() in ("yes", "no"), out.stdout + out.stderr
    return out.stdout.strip() == "yes"


def _can_i_list(cluster: ClusterHandle, user: str, namespace: str) -> set[tuple[str, str]]:
    """(resource, verb) pairs `kubectl auth can-i --list` reports for user in namespace."""
    out = cluster.kubectl("auth", "can-i", "--list", f"--as={user}", "-n", namespace).stdout
    pairs = set()
    for line in out.splitlines()[1:]:
        match = re.match(r"^(\S+)\s+\[\]\s+\[\]\s+\[(.*)\]$", line.strip())
        if match:
            for verb in match[2].split():
                pairs.add((match[1], verb))
    return pairs


NAMESPACED_RIGHTS = {
    ("tritonvllmmodels.tritonvllm.io", "list"),
    ("tritonvllmmodels.tritonvllm.io", "watch"),
    ("tritonvllmmodels.tritonvllm.io", "patch"),
    ("tritonvllmmodels.tritonvllm.io/status", "patch"),
    # An autoscaled multi-node model's first spec.replicas, through the scale subresource.
    ("tritonvllmmodels.tritonvllm.io/scale", "patch"),
    # blockOwnerDeletion on the children, under OwnerReferencesPermissionEnforcement.
    ("tritonvllmmodels.tritonvllm.io/finalizers", "update"),
    *{
        (r, v)
        for r in (
            "configmaps",
            "services",
            "deployments.apps",
            "statefulsets.apps",
            "poddisruptionbudgets.policy",
            "jobs.batch",
            "horizontalpodautoscalers.autoscaling",
            "scaledobjects.keda.sh",
            "inferencepools.inference.networking.k8s.io",
        )
        for v in ("list", "watch", "get", "create", "patch")
    },
    # Read only: a ConfigMap stays while a ReplicaSet with replicas mounts it.
    ("replicasets.apps", "list"),
    ("replicasets.apps", "watch"),
    ("configmaps", "delete"),
    # The groups of a multi-node model's replicas scaled away.
    ("statefulsets.apps", "delete"),
    ("poddisruptionbudgets.policy", "delete"),
    ("horizontalpodautoscalers.autoscaling", "delete"),
    ("scaledobjects.keda.sh", "delete"),
    ("inferencepools.inference.networking.k8s.io", "delete"),
    ("pods", "list"),
    ("pods", "watch"),
    ("events", "create"),
    # Only get: the token a model names (facts of gated repos); a prefetch pod's progress.
    ("secrets", "get"),
    ("pods/log", "get"),
}
# `kubectl auth can-i VERB RESOURCE` resolves the resource by discovery: KEDA's and the
# InferencePool's kinds only where their CRDs are installed (the --list comparison covers their
# rules either way).
CHECKABLE_RIGHTS = {
    (r, v)
    for r, v in NAMESPACED_RIGHTS
    if not r.endswith((".keda.sh", ".inference.networking.k8s.io"))
}
CLUSTER_RIGHTS = {
    ("nodes", "list"),
    ("nodes", "watch"),
    ("customresourcedefinitions.apiextensions.k8s.io", "list"),
    ("customresourcedefinitions.apiextensions.k8s.io", "watch"),
}
FORBIDDEN = [
    ("list", "secrets"),
    ("watch", "secrets"),
    ("get", "pods"),
    ("create", "pods"),
    ("create", "pods/exec"),
    ("delete", "deployments.apps"),
    ("update", "deployments.apps"),
    ("delete", "services"),
    ("create", "tritonvllmmodels.tritonvllm.io"),
    ("update", "tritonvllmmodels.tritonvllm.io"),
    ("delete", "tritonvllmmodels.tritonvllm.io"),
    ("create", "serviceaccounts/token"),
    ("create", "rolebindings.rbac.authorization.k8s.io"),
    ("impersonate", "serviceaccounts"),
]
FORBIDDEN_CLUSTER = [
    ("delete", "nodes"),
    ("patch", "nodes"),
    ("get", "nodes"),
    ("create", "customresourcedefinitions.apiextensions.k8s.io"),
    ("patch", "customresourcedefinitions.apiextensions.k8s.io"),
    ("delete", "customresourcedefinitions.apiextensions.k8s.io"),
    ("create", "clusterroles.rbac.authorization.k8s.io"),
    ("escalate", "clusterroles.rbac.authorization.k8s.io"),
    ("bind", "clusterroles.rbac.authorization.k8s.io"),
    ("*", "*"),
]


def _install(helm: Any, cluster: ClusterHandle, namespace: str, *args: str) -> None:
    """helm install, then wait until the operator's pod exists: admitted by the API server, under
    the namespace's Pod Security Standard. (It is not waited Ready: the simulated CPU node has
    no ephemeral-storage to schedule it on, and kwok would only fake its readiness anyway.)"""
    _adopt_crd_if_present(cluster, namespace)
    helm("install", RELEASE, str(CHART), "--namespace", namespace, *args)
    wait_until(
        lambda: cluster.kubectl(
            "get",
            "pods",
            "-n",
            namespace,
            "-l",
            f"app.kubernetes.io/instance={RELEASE}",
            "-o",
            "name",
        ).stdout.strip(),
        timeout=60,
        what=f"the operator pod in {namespace}",
    )


def _uninstall_leaves_only_the_crd(helm: Any, cluster: ClusterHandle, namespace: str) -> None:
    helm("uninstall", RELEASE, "--namespace", namespace, "--wait", "--timeout", "120s")
    selector = f"app.kubernetes.io/instance={RELEASE}"

    def gone() -> bool:
        left = cluster.kubectl(
            "get",
            "deployments,replicasets,pods,serviceaccounts,networkpolicies,roles,rolebindings",
            "--all-namespaces",
            "-l",
            selector,
            "-o",
            "name",
        ).stdout.split()
        left += [
            name
            for name in cluster.kubectl(
                "get", "clusterroles,clusterrolebindings", "-l", selector, "-o", "name"
            ).stdout.split()
            if name.endswith(f"-{namespace}")
        ]
        left += cluster.kubectl(
            "get", "secrets", "-n", namespace, "-l", f"owner=helm,name={RELEASE}", "-o", "name"
        ).stdout.split()
        return not left

    wait_until(gone, timeout=60, what=f"helm uninstall in {namespace} to leave nothing behind")
    # The CRD stays (helm.sh/resource-policy: keep): deleting it would delete every model.
    crd = json.loads(cluster.kubectl("get", "crd", CRD_NAME, "-o", "json").stdout)
    assert crd["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"


def test_helm_install_cluster_wide_grants_exactly_what_the_operator_uses(
    helm: Any, cluster: ClusterHandle, namespace: str
) -> None:
    # The operator pod must pass the restricted Pod Security Standard, enforced here.
    cluster.kubectl(
        "label", "namespace", namespace, "pod-security.kubernetes.io/enforce=restricted"
    )
    _install(helm, cluster, namespace)
    try:
        deploy = json.loads(
            cluster.kubectl(
                "get",
                "deployment",
                f"{RELEASE}-triton-vllm-operator",
                "-n",
                namespace,
                "-o",
                "json",
            ).stdout
        )
        assert (
            deploy["spec"]["template"]["spec"]["serviceAccountName"]
            == _sa(namespace).split(":")[-1]
        )
        cluster.kubectl("wait", "--for=condition=Established", f"crd/{CRD_NAME}", "--timeout=60s")

        user = _sa(namespace)
        # Exactly our rules on top of what every authenticated user has (discovery, reviews):
        # the baseline is an unbound ServiceAccount of the same namespace.
        other = f"{namespace}-other"
        cluster.kubectl("create", "namespace", other)
        try:
            baseline = _can_i_list(cluster, f"system:serviceaccount:{namespace}:nobody", other)
            granted = _can_i_list(cluster, user, other) - baseline
            assert granted == NAMESPACED_RIGHTS | CLUSTER_RIGHTS
        finally:
            cluster.kubectl("delete", "namespace", other, "--wait=false")

        for resource, verb in CHECKABLE_RIGHTS:
            name, _, sub = resource.partition("/")
            extra = [f"--subresource={sub}"] if sub else []
            assert _can_i(cluster, user, verb, name, "--all-namespaces", *extra), (verb, resource)
        for resource, verb in CLUSTER_RIGHTS:
            assert _can_i(cluster, user, verb, resource), (verb, resource)
        for verb, resource in FORBIDDEN:
            assert not _can_i(cluster, user, verb, resource, "-n", namespace), (verb, resource)
            assert not _can_i(cluster, user, verb, resource, "--all-namespaces"), (verb, resource)
        for verb, resource in FORBIDDEN_CLUSTER:
            assert not _can_i(cluster, user, verb, resource), (verb, resource)
        assert not _can_i(cluster, user, "list", "namespaces")
        # Users: whoever is bound to Kubernetes' edit role in a namespace may edit models there,
        # view may read them (the chart's roles are aggregated into both).
        cluster.kubectl("create", "serviceaccount", "editor", "-n", namespace)
        cluster.kubectl("create", "rolebinding", "editor", "--clusterrole=edit",
                        f"--serviceaccount={namespace}:editor", "-n", namespace)  # fmt: skip
        editor = f"system:serviceaccount:{namespace}:editor"
        wait_until(
            lambda: _can_i(
                cluster, editor, "create", "tritonvllmmodels.tritonvllm.io", "-n", namespace
            ),
            timeout=30,
            what="the edit role to include TritonVLLMModels",
        )
        assert _can_i(cluster, editor, "list", "tritonvllmmodels.tritonvllm.io", "-n", namespace)
        status = ("tritonvllmmodels.tritonvllm.io", "--subresource=status", "-n", namespace)
        assert not _can_i(cluster, editor, "patch", *status)  # the operator's alone

        # What the operator really does with those rights: a server-side apply that creates a
        # child, a second apply that changes it; and it cannot delete a Service.
        child = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "ssa-probe", "namespace": namespace},
            "data": {"config.pbtxt": ""},
        }
        for value in ("first", "second"):
            child["data"]["config.pbtxt"] = value
            applied = cluster.kubectl(
                "apply",
                "--server-side",
                "--field-manager=triton-vllm-operator",
                f"--as={user}",
                "-f",
                "-",
                input=yaml.safe_dump(child),
                check=False,
            )
            assert applied.returncode == 0, applied.stderr
        denied = cluster.kubectl(
            "delete", "service", "ssa-probe", "-n", namespace, f"--as={user}", check=False
        )
        assert denied.returncode != 0 and "forbidden" in denied.stderr.lower()
        secret = cluster.kubectl("get", "secrets", "-n", namespace, f"--as={user}", check=False)
        assert secret.returncode != 0 and "forbidden" in secret.stderr.lower()
    finally:
        _uninstall_leaves_only_the_crd(helm, cluster, namespace)


def test_helm_install_namespaced_grants_rights_only_in_the_watched_namespaces(
    helm: Any, cluster: ClusterHandle, namespace: str
) -> None:
    watched = f"{namespace}-models"
    cluster.kubectl("create", "namespace", watched)
    try:
        _install(helm, cluster, namespace, "--set", f"watchNamespaces={{{watched}}}")
        try:
            user = _sa(namespace)
            for resource, verb in CHECKABLE_RIGHTS:
                name, _, sub = resource.partition("/")
                extra = [f"--subresource={sub}"] if sub else []
                assert _can_i(cluster, user, verb, name, "-n", watched, *extra), (verb, resource)
                # Not in its own namespace, nor cluster-wide.
                assert not _can_i(cluster, user, verb, name, "-n", namespace, *extra)
                assert not _can_i(cluster, user, verb, name, "--all-namespaces", *extra)
            for resource, verb in CLUSTER_RIGHTS | {
                ("namespaces", "list"),
                ("namespaces", "watch"),
            }:
                assert _can_i(cluster, user, verb, resource), (verb, resource)
            for verb, resource in FORBIDDEN:
                assert not _can_i(cluster, user, verb, resource, "-n", watched), (verb, resource)
        finally:
            _uninstall_leaves_only_the_crd(helm, cluster, namespace)
    finally:
        cluster.kubectl("delete", "namespace", watched, "--wait=false")


def test_helm_upgrade_keeps_the_crd_and_applies_new_values(
    helm: Any, cluster: ClusterHandle, namespace: str
) -> None:
    _install(helm, cluster, namespace)
    try:
        helm(
            "upgrade",
            RELEASE,
            str(CHART),
            "--namespace",
            namespace,
            "--set",
            "operator.logFormat=json",
        )
        deploy = json.loads(
            cluster.kubectl(
                "get",
                "deployment",
                f"{RELEASE}-triton-vllm-operator",
                "-n",
                namespace,
                "-o",
                "json",
            ).stdout
        )
        env = {
            e["name"]: e.get("value")
            for e in deploy["spec"]["template"]["spec"]["containers"][0]["env"]
        }
        assert env["TRITON_VLLM_LOG_FORMAT"] == "json"
        crd = json.loads(cluster.kubectl("get", "crd", CRD_NAME, "-o", "json").stdout)
        assert crd["metadata"]["annotations"]["meta.helm.sh/release-namespace"] == namespace
    finally:
        _uninstall_leaves_only_the_crd(helm, cluster, namespace)


# --------------------------------------------------------------------------------------------
# The real operator, on the chart's rights alone


def _service_account_kubeconfig(cluster: ClusterHandle, namespace: str, path: Path) -> Path:
    """A kubeconfig that authenticates as the chart's ServiceAccount (a bound token), as the
    operator's pod does in a cluster."""
    token = cluster.kubectl(
        "create", "token", SERVICE_ACCOUNT, "-n", namespace, "--duration=1h"
    ).stdout.strip()
    admin = yaml.safe_load(cluster.kubeconfig.read_text())
    server = admin["clusters"][0]
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [server],
                "users": [{"name": "operator", "user": {"token": token}}],
                "contexts": [
                    {
                        "name": "operator",
                        "context": {"cluster": server["name"], "user": "operator"},
                    }
                ],
                "current-context": "operator",
            }
        )
    )
    path.chmod(0o600)
    return path


def _model_conditions(cluster: ClusterHandle, namespace: str, name: str) -> dict[str, str]:
    out = cluster.kubectl("get", "tvm", name, "-n", namespace, "-o", "json", check=False)
    if out.returncode != 0:
        return {}
    conditions = json.loads(out.stdout).get("status", {}).get("conditions", [])
    return {c["type"]: c["status"] for c in conditions}


@pytest.mark.parametrize("mode", ["cluster-wide", "namespaced"])
def test_the_operator_serves_a_model_with_only_the_charts_rights(
    helm: Any,
    cluster: ClusterHandle,
    namespace: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    mode: str,
) -> None:
    """Run the real operator as the chart's ServiceAccount: an example model gets its children
    and its conditions, it is deleted cleanly, and nothing was refused for lack of rights."""
    models = f"{namespace}-models"
    cluster.kubectl("create", "namespace", models)
    args = ["--set", f"watchNamespaces={{{models}}}"] if mode == "namespaced" else []
    _install(helm, cluster, namespace, *args)
    monkeypatch.setenv("TRITON_VLLM_NAMESPACES", models if mode == "namespaced" else "")
    kubeconfig = _service_account_kubeconfig(cluster, namespace, tmp_path / "kubeconfig")
    operator = OperatorProcess(kubeconfig, tmp_path / "operator.log")
    example = ROOT / "examples" / "llama-3.1-8b.yaml"
    name = yaml.safe_load(example.read_text())["metadata"]["name"]
    try:
        operator.start()
        cluster.kubectl("apply", "-n", models, "-f", str(example))
        wait_until(
            lambda: _model_conditions(cluster, models, name).get("Scheduled") == "True",
            timeout=90,
            what=f"{name} Scheduled=True, written by the operator as its ServiceAccount",
        )
        assert _model_conditions(cluster, models, name)["Accepted"] == "True"
        children = cluster.kubectl(
            "get",
            "configmaps,deployments,services",
            "-n",
            models,
            "-l",
            f"app.kubernetes.io/instance={name}",
            "-o",
            "name",
        ).stdout.split()
        assert len(children) == 3, children
        events = cluster.kubectl(
            "get",
            "events",
            "-n",
            models,
            "--field-selector",
            f"involvedObject.name={name}",
            "-o",
            "name",
        ).stdout.split()
        assert events, "the operator posts Events"
        cluster.kubectl("delete", "tvm", name, "-n", models, "--timeout=60s")
    finally:
        operator.stop()
        _uninstall_leaves_only_the_crd(helm, cluster, namespace)
        cluster.kubectl("delete", "namespace", models, "--wait=false")
    log = (tmp_path / "operator.log").read_text()
    refused = [
        line
        for line in log.splitlines()
        if re.search(r"cannot \w+ resource|not enough permissions|APIForbidden", line, re.I)
        # the message after the timestamp (whose milliseconds may read 403)
        or ("403" in line.split(" ", 2)[-1] and f"{models}/" in line)
    ]
    assert not refused, "\n".join(refused[:10])
