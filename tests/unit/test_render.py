"""Rendered children, checked field by field; config.pbtxt parsed back with Triton's protobuf."""

from __future__ import annotations

import json
from typing import Any

import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from tests.unit.builders import model, model_dict
from triton_vllm_operator.api import TritonVLLMModel
from triton_vllm_operator.placement import Placement
from triton_vllm_operator.render import (
    TritonConfigError,
    config_data,
    config_hash,
    model_repository_files,
)
from triton_vllm_operator.render.manifests import (
    CONFIG_HASH_ANNOTATION,
    render_all,
    render_configmap,
    render_deployment,
    render_service,
)
from triton_vllm_operator.settings import Settings

SETTINGS = Settings()


def placed(tp: int = 2, floor: int | None = None) -> Placement:
    return Placement(tp, ("gpu-h100-0",), 4, floor, "test")


def parse_pbtxt(text: str) -> mc.ModelConfig:
    return text_format.Parse(text, mc.ModelConfig())


class TestConfigPbtxt:
    def test_defaults_name_the_bundled_backend_and_vllm_requirements(self) -> None:
        cfg = parse_pbtxt(config_data(model(), 1, "tritonvllm")["config.pbtxt"])
        assert cfg.name == "llama"
        assert cfg.backend == "tritonvllm"
        assert cfg.max_batch_size == 0
        assert cfg.model_transaction_policy.decoupled is True
        assert [(g.count, g.kind) for g in cfg.instance_group] == [
            (1, mc.ModelInstanceGroup.KIND_MODEL)
        ]
        assert cfg.parameters["REPORT_CUSTOM_METRICS"].string_value == "true"
        assert cfg.parameters["ENABLE_VLLM_HEALTH_CHECK"].string_value == "true"
        assert list(cfg.input) == []  # left to the backend's auto_complete_config

    def test_served_model_name_becomes_the_triton_name(self) -> None:
        cfg = parse_pbtxt(
            config_data(model(servedModelName="chat"), 1, "tritonvllm")["config.pbtxt"]
        )
        assert cfg.name == "chat"

    def test_user_config_is_merged(self) -> None:
        user = {
            "parameters": {
                "REPORT_CUSTOM_METRICS": {"string_value": "false"},
                "CUSTOM": {"string_value": "x"},
            },
            "input": [{"name": "text_input", "data_type": "TYPE_STRING", "dims": [1]}],
            "model_warmup": [{"name": "warm", "batch_size": 1}],
        }
        cfg = parse_pbtxt(
            config_data(model(triton={"config": user}), 1, "tritonvllm")["config.pbtxt"]
        )
        assert cfg.parameters["REPORT_CUSTOM_METRICS"].string_value == "false"
        assert cfg.parameters["CUSTOM"].string_value == "x"
        assert cfg.parameters["ENABLE_VLLM_HEALTH_CHECK"].string_value == "true"
        assert [i.name for i in cfg.input] == ["text_input"]
        assert cfg.model_warmup[0].name == "warm"
        assert cfg.backend == "tritonvllm"

    def test_user_instance_group_replaces_the_default(self) -> None:
        user = {"instance_group": [{"count": 2, "kind": "KIND_GPU"}]}
        cfg = parse_pbtxt(
            config_data(model(triton={"config": user}), 1, "tritonvllm")["config.pbtxt"]
        )
        assert [(g.count, g.kind) for g in cfg.instance_group] == [
            (2, mc.ModelInstanceGroup.KIND_GPU)
        ]

    @pytest.mark.parametrize(
        ("user", "message"),
        [
            ({"backend": "vllm"}, "sets backend, which the operator owns"),
            ({"name": "other"}, "sets name, which the operator owns"),
            ({"max_batch_sise": 8}, 'no field named "max_batch_sise"'),
            ({"max_batch_size": "lots"}, "max_batch_size"),
        ],
    )
    def test_bad_user_config_is_a_clear_error(self, user: dict[str, Any], message: str) -> None:
        with pytest.raises(TritonConfigError, match=message):
            config_data(model(triton={"config": user}), 1, "tritonvllm")


class TestModelJson:
    def test_engine_args_model_and_resolved_tp(self) -> None:
        m = model(engineArgs={"max_model_len": 4096, "dtype": "bfloat16"})
        engine = json.loads(config_data(m, 4, "tritonvllm")["model.json"])
        assert engine == {
            "dtype": "bfloat16",
            "max_model_len": 4096,
            "model": "meta-llama/Llama-3.1-8B-Instruct",
            "tensor_parallel_size": 4,
        }

    def test_repository_layout_matches_the_pod_mounts(self) -> None:
        files = model_repository_files(model(servedModelName="chat"), 2)
        assert sorted(files) == ["chat/1/model.json", "chat/config.pbtxt"]


class TestConfigMap:
    def test_holds_both_files_and_is_owned(self) -> None:
        cm = render_configmap(model(), 2, SETTINGS)
        assert cm["metadata"]["name"] == f"llama-config-{config_hash(cm['data'])}"
        assert cm["immutable"] is True
        assert cm["metadata"]["namespace"] == "ml"
        assert set(cm["data"]) == {"config.pbtxt", "model.json"}
        owner = cm["metadata"]["ownerReferences"][0]
        assert owner == {
            "apiVersion": "tritonvllm.io/v1alpha1",
            "kind": "TritonVLLMModel",
            "name": "llama",
            "uid": "uid-1",
            "controller": True,
            "blockOwnerDeletion": True,
        }
        assert cm["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "triton-vllm-operator"

    def test_hf_token_never_lands_in_the_configmap(self) -> None:
        m = model(storage={"hfTokenSecret": {"name": "hf", "key": "token"}})
        assert "hf" not in json.dumps(render_configmap(m, 1, SETTINGS)["data"]).lower()


class TestDeployment:
    def pod(self, deployment: dict[str, Any]) -> dict[str, Any]:
        spec: dict[str, Any] = deployment["spec"]["template"]["spec"]
        return spec

    def test_runs_tritonserver_with_tp_gpus(self) -> None:
        dep = render_deployment(model(replicas=3), placed(tp=4), SETTINGS)
        assert dep["spec"]["replicas"] == 3
        container = self.pod(dep)["containers"][0]
        assert container["image"] == SETTINGS.triton_image
        assert container["command"] == ["tritonserver"]
        assert "--model-repository=/models" in container["args"]
        assert container["resources"]["limits"]["nvidia.com/gpu"] == 4
        assert container["resources"]["requests"]["nvidia.com/gpu"] == 4
        assert {p["name"]: p["containerPort"] for p in container["ports"]} == {
            "http": 8000,
            "grpc": 8001,
            "metrics": 8002,
            "openai": 9000,
        }

    def test_probes_cover_triton_and_the_openai_server(self) -> None:
        container = self.pod(render_deployment(model(), placed(), SETTINGS))["containers"][0]
        assert container["startupProbe"]["httpGet"]["path"] == "/v2/health/ready"
        assert (
            container["startupProbe"]["failureThreshold"]
            * container["startupProbe"]["periodSeconds"]
            >= 1800
        )
        # vLLM's /health answers only while the engine is healthy inside a running tritonserver.
        assert container["readinessProbe"]["httpGet"] == {"path": "/health", "port": "openai"}
        assert container["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
        off = model(openai={"enabled": False})
        container = self.pod(render_deployment(off, placed(), SETTINGS))["containers"][0]
        assert container["readinessProbe"]["httpGet"] == {
            "path": "/v2/health/ready",
            "port": "http",
        }
        assert "openai" not in {p["name"] for p in container["ports"]}

    def test_pods_carry_the_engine_type_endpoint_pickers_select(self) -> None:
        labels = render_deployment(model(), placed(), SETTINGS)["spec"]["template"]["metadata"][
            "labels"
        ]
        assert labels["llm-d.ai/engine-type"] == "vllm"
        assert labels["inference.networking.k8s.io/engine-type"] == "vllm"

    def test_openai_server_port_and_args_reach_the_backend(self) -> None:
        spec = {"openai": {"port": 9100, "args": {"chat_template": "{{ messages }}"}}}
        data = config_data(model(**spec), 1, "tritonvllm")
        config = text_format.Parse(data["config.pbtxt"], mc.ModelConfig())
        assert config.parameters["OPENAI_API_PORT"].string_value == "9100"
        assert json.loads(data["model.json"])["openai"] == {"chat_template": "{{ messages }}"}
        off = config_data(model(openai={"enabled": False}), 1, "tritonvllm")
        assert "OPENAI_API_PORT" not in off["config.pbtxt"]

    def test_config_files_are_projected_into_the_model_repository(self) -> None:
        pod = self.pod(render_deployment(model(servedModelName="chat"), placed(), SETTINGS))
        mounts = {m["name"]: m["mountPath"] for m in pod["containers"][0]["volumeMounts"]}
        assert mounts == {"model-repository": "/models/chat", "dshm": "/dev/shm", "cache": "/cache"}
        volumes = {v["name"]: v for v in pod["volumes"]}
        config_map = render_configmap(model(servedModelName="chat"), 2, SETTINGS)
        assert volumes["model-repository"]["configMap"] == {
            "name": config_map["metadata"]["name"],
            "items": [
                {"key": "config.pbtxt", "path": "config.pbtxt"},
                {"key": "model.json", "path": "1/model.json"},
            ],
        }
        assert volumes["dshm"]["emptyDir"] == {"medium": "Memory"}

    @pytest.mark.parametrize(
        ("storage", "volume"),
        [
            ({}, {"name": "cache", "emptyDir": {}}),
            ({"size": "200Gi"}, {"name": "cache", "emptyDir": {"sizeLimit": "200Gi"}}),
            (
                {"existingClaim": "models"},
                {"name": "cache", "persistentVolumeClaim": {"claimName": "models"}},
            ),
        ],
    )
    def test_cache_volume(self, storage: dict[str, Any], volume: dict[str, Any]) -> None:
        pod = self.pod(render_deployment(model(storage=storage), placed(), SETTINGS))
        assert volume in pod["volumes"]

    def test_hf_token_is_a_secret_key_ref(self) -> None:
        m = model(
            storage={"hfTokenSecret": {"name": "hf", "key": "token"}},
            env=[{"name": "EXTRA", "value": "1"}],
        )
        env = self.pod(render_deployment(m, placed(), SETTINGS))["containers"][0]["env"]
        assert {
            "name": "HF_TOKEN",
            "valueFrom": {"secretKeyRef": {"name": "hf", "key": "token"}},
        } in env
        assert {"name": "HF_HOME", "value": "/cache/huggingface"} in env
        assert {"name": "EXTRA", "value": "1"} in env

    def test_gpu_taint_is_tolerated_and_user_tolerations_kept(self) -> None:
        m = model(tolerations=[{"key": "team", "operator": "Exists"}])
        tolerations = self.pod(render_deployment(m, placed(), SETTINGS))["tolerations"]
        assert tolerations == [
            {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},
            {"key": "team", "operator": "Exists"},
        ]

    def test_product_and_memory_floor_become_node_affinity(self) -> None:
        m = model(gpu={"product": "NVIDIA-A10G"})
        pod = self.pod(render_deployment(m, placed(floor=23406), SETTINGS))
        terms = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][
            "nodeSelectorTerms"
        ]
        assert terms == [
            {
                "matchExpressions": [
                    {"key": "nvidia.com/gpu.product", "operator": "In", "values": ["NVIDIA-A10G"]},
                    {"key": "nvidia.com/gpu.memory", "operator": "Gt", "values": ["23405"]},
                ]
            }
        ]

    def test_gpu_terms_are_anded_into_each_user_term(self) -> None:
        zone = {"key": "zone", "operator": "In", "values": ["a"]}
        rack = {"key": "rack", "operator": "In", "values": ["r1"]}
        affinity = {
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [
                        {"matchExpressions": [zone]},
                        {"matchExpressions": [rack]},
                    ]
                }
            },
            "podAntiAffinity": {
                "preferredDuringSchedulingIgnoredDuringExecution": [
                    {"weight": 50, "podAffinityTerm": {"topologyKey": "kubernetes.io/hostname"}}
                ]
            },
        }
        m = model(gpu={"product": "P"}, affinity=affinity)
        pod = self.pod(render_deployment(m, placed(), SETTINGS))
        terms = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][
            "nodeSelectorTerms"
        ]
        product = {"key": "nvidia.com/gpu.product", "operator": "In", "values": ["P"]}
        assert terms == [
            {"matchExpressions": [zone, product]},
            {"matchExpressions": [rack, product]},
        ]
        assert "podAntiAffinity" in pod["affinity"]

    def test_no_affinity_when_nothing_to_require(self) -> None:
        pod = self.pod(render_deployment(model(), placed(), SETTINGS))
        assert "affinity" not in pod

    def test_config_change_changes_the_hash_and_replicas_do_not(self) -> None:
        def pod_hash(**spec: Any) -> str:
            dep = render_deployment(model(**spec), placed(), SETTINGS)
            annotations: dict[str, str] = dep["spec"]["template"]["metadata"]["annotations"]
            return annotations[CONFIG_HASH_ANNOTATION]

        base = pod_hash(engineArgs={"max_model_len": 1024})
        assert pod_hash(engineArgs={"max_model_len": 1024}, replicas=5) == base
        assert pod_hash(engineArgs={"max_model_len": 2048}) != base
        assert (
            pod_hash(triton={"config": {"parameters": {"A": {"string_value": "b"}}}}) != pod_hash()
        )

    def test_pod_annotations_and_image_override(self) -> None:
        m = model(
            podAnnotations={"a": "b"},
            triton={"image": "registry/serving:1", "args": ["--log-verbose=1"]},
        )
        dep = render_deployment(m, placed(), SETTINGS)
        assert dep["spec"]["template"]["metadata"]["annotations"]["a"] == "b"
        container = self.pod(dep)["containers"][0]
        assert container["image"] == "registry/serving:1"
        assert container["args"][-1] == "--log-verbose=1"

    def test_selector_is_stable_and_matches_the_pod_labels(self) -> None:
        dep = render_deployment(model(), placed(), SETTINGS)
        selector = dep["spec"]["selector"]["matchLabels"]
        assert selector == {
            "app.kubernetes.io/name": "triton-vllm",
            "app.kubernetes.io/instance": "llama",
        }
        assert selector.items() <= dep["spec"]["template"]["metadata"]["labels"].items()

    def test_rolls_without_surging_past_the_gpus(self) -> None:
        dep = render_deployment(model(), placed(), SETTINGS)
        assert dep["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": 0, "maxUnavailable": 1}


class TestService:
    def test_exposes_http_grpc_metrics_to_the_pods(self) -> None:
        svc = render_service(model())
        assert svc["metadata"]["name"] == "llama"
        assert svc["spec"]["selector"] == {
            "app.kubernetes.io/name": "triton-vllm",
            "app.kubernetes.io/instance": "llama",
        }
        assert [(p["name"], p["port"]) for p in svc["spec"]["ports"]] == [
            ("http", 8000),
            ("grpc", 8001),
            ("metrics", 8002),
            ("openai", 9000),
        ]


def test_render_all_is_deterministic() -> None:
    assert render_all(model(), placed(), SETTINGS) == render_all(model(), placed(), SETTINGS)
    kinds = [m["kind"] for m in render_all(model(), placed(), SETTINGS)]
    assert kinds == ["ConfigMap", "Deployment", "Service"]


def test_offline_rendering_has_no_owner_reference() -> None:
    offline = model_dict()
    del offline["metadata"]["uid"]
    cm = render_configmap(TritonVLLMModel.model_validate(offline), 1, SETTINGS)
    assert "ownerReferences" not in cm["metadata"]


def test_pods_run_non_root_without_privileges_or_an_api_token() -> None:
    pod = render_deployment(model(), placed(), SETTINGS)["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    container = pod["containers"][0]["securityContext"]
    assert container["allowPrivilegeEscalation"] is False
    assert container["capabilities"] == {"drop": ["ALL"]}
