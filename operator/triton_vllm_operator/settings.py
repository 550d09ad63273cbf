"""Operator settings: one typed object, read from the environment once at start-up."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

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
    field_manager: str = Field(
        default="triton-vllm-operator",
        description="Server-side apply field manager (TRITON_VLLM_FIELD_MANAGER).",
    )
    recheck_seconds: float = Field(
        default=10.0,
        gt=0,
        description="How often a model that is not Ready yet is re-examined "
        "(TRITON_VLLM_RECHECK_SECONDS).",
    )
    liveness_endpoint: str = Field(
        default="http://0.0.0.0:8080/healthz",
        description="Where kopf serves its liveness probe (TRITON_VLLM_LIVENESS_ENDPOINT).",
    )

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Settings:
        """Read TRITON_VLLM_* variables; unset ones keep their defaults."""
        names = {
            "IMAGE": "triton_image",
            "BACKEND": "backend_name",
            "NAMESPACES": "namespaces",
            "LOG_FORMAT": "log_format",
            "FIELD_MANAGER": "field_manager",
            "RECHECK_SECONDS": "recheck_seconds",
            "LIVENESS_ENDPOINT": "liveness_endpoint",
        }
        values: dict[str, object] = {}
        for suffix, field in names.items():
            raw = environ.get(ENV_PREFIX + suffix)
            if raw is None or raw == "":
                continue
            if field == "namespaces":
                values[field] = tuple(ns.strip() for ns in raw.split(",") if ns.strip())
            else:
                values[field] = raw
        return cls.model_validate(values)
