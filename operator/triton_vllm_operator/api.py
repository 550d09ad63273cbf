"""The TritonVLLMModel API (tritonvllm.io/v1alpha1): the one source of truth for the CRD."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator
from pydantic.alias_generators import to_camel

GROUP = "tritonvllm.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "TritonVLLMModel"
PLURAL = "tritonvllmmodels"
SINGULAR = "tritonvllmmodel"
SHORT_NAME = "tvm"

# metadata.name names the Service, Deployment and pod labels: a DNS-1035 label.
OBJECT_NAME_PATTERN = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"
OBJECT_NAME_MAX = 63
OBJECT_NAME_RULE = (
    f"metadata.name must be a DNS-1035 label: lowercase letters, digits and '-', starting with "
    f"a letter, at most {OBJECT_NAME_MAX} characters, because it names the model's Service"
)
# Triton model names become directory names and URL path segments.
MODEL_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$"
# A Kubernetes resource quantity such as "100Gi" or "500m", checked as the API server does.
QUANTITY_PATTERN = (
    r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))"
    r"(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
)
Quantity = Annotated[
    int | Annotated[str, StringConstraints(pattern=QUANTITY_PATTERN)],
    Field(json_schema_extra={"x-kubernetes-int-or-string": True, "pattern": QUANTITY_PATTERN}),
]


class ApiModel(BaseModel):
    """Base: camelCase on the wire, snake_case in Python, unknown fields rejected."""

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True
    )


# --- Kubernetes pod fields the user may pass through ------------------------------------------


class SecretKeyRef(ApiModel):
    """A key in a Secret of the model's namespace."""

    name: str = Field(min_length=1, description="Name of the Secret.")
    key: str = Field(min_length=1, description="Key within the Secret.")


class ConfigMapKeyRef(ApiModel):
    """A key in a ConfigMap of the model's namespace."""

    name: str = Field(min_length=1, description="Name of the ConfigMap.")
    key: str = Field(min_length=1, description="Key within the ConfigMap.")


class FieldRef(ApiModel):
    """A field of the pod, such as metadata.name."""

    field_path: str = Field(description="Path of the field, e.g. metadata.namespace.")
    api_version: str | None = Field(default=None, description="Schema version of field_path.")


class EnvVarSource(ApiModel):
    """Where an environment variable's value comes from."""

    secret_key_ref: SecretKeyRef | None = Field(default=None, description="A Secret key.")
    config_map_key_ref: ConfigMapKeyRef | None = Field(default=None, description="A ConfigMap key.")
    field_ref: FieldRef | None = Field(default=None, description="A field of the pod.")


class EnvVar(ApiModel):
    """An environment variable of the tritonserver container."""

    name: str = Field(min_length=1, description="Variable name.")
    value: str | None = Field(default=None, description="Literal value.")
    value_from: EnvVarSource | None = Field(default=None, description="Value from a source.")


class Toleration(ApiModel):
    """A pod toleration (Kubernetes core/v1 Toleration)."""

    key: str | None = Field(default=None, description="Taint key; empty matches all keys.")
    operator: Literal["Exists", "Equal"] | None = Field(
        default=None, description="Exists or Equal (default Equal)."
    )
    value: str | None = Field(default=None, description="Taint value for Equal.")
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = Field(
        default=None, description="Taint effect to match; empty matches all."
    )
    toleration_seconds: int | None = Field(
        default=None, description="How long a NoExecute taint is tolerated."
    )


class NodeSelectorRequirement(ApiModel):
    """A label requirement on nodes."""

    key: str = Field(description="Label key.")
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist", "Gt", "Lt"] = Field(
        description="Relation between the label and values."
    )
    values: list[str] = Field(default_factory=list, description="Values for the operator.")


class NodeSelectorTerm(ApiModel):
    """Requirements that must all hold (AND)."""

    match_expressions: list[NodeSelectorRequirement] = Field(
        default_factory=list, description="Label requirements."
    )
    match_fields: list[NodeSelectorRequirement] = Field(
        default_factory=list, description="Field requirements."
    )


class NodeSelector(ApiModel):
    """Terms of which at least one must hold (OR)."""

    node_selector_terms: list[NodeSelectorTerm] = Field(description="The terms, ORed.")


class PreferredSchedulingTerm(ApiModel):
    """A weighted node preference."""

    weight: int = Field(ge=1, le=100, description="Weight, 1-100.")
    preference: NodeSelectorTerm = Field(description="The preferred node term.")


class NodeAffinity(ApiModel):
    """Node affinity of the pods."""

    required_during_scheduling_ignored_during_execution: NodeSelector | None = Field(
        default=None, description="Hard node requirements (ANDed with the operator's GPU terms)."
    )
    preferred_during_scheduling_ignored_during_execution: list[PreferredSchedulingTerm] = Field(
        default_factory=list, description="Soft node preferences."
    )


class LabelSelectorRequirement(ApiModel):
    """A label selector requirement."""

    key: str = Field(description="Label key.")
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist"] = Field(description="Relation.")
    values: list[str] = Field(default_factory=list, description="Values.")


class LabelSelector(ApiModel):
    """A label selector."""

    match_labels: dict[str, str] = Field(default_factory=dict, description="Exact labels.")
    match_expressions: list[LabelSelectorRequirement] = Field(
        default_factory=list, description="Label requirements."
    )


class PodAffinityTerm(ApiModel):
    """Pods this pod should (not) be co-located with."""

    label_selector: LabelSelector | None = Field(default=None, description="Pods to match.")
    namespaces: list[str] = Field(default_factory=list, description="Namespaces to search.")
    topology_key: str = Field(description="Node label that defines co-location.")


class WeightedPodAffinityTerm(ApiModel):
    """A weighted pod (anti-)affinity preference."""

    weight: int = Field(ge=1, le=100, description="Weight, 1-100.")
    pod_affinity_term: PodAffinityTerm = Field(description="The term.")


class PodAffinity(ApiModel):
    """Pod affinity or anti-affinity rules."""

    required_during_scheduling_ignored_during_execution: list[PodAffinityTerm] = Field(
        default_factory=list, description="Hard rules."
    )
    preferred_during_scheduling_ignored_during_execution: list[WeightedPodAffinityTerm] = Field(
        default_factory=list, description="Soft rules."
    )


class Affinity(ApiModel):
    """Scheduling affinity of the pods (Kubernetes core/v1 Affinity)."""

    node_affinity: NodeAffinity | None = Field(default=None, description="Node affinity.")
    pod_affinity: PodAffinity | None = Field(default=None, description="Pod affinity.")
    pod_anti_affinity: PodAffinity | None = Field(default=None, description="Pod anti-affinity.")


class ResourceRequirements(ApiModel):
    """CPU and memory of the tritonserver container; GPUs are added by the operator."""

    requests: dict[str, Quantity] = Field(default_factory=dict, description="Requests.")
    limits: dict[str, Quantity] = Field(default_factory=dict, description="Limits.")


# --- The model's own fields -------------------------------------------------------------------


class GPUSpec(ApiModel):
    """Which GPUs the model runs on."""

    resource_name: str = Field(
        default="nvidia.com/gpu",
        min_length=1,
        description="Extended resource that counts GPUs on nodes and in pod requests.",
    )
    product: str | None = Field(
        default=None,
        description="Only nodes whose nvidia.com/gpu.product label equals this, "
        "e.g. NVIDIA-H100-80GB-HBM3 (GPU Feature Discovery).",
    )
    min_memory_gi_b: int | None = Field(
        default=None,
        alias="minMemoryGiB",
        ge=1,
        description="Only GPUs with at least this much memory each (nvidia.com/gpu.memory label).",
    )


class TritonSpec(ApiModel):
    """The Triton server of each replica."""

    image: str | None = Field(
        default=None,
        description="Serving image with tritonserver and the bundled backend; "
        "default from the operator's settings.",
    )
    config: dict[str, Any] = Field(
        default_factory=dict,
        description="Extra Triton model configuration (ModelConfig protobuf fields, JSON names) "
        "merged into config.pbtxt, e.g. {parameters: {...}}.",
        json_schema_extra={"x-kubernetes-preserve-unknown-fields": True},
    )
    args: list[str] = Field(
        default_factory=list, description="Extra tritonserver command-line arguments."
    )


class StorageSpec(ApiModel):
    """The model cache of each replica, mounted at /cache (HF_HOME=/cache/huggingface)."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "!has(self.prefetch) || !self.prefetch || has(self.existingClaim)",
                    "message": "storage.prefetch needs storage.existingClaim: a volume the "
                    "download Job and the serving pods share",
                },
            ]
        }
    )

    existing_claim: str | None = Field(
        default=None,
        description="An existing PersistentVolumeClaim to mount (ReadWriteMany or ReadOnlyMany "
        "when replicas > 1).",
    )
    size: Quantity | None = Field(
        default=None,
        description="Size of a per-pod emptyDir cache, e.g. 200Gi (lost when the pod goes).",
    )
    hf_token_secret: SecretKeyRef | None = Field(
        default=None,
        description="Secret key holding a Hugging Face token, passed as HF_TOKEN by "
        "secretKeyRef; never copied into a ConfigMap or status.",
    )
    revision: str | None = Field(
        default=None,
        min_length=1,
        description="Hub revision (branch, tag or commit) of spec.model whose config and weights "
        "the operator reads and the cache holds; default main.",
    )
    endpoint: str | None = Field(
        default=None,
        pattern=r"^https?://",
        description="Hub endpoint (HF_ENDPOINT), e.g. an in-cluster mirror; default the "
        "operator's.",
    )
    prefetch: bool = Field(
        default=False,
        description="Download the weights once into the cache volume with a Job before the "
        "serving pods start (needs storage.existingClaim); progress in the Cached condition.",
    )


class OpenAISpec(ApiModel):
    """vLLM's OpenAI-compatible server, run by the backend on the same engine as Triton's API."""

    enabled: bool = Field(default=True, description="Serve /v1/* and vLLM's /metrics.")
    port: int = Field(
        default=9000, ge=1024, le=65535, description="Container and Service port `openai`."
    )
    args: dict[str, Any] = Field(
        default_factory=dict,
        description="vLLM's OpenAI server arguments (vllm serve's frontend flags in their Python "
        "names, e.g. chat_template, tool_call_parser, enable_auto_tool_choice), written to "
        "model.json's `openai` section; the backend refuses unknown names at load.",
        json_schema_extra={"x-kubernetes-preserve-unknown-fields": True},
    )


class EndpointPickerRef(ApiModel):
    """The endpoint picker a gateway asks which pod serves each request (an Envoy ext_proc
    server, such as the Gateway API Inference Extension's), by its Service."""

    name: str = Field(
        min_length=1, description="Service of the endpoint picker, in the model's namespace."
    )
    port: int = Field(default=9002, ge=1, le=65535, description="Its ext_proc gRPC port.")
    failure_mode: Literal["FailOpen", "FailClose"] = Field(
        default="FailClose",
        description="When the picker does not answer: FailClose refuses the request, FailOpen "
        "lets the gateway pick a pod itself.",
    )


class GatewaySpec(ApiModel):
    """An InferencePool (inference.networking.k8s.io/v1) over the model's serving pods, so an
    inference gateway routes to them through an endpoint picker."""

    endpoint_picker: EndpointPickerRef = Field(description="The pool's endpoint picker.")
    port: Literal["openai", "http"] = Field(
        default="openai",
        description="The pods' port the gateway sends requests to: the OpenAI API (needs "
        "spec.openai.enabled) or Triton's HTTP.",
    )


class ScaleToZeroSpec(ApiModel):
    """Waking a model that has no pods: a signal from outside them, such as a gateway's queue."""

    activation_query: str = Field(
        min_length=1,
        description="PromQL whose value rises when clients wait for this model while it has no "
        "pods, e.g. the gateway's or ingress's queue or request rate for it. A model's own "
        "series vanish with its last pod, so they cannot wake it.",
    )
    activation_threshold: float = Field(
        default=0,
        ge=0,
        description="The model wakes (0 -> 1 replica) when the activation query exceeds this.",
    )
    idle_seconds: int = Field(
        default=300,
        ge=0,
        description="How long both signals must stay at or below their activation thresholds "
        "before the last replica is removed (KEDA's cooldownPeriod).",
    )


class AutoscalingSpec(ApiModel):
    """Replicas from the engine's load, by KEDA (or an HPA where KEDA is not installed)."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "self.minReplicas <= self.maxReplicas",
                    "message": "autoscaling.minReplicas must not exceed autoscaling.maxReplicas",
                },
                {
                    "rule": "self.minReplicas > 0 || has(self.scaleToZero)",
                    "message": "autoscaling.minReplicas 0 needs autoscaling.scaleToZero."
                    "activationQuery: a model's own series vanish with its last pod, so only a "
                    "signal from outside the pods (a gateway's queue or request rate) can wake it",
                },
            ]
        }
    )

    min_replicas: int = Field(default=1, ge=0, description="Fewest replicas; 0 needs scaleToZero.")
    max_replicas: int = Field(ge=1, description="Most replicas.")
    metric: Literal["RequestsWaiting", "RequestsRunning", "KVCacheUsage"] = Field(
        default="RequestsWaiting",
        description="The engine signal: RequestsWaiting (vllm:num_requests_waiting, the queue: "
        "the default, it rises only when the engine is full), RequestsRunning "
        "(vllm:num_requests_running) or KVCacheUsage (vllm:kv_cache_usage_perc, 0-1).",
    )
    target: float | None = Field(
        default=None,
        gt=0,
        description="Target value of the metric per replica: default 2 requests waiting, 16 "
        "running, or 0.8 of the KV cache.",
    )
    query: str | None = Field(
        default=None,
        min_length=1,
        description="PromQL to scale on instead of the metric's own query (its value is "
        "divided by the replicas and compared with target).",
    )
    scale_down_stabilization_seconds: int = Field(
        default=300,
        ge=0,
        le=3600,
        description="Scale in only to the highest replica count wanted during this window.",
    )
    polling_seconds: int = Field(
        default=15, ge=1, description="How often KEDA reads the metrics (pollingInterval)."
    )
    prometheus_address: str | None = Field(
        default=None,
        pattern=r"^https?://",
        description="Prometheus that scrapes the pods (KEDA's serverAddress); default the "
        "operator's setting.",
    )
    provider: Literal["Auto", "KEDA", "HPA"] = Field(
        default="Auto",
        description="Auto: a KEDA ScaledObject when KEDA's CRDs are served, else a "
        "HorizontalPodAutoscaler on Pods metrics (needs a custom-metrics adapter).",
    )
    scale_to_zero: ScaleToZeroSpec | None = Field(
        default=None, description="Waking from zero replicas (needs KEDA)."
    )

    @model_validator(mode="after")
    def _bounds(self) -> AutoscalingSpec:
        # The CRD's CEL rules, again for files rendered offline and objects stored before them.
        if self.min_replicas > self.max_replicas:
            raise ValueError("autoscaling.minReplicas must not exceed autoscaling.maxReplicas")
        if self.min_replicas == 0 and self.scale_to_zero is None:
            raise ValueError(
                "autoscaling.minReplicas 0 needs autoscaling.scaleToZero.activationQuery"
            )
        return self


# vLLM's LoRAConfig accepts these ranks (max_lora_rank).
LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)


class LoraAdapter(ApiModel):
    """One LoRA adapter: a Hub repo downloaded into the cache volume, or a path already in it."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "has(self.repo) != has(self.path)",
                    "message": "a LoRA adapter takes exactly one source: repo (a Hub repo id) or "
                    "path (a directory in the cache volume)",
                },
                {
                    "rule": "!has(self.revision) || has(self.repo)",
                    "message": "revision is a Hub revision: it goes with repo, not path",
                },
            ]
        }
    )

    name: str = Field(
        pattern=MODEL_NAME_PATTERN,
        description="The name requests give: Triton's sampling parameter lora_name, and the "
        "OpenAI API's model.",
    )
    repo: str | None = Field(
        default=None,
        min_length=1,
        pattern=r"^[^/\s]+/[^/\s]+$",
        description="Hugging Face repo id of the adapter (org/name), downloaded by a Job into "
        "storage.existingClaim with the model's token and endpoint.",
    )
    revision: str | None = Field(
        default=None, min_length=1, description="Hub revision of repo; default main."
    )
    path: str | None = Field(
        default=None,
        pattern=r"^/",
        description="Absolute path of the adapter's directory (adapter_config.json and weights) "
        "inside the pods, e.g. under the cache volume at /cache.",
    )

    @model_validator(mode="after")
    def _one_source(self) -> LoraAdapter:
        # The CRD's CEL rules, again for files rendered offline.
        if (self.repo is None) == (self.path is None):
            raise ValueError(
                f"lora adapter {self.name}: give exactly one of repo (a Hub repo id) or path"
            )
        if self.revision is not None and self.repo is None:
            raise ValueError(f"lora adapter {self.name}: revision goes with repo, not path")
        return self

    @property
    def source(self) -> str:
        """repo@revision, or the path."""
        if self.repo is not None:
            return f"{self.repo}@{self.revision or 'main'}"
        return str(self.path)


class LoraSpec(ApiModel):
    """LoRA adapters served with the model; changing them rolls no pod."""

    adapters: list[LoraAdapter] = Field(
        default_factory=list,
        description="The adapters. Adding, removing or changing one changes only the adapter "
        "list the pods follow (no rollout, no engine restart).",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
    )
    max_loras: int | None = Field(
        default=None,
        ge=1,
        description="vLLM max_loras: how many adapters one batch may mix (vLLM serves more, "
        "loading them as requests ask). Default: the number of adapters when LoRA is turned on, "
        "then kept: adding or removing adapters rolls no pod; changing this rolls the pods.",
    )
    max_lora_rank: Literal[1, 8, 16, 32, 64, 128, 256, 320, 512] | None = Field(
        default=None,
        description="vLLM max_lora_rank. Default: the smallest rank vLLM accepts that holds "
        "every adapter's rank (at least 16), never lowered while the pods run (raising it rolls "
        "the pods). An adapter of a larger rank is refused.",
    )


class TritonVLLMModelSpec(ApiModel):
    """The desired state: which model, how vLLM runs it, how many replicas."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "!has(self.storage) || !has(self.storage.existingClaim) "
                    "|| !has(self.storage.size)",
                    "message": "set storage.existingClaim or storage.size, not both",
                },
                {
                    "rule": "!has(self.gateway) || !has(self.gateway.port) "
                    "|| self.gateway.port != 'openai' || !has(self.openai) "
                    "|| !has(self.openai.enabled) || self.openai.enabled",
                    "message": "spec.gateway.port 'openai' needs spec.openai.enabled",
                },
                {
                    # A multi-node model's autoscaler scales the model itself (its /scale
                    # subresource writes spec.replicas: the groups), not a Deployment.
                    "rule": "!has(self.autoscaling) || !has(self.replicas) || "
                    "(has(self.nodesPerReplica) && type(self.nodesPerReplica) == int && "
                    "self.nodesPerReplica > 1)",
                    "message": "spec.replicas and spec.autoscaling cannot both drive the "
                    "replicas: remove spec.replicas (autoscaling.minReplicas is the floor)",
                },
            ]
        }
    )

    model: str = Field(
        min_length=1,
        description="Hugging Face repo id (e.g. meta-llama/Llama-3.1-8B-Instruct) or an "
        "absolute path inside the model cache volume.",
    )
    served_model_name: str | None = Field(
        default=None,
        pattern=MODEL_NAME_PATTERN,
        description="Triton model name clients use; default metadata.name.",
    )
    engine_args: dict[str, Any] = Field(
        default_factory=dict,
        description="vLLM engine arguments (AsyncEngineArgs names, e.g. max_model_len) written "
        "to model.json; unknown names are rejected with a suggestion.",
        json_schema_extra={"x-kubernetes-preserve-unknown-fields": True},
    )
    tensor_parallel_size: Annotated[
        Annotated[int, Field(ge=1)] | Literal["auto"],
        Field(
            json_schema_extra={
                "x-kubernetes-int-or-string": True,
                "x-kubernetes-validations": [
                    {
                        "rule": "type(self) == int ? self >= 1 : self == 'auto'",
                        "message": "tensorParallelSize must be 'auto' or an integer >= 1",
                    }
                ],
            }
        ),
    ] = Field(
        default="auto",
        description="GPUs per replica: 'auto' sizes it to the nodes (see the README), or an "
        "integer checked against the nodes.",
    )
    nodes_per_replica: Annotated[
        Annotated[int, Field(ge=1, le=64)] | Literal["auto"],
        Field(
            json_schema_extra={
                "x-kubernetes-int-or-string": True,
                "x-kubernetes-validations": [
                    {
                        "rule": "type(self) == int ? self >= 1 && self <= 64 : self == 'auto'",
                        "message": "nodesPerReplica must be 'auto' or an integer from 1 to 64",
                    }
                ],
            }
        ),
    ] = Field(
        default=1,
        description="Nodes one replica spans, for a model bigger than a node: each node runs "
        "tensorParallelSize GPUs and the nodes are the stages of vLLM's pipeline parallelism "
        "(pipeline_parallel_size = nodesPerReplica); each replica is then a group of pods (rank "
        "0 serves, the others run vLLM's workers). 'auto': one node whenever the model fits "
        "one, else the fewest nodes whose GPUs hold it, at tensorParallelSize = a node's GPUs "
        "(not with autoscaling). Above 1: no engineArgs.pipeline_parallel_size; autoscaling "
        "scales whole groups through the model's scale subresource (spec.replicas).",
    )

    replicas: int | None = Field(
        default=None,
        ge=0,
        description="Number of tritonserver pods, or of groups with nodesPerReplica above 1 "
        "(default 1); leave it out with autoscaling (for groups, the autoscaler writes it). "
        "`kubectl scale tvm NAME --replicas=N` sets it.",
    )
    autoscaling: AutoscalingSpec | None = Field(
        default=None, description="Replicas from the engine's load instead of spec.replicas."
    )
    gpu: GPUSpec = Field(default_factory=GPUSpec, description="GPU selection.")
    model_size_gi_b: float | None = Field(
        default=None,
        alias="modelSizeGiB",
        gt=0,
        description="Size of the weights in GiB, for when the model's own files do not give it "
        "(a path in the cache volume, a gated repo, a failed lookup, no safetensors index): "
        "tensorParallelSize=auto then picks the smallest GPU count that fits them with room for "
        "the KV cache. With neither facts nor this, auto is not placed.",
    )
    triton: TritonSpec = Field(default_factory=TritonSpec, description="Triton settings.")
    openai: OpenAISpec = Field(
        default_factory=OpenAISpec, description="The OpenAI-compatible API beside Triton's."
    )
    gateway: GatewaySpec | None = Field(
        default=None,
        description="An InferencePool for an inference gateway (made where its CRD is served).",
    )
    storage: StorageSpec = Field(default_factory=StorageSpec, description="Model cache.")
    lora: LoraSpec | None = Field(
        default=None,
        description="LoRA adapters served beside the base model (enables vLLM's LoRA).",
    )
    resources: ResourceRequirements = Field(
        default_factory=ResourceRequirements,
        description="CPU/memory of the container; the operator adds the GPUs.",
    )
    node_selector: dict[str, str] = Field(default_factory=dict, description="Node labels.")
    tolerations: list[Toleration] = Field(
        default_factory=list,
        description="Extra tolerations; the GPU resource's NoSchedule taint is always tolerated.",
    )
    affinity: Affinity | None = Field(default=None, description="Extra scheduling affinity.")
    env: list[EnvVar] = Field(default_factory=list, description="Extra environment variables.")
    pod_annotations: dict[str, str] = Field(
        default_factory=dict, description="Annotations added to the pods."
    )

    @model_validator(mode="after")
    def _replicas_driver(self) -> TritonVLLMModelSpec:
        return _one_driver(self)

    @model_validator(mode="after")
    def _gateway_port_served(self) -> TritonVLLMModelSpec:
        if self.gateway is not None and self.gateway.port == "openai" and not self.openai.enabled:
            raise ValueError("spec.gateway.port 'openai' needs spec.openai.enabled")
        return self


def _one_driver(spec: TritonVLLMModelSpec) -> TritonVLLMModelSpec:
    if spec.autoscaling is not None and spec.replicas is not None and not scales_groups(spec):
        raise ValueError(
            "spec.replicas and spec.autoscaling cannot both drive the replicas: remove "
            "spec.replicas (autoscaling.minReplicas is the floor)"
        )
    return spec


def fixed_replicas(spec: TritonVLLMModelSpec) -> int | None:
    """The replicas the spec sets, or None when an autoscaler chooses them."""
    if spec.autoscaling is not None:
        return None
    return 1 if spec.replicas is None else spec.replicas


def replica_nodes(spec: TritonVLLMModelSpec) -> int:
    """The nodes a replica spans: the integer set, else one (`auto` before placement resolves
    it: the model is placed first on one node)."""
    return spec.nodes_per_replica if isinstance(spec.nodes_per_replica, int) else 1


def scales_groups(spec: TritonVLLMModelSpec) -> bool:
    """An autoscaled model of several nodes a replica: its autoscaler targets the model itself
    (the scale subresource), whose spec.replicas is then the number of groups it chose."""
    return spec.autoscaling is not None and replica_nodes(spec) > 1


def group_count(spec: TritonVLLMModelSpec) -> int:
    """The groups of a multi-node model: spec.replicas (default 1); autoscaled, the autoscaler's
    choice in spec.replicas (minReplicas before it chose), within the autoscaling bounds."""
    bounds = spec.autoscaling
    if bounds is None:
        return fixed_replicas(spec) or 0  # (never None without autoscaling)
    chosen = bounds.min_replicas if spec.replicas is None else spec.replicas
    return max(bounds.min_replicas, min(chosen, bounds.max_replicas))


def most_replicas(spec: TritonVLLMModelSpec) -> int:
    """The largest number of replicas the spec allows."""
    if spec.autoscaling is not None:
        return spec.autoscaling.max_replicas
    return 1 if spec.replicas is None else spec.replicas


class Condition(ApiModel):
    """A status condition (Kubernetes metav1.Condition)."""

    model_config = ConfigDict(extra="ignore")

    type: str = Field(
        description="Accepted, Scheduled, Ready, ModelFacts, Cached, Autoscaling or LoraAdapters."
    )
    status: Literal["True", "False", "Unknown"] = Field(description="True, False or Unknown.")
    reason: str = Field(description="Machine-readable reason, CamelCase.")
    message: str = Field(default="", description="What happened and what to change.")
    last_transition_time: str = Field(description="When the status last changed.")
    observed_generation: int | None = Field(
        default=None, description="metadata.generation this condition was computed from."
    )


class Endpoints(ApiModel):
    """Where clients reach the model inside the cluster."""

    model_config = ConfigDict(extra="ignore")

    triton_http: str | None = Field(default=None, description="Triton's HTTP/REST (KServe v2).")
    triton_grpc: str | None = Field(default=None, description="Triton's gRPC (host:port).")
    openai: str | None = Field(default=None, description="OpenAI-compatible base URL (/v1).")
    metrics: str | None = Field(default=None, description="Prometheus metrics.")


class ModelStatus(ApiModel):
    """What the operator read from the model's config.json and weights."""

    model_config = ConfigDict(extra="ignore")

    source: str | None = Field(default=None, description="Repo id@revision or path read.")
    commit: str | None = Field(default=None, description="The Hub commit the facts were read at.")
    architecture: str | None = Field(default=None, description="config.json architectures[0].")
    parameters: int | None = Field(default=None, description="Number of weights.")
    dtype: str | None = Field(default=None, description="Weights dtype in config.json.")
    weights_gi_b: float | None = Field(
        default=None, alias="weightsGiB", description="Size of the weights in GiB."
    )
    kv_bytes_per_token: int | None = Field(
        default=None, description="KV cache bytes per token of the whole model."
    )
    max_context: int | None = Field(
        default=None, description="Longest sequence the model's config allows."
    )
    attention_heads: int | None = Field(default=None, description="Attention heads.")
    kv_heads: int | None = Field(default=None, description="Key/value heads.")


class LoraAdapterStatus(ApiModel):
    """One adapter as the operator last saw it."""

    model_config = ConfigDict(extra="ignore")

    name: str = Field(description="The adapter's name.")
    source: str = Field(description="repo@revision, or the path.")
    state: Literal["Listed", "Downloading", "Refused", "Pending"] = Field(
        description="Listed: in the adapter list the pods follow; Downloading: its Job runs; "
        "Refused: see message; Pending: waits for its Job or for the pods."
    )
    message: str = Field(default="", description="Why, and what to change.")
    reason: str | None = Field(
        default=None, description="Why it is refused, CamelCase (e.g. AdapterBaseMismatch)."
    )
    path: str | None = Field(default=None, description="Its directory in the pods, once listed.")
    rank: int | None = Field(default=None, description="The rank of adapter_config.json (r).")


class RankStatus(ApiModel):
    """One pod of a multi-node replica."""

    group: str = Field(description="The replica's group (its StatefulSet).")
    rank: int = Field(description="Its rank: 0 serves and runs the engine's first stage.")
    pod: str = Field(description="The pod.")
    node: str | None = Field(default=None, description="The node it runs on, once bound.")
    ready: bool = Field(default=False, description="Whether the pod is Ready.")
    uid: str | None = Field(default=None, description="The pod's uid (a new pod is a new uid).")
    restarts: int = Field(default=0, description="Its containers' restarts.")


class TritonVLLMModelStatus(ApiModel):
    """The observed state, rebuilt from the world on every reconcile."""

    model_config = ConfigDict(extra="ignore")

    observed_generation: int | None = Field(
        default=None, description="metadata.generation the status describes."
    )
    conditions: list[Condition] = Field(default_factory=list, description="Conditions.")
    tensor_parallel_size: int | None = Field(default=None, description="Resolved GPUs/replica.")
    nodes_per_replica: int | None = Field(
        default=None, description="Nodes one replica spans (its pipeline stages)."
    )
    ranks: list[RankStatus] | None = Field(
        default=None, description="With nodesPerReplica above 1: every pod's group, rank, node."
    )
    replicas: int | None = Field(
        default=None, description="Desired replicas: the spec's, or the autoscaler's choice."
    )
    current_replicas: int | None = Field(
        default=None, description="Pods the Deployment has now (the scale subresource's)."
    )
    selector: str | None = Field(
        default=None, description="Label selector of the pods (the scale subresource's)."
    )
    autoscaler: str | None = Field(
        default=None, description="The ScaledObject or HorizontalPodAutoscaler, kind/name."
    )
    ready_replicas: int | None = Field(default=None, description="Replicas serving the model.")
    updated_replicas: int | None = Field(
        default=None, description="Replicas running the config of this generation."
    )
    endpoint: str | None = Field(default=None, description="In-cluster HTTP endpoint.")
    endpoints: Endpoints | None = Field(
        default=None, description="In-cluster URLs of every API the pods serve."
    )
    config_hash: str | None = Field(
        default=None, description="Hash of config.pbtxt and model.json the pods run."
    )
    config_map: str | None = Field(
        default=None, description="The immutable ConfigMap holding this generation's config."
    )
    model: ModelStatus | None = Field(
        default=None, description="Facts read from the model's own files."
    )
    lora: list[LoraAdapterStatus] | None = Field(
        default=None, description="Each LoRA adapter of spec.lora and its state."
    )


class ObjectMeta(BaseModel):
    """The metadata fields the operator reads."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    name: str = Field(min_length=1)
    namespace: str = "default"
    uid: str | None = None
    generation: int | None = None
    labels: dict[str, str] = Field(default_factory=dict)


class TritonVLLMModel(BaseModel):
    """A TritonVLLMModel object as read from the API or a YAML file."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    api_version: Literal["tritonvllm.io/v1alpha1"] = Field(alias="apiVersion")
    kind: Literal["TritonVLLMModel"]
    metadata: ObjectMeta
    spec: TritonVLLMModelSpec

    @property
    def served_name(self) -> str:
        """The Triton model name."""
        return self.spec.served_model_name or self.metadata.name
