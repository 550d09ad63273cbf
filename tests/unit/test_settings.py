"""Operator settings come from TRITON_VLLM_* variables, validated."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from triton_vllm_operator.settings import Settings


def test_defaults() -> None:
    settings = Settings.from_env({})
    assert settings.backend_name == "tritonvllm"
    assert settings.namespaces == ()
    assert settings.log_format == "text"


def test_environment_overrides() -> None:
    settings = Settings.from_env(
        {
            "TRITON_VLLM_IMAGE": "registry/serving:2",
            "TRITON_VLLM_NAMESPACES": "ml, serving ,",
            "TRITON_VLLM_LOG_FORMAT": "json",
            "TRITON_VLLM_LEADER_ELECTION": "true",
            "TRITON_VLLM_LEASE_NAMESPACE": "operators",
        }
    )
    assert settings.triton_image == "registry/serving:2"
    assert settings.namespaces == ("ml", "serving")
    assert settings.log_format == "json"
    assert settings.leader_election is True
    assert settings.lease_namespace == "operators"


def test_bad_values_are_rejected() -> None:
    with pytest.raises(ValidationError, match="log_format"):
        Settings.from_env({"TRITON_VLLM_LOG_FORMAT": "xml"})


def test_model_facts_settings() -> None:
    default = Settings.from_env({})
    assert default.model_facts is True and default.hf_endpoint is None
    settings = Settings.from_env(
        {
            "TRITON_VLLM_MODEL_FACTS": "false",
            "TRITON_VLLM_HF_ENDPOINT": "http://mirror.example:8080",
            "TRITON_VLLM_FACTS_CACHE_DIR": "/var/cache/model-facts",
            "TRITON_VLLM_FACTS_TIMEOUT_SECONDS": "3",
        }
    )
    assert settings.model_facts is False
    assert settings.hf_endpoint == "http://mirror.example:8080"
    assert settings.facts_cache_dir == "/var/cache/model-facts"
    assert settings.facts_timeout_seconds == 3.0
    with pytest.raises(ValidationError, match="hf_endpoint"):
        Settings.from_env({"TRITON_VLLM_HF_ENDPOINT": "mirror.example"})


def test_prefetch_progress_is_read_unless_turned_off() -> None:
    assert Settings.from_env({}).prefetch_progress is True
    off = Settings.from_env({"TRITON_VLLM_PREFETCH_PROGRESS": "false"})
    assert off.prefetch_progress is False


@pytest.mark.parametrize(
    ("duration", "deadline", "retry"),
    [("10", "10", "2"), ("15", "2", "2"), ("15", "20", "2")],
)
def test_leader_election_needs_lease_longer_than_deadline_longer_than_retry(
    duration: str, deadline: str, retry: str
) -> None:
    with pytest.raises(ValidationError, match="lease duration > renew deadline > retry period"):
        Settings.from_env(
            {
                "TRITON_VLLM_LEASE_DURATION_SECONDS": duration,
                "TRITON_VLLM_LEASE_RENEW_DEADLINE_SECONDS": deadline,
                "TRITON_VLLM_LEASE_RETRY_SECONDS": retry,
            }
        )


def test_the_runtime_settings_come_from_the_environment() -> None:
    settings = Settings.from_env(
        {
            "TRITON_VLLM_API_QPS": "20",
            "TRITON_VLLM_API_BURST": "30",
            "TRITON_VLLM_RESYNC_SECONDS": "60",
            "TRITON_VLLM_RELIST_SECONDS": "300",
        }
    )
    assert (settings.api_qps, settings.api_burst) == (20, 30)
    assert (settings.resync_seconds, settings.relist_seconds) == (60, 300)
    defaults = Settings()
    assert (defaults.lease_duration_seconds, defaults.lease_renew_deadline_seconds) == (15, 10)
    assert defaults.lease_retry_seconds == 2
