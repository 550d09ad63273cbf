"""Operator settings: one typed object, read from the environment once at start-up."""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

ENV_PREFIX = "TRITON_VLLM_"


class Settings(BaseModel):
    """What the operator needs to know that is not in a TritonVLLMModel."""

    model_config = ConfigDict(frozen=True)

    triton_image: str = Field(
        default="ghcr.io/triton-vllm-operator/serving:0.1.0",
        description="Serving image used when spec.triton.image is empty (TRITON_VLLM_IMAGE).",
    )
    backend_name: str = Field(
        default="tritonvllm",
        description="Backend directory name in the serving image, named by config.pbtxt "
        "(TRITON_VLLM_BACKEND).",
    )
    namespaces: tuple[str, ...] = Field(
        default=(),
        description="Namespaces to watch, comma-separated; empty watches all "
        "(TRITON_VLLM_NAMESPACES).",
    )
    log_format: Literal["text", "json"] = Field(
        default="text", description="Operator log format (TRITON_VLLM_LOG_FORMAT)."
    )
    log_level: Literal["debug", "info", "warning"] = Field(
        default="info",
        description="Operator log level; debug logs every reconcile pass (TRITON_VLLM_LOG_LEVEL).",
    )
    field_manager: str = Field(
        default="triton-vllm-operator",
        description="Server-side apply field manager (TRITON_VLLM_FIELD_MANAGER).",
    )
    leader_election: bool = Field(
        default=False,
        description="Elect one leader among the operator's replicas on a Lease; the others stand "
        "by with warm watches (TRITON_VLLM_LEADER_ELECTION).",
    )
    lease_name: str = Field(
        default="triton-vllm-operator",
        description="Name of the leader election Lease (TRITON_VLLM_LEASE_NAME).",
    )
    lease_namespace: str = Field(
        default="default",
        description="Namespace of the Lease, usually the operator's own "
        "(TRITON_VLLM_LEASE_NAMESPACE).",
    )
    identity: str = Field(
        default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}",
        description="This replica's name in the Lease; the pod name in a cluster "
        "(TRITON_VLLM_IDENTITY).",
    )
    lease_duration_seconds: int = Field(
        default=15,
        ge=2,
        description="A standby takes the Lease of a leader that has not renewed it for this long "
        "(TRITON_VLLM_LEASE_DURATION_SECONDS).",
    )
    lease_renew_deadline_seconds: float = Field(
        default=10.0,
        gt=0,
        description="A leader that could not renew its Lease for this long stops writing and "
        "exits; shorter than the lease duration (TRITON_VLLM_LEASE_RENEW_DEADLINE_SECONDS).",
    )
    lease_retry_seconds: float = Field(
        default=2.0,
        gt=0,
        description="How often the leader renews, and a standby tries to take, the Lease; "
        "shorter than the renew deadline (TRITON_VLLM_LEASE_RETRY_SECONDS).",
    )
    api_connect_timeout_seconds: float = Field(
        default=5.0,
        gt=0,
        description="Connect timeout of every API request "
        "(TRITON_VLLM_API_CONNECT_TIMEOUT_SECONDS).",
    )
    api_read_timeout_seconds: float = Field(
        default=30.0,
        gt=0,
        description="Read timeout of every API request but watches "
        "(TRITON_VLLM_API_READ_TIMEOUT_SECONDS).",
    )
    api_qps: float = Field(
        default=400.0,
        gt=0,
        description="Requests a second the operator sends the API server on average "
        "(TRITON_VLLM_API_QPS).",
    )
    api_burst: int = Field(
        default=800,
        ge=1,
        description="Requests the operator may send at once above api_qps (TRITON_VLLM_API_BURST).",
    )
    resync_seconds: float = Field(
        default=600.0,
        gt=0,
        description="Every this often, every cached model is reconciled again "
        "(TRITON_VLLM_RESYNC_SECONDS).",
    )
    relist_seconds: float = Field(
        default=1800.0,
        gt=0,
        description="Every this often (jittered by 10 %), each watched collection is listed "
        "again and the cache replaced by the list (TRITON_VLLM_RELIST_SECONDS).",
    )
    model_facts: bool = Field(
        default=True,
        description="Read each Hub model's config.json and weights' index to size it "
        "(TRITON_VLLM_MODEL_FACTS); false sizes from spec.modelSizeGiB alone.",
    )
    hf_endpoint: str | None = Field(
        default=None,
        pattern=r"^https?://",
        description="Hub endpoint for model facts when spec.storage.endpoint is empty, e.g. an "
        "in-cluster mirror; default huggingface_hub's (TRITON_VLLM_HF_ENDPOINT).",
    )
    hf_token_endpoints: tuple[str, ...] = Field(
        default=("https://huggingface.co",),
        description="Hub endpoints a model's spec.storage.hfTokenSecret may be sent to, besides "
        "hf_endpoint; a model naming another endpoint with a token is refused "
        "(TRITON_VLLM_HF_TOKEN_ENDPOINTS, comma-separated).",
    )
    facts_cache_dir: str | None = Field(
        default=None,
        description="Writable directory for the model files the facts are read from; default "
        "huggingface_hub's cache (TRITON_VLLM_FACTS_CACHE_DIR).",
    )
    facts_timeout_seconds: float = Field(
        default=10.0,
        gt=0,
        description="Timeout of each request to the Hub for model facts "
        "(TRITON_VLLM_FACTS_TIMEOUT_SECONDS).",
    )
    prefetch_progress: bool = Field(
        default=True,
        description="While a prefetch Job's pod runs, read the last lines of its log every few "
        "seconds for the bytes done and total shown in Cached (TRITON_VLLM_PREFETCH_PROGRESS); "
        "needs get on pods/log.",
    )
    prometheus_address: str | None = Field(
        default=None,
        pattern=r"^https?://",
        description="Prometheus that scrapes the serving pods, for KEDA ScaledObjects when "
        "spec.autoscaling.prometheusAddress is empty (TRITON_VLLM_PROMETHEUS_ADDRESS).",
    )
    metrics_bind_address: str = Field(
        default="0",
        pattern=r"^([^:]*:[0-9]+|0)$",
        description="Where the operator serves its Prometheus metrics (/metrics), as host:port; "
        "':8081' listens on every address; '0' serves none (TRITON_VLLM_METRICS_BIND_ADDRESS; "
        "the chart sets it).",
    )
    liveness_endpoint: str = Field(
        default="http://0.0.0.0:8080/healthz",
        description="Where kopf serves its liveness probe (TRITON_VLLM_LIVENESS_ENDPOINT).",
    )

    @model_validator(mode="after")
    def _lease_timings(self) -> Settings:
        """client-go's rule: lease duration > renew deadline > retry period."""
        if not (
            self.lease_duration_seconds
            > self.lease_renew_deadline_seconds
            > self.lease_retry_seconds
        ):
            raise ValueError(
                "leader election needs lease duration > renew deadline > retry period, got "
                f"{self.lease_duration_seconds:g} > {self.lease_renew_deadline_seconds:g} > "
                f"{self.lease_retry_seconds:g}: lengthen the lease or shorten the others"
            )
        return self

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Settings:
        """Read TRITON_VLLM_* variables; unset ones keep their defaults."""
        names = {
            "IMAGE": "triton_image",
            "BACKEND": "backend_name",
            "NAMESPACES": "namespaces",
            "LOG_FORMAT": "log_format",
            "LOG_LEVEL": "log_level",
            "FIELD_MANAGER": "field_manager",
            "LEADER_ELECTION": "leader_election",
            "LEASE_NAME": "lease_name",
            "LEASE_NAMESPACE": "lease_namespace",
            "IDENTITY": "identity",
            "LEASE_DURATION_SECONDS": "lease_duration_seconds",
            "LEASE_RENEW_DEADLINE_SECONDS": "lease_renew_deadline_seconds",
            "LEASE_RETRY_SECONDS": "lease_retry_seconds",
            "API_CONNECT_TIMEOUT_SECONDS": "api_connect_timeout_seconds",
            "API_READ_TIMEOUT_SECONDS": "api_read_timeout_seconds",
            "API_QPS": "api_qps",
            "API_BURST": "api_burst",
            "RESYNC_SECONDS": "resync_seconds",
            "RELIST_SECONDS": "relist_seconds",
            "LIVENESS_ENDPOINT": "liveness_endpoint",
            "METRICS_BIND_ADDRESS": "metrics_bind_address",
            "MODEL_FACTS": "model_facts",
            "HF_ENDPOINT": "hf_endpoint",
            "HF_TOKEN_ENDPOINTS": "hf_token_endpoints",
            "FACTS_CACHE_DIR": "facts_cache_dir",
            "FACTS_TIMEOUT_SECONDS": "facts_timeout_seconds",
            "PREFETCH_PROGRESS": "prefetch_progress",
            "PROMETHEUS_ADDRESS": "prometheus_address",
        }
        values: dict[str, object] = {}
        for suffix, field in names.items():
            raw = environ.get(ENV_PREFIX + suffix)
            if raw == "" and field == "hf_token_endpoints":
                values[field] = ()  # set and empty: only hf_endpoint may get a token
                continue
            if raw is None or raw == "":
                continue
            if field in ("namespaces", "hf_token_endpoints"):
                values[field] = tuple(item.strip() for item in raw.split(",") if item.strip())
            else:
                values[field] = raw
        return cls.model_validate(values)
