"""The OpenAI server's settings: where it listens (config.pbtxt) and which arguments it takes.

``OPENAI_API_PORT`` turns vLLM's OpenAI-compatible server on, on that port; absent or ``"0"``
leaves it off. ``OPENAI_API_HOST`` is the address it binds (``0.0.0.0`` by default). The
server's other settings are vLLM's frontend arguments, from model.json; those that decide where
and how it listens belong to the config parameters, or are not supported here.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

PORT_PARAMETER = "OPENAI_API_PORT"
HOST_PARAMETER = "OPENAI_API_HOST"
DEFAULT_HOST = "0.0.0.0"

# Frontend arguments model.json may not set, and why.
NOT_FROM_MODEL_JSON = {
    "host": f"set by the {HOST_PARAMETER} config parameter",
    "port": f"set by the {PORT_PARAMETER} config parameter",
    "uds": "the server listens on TCP",
    "grpc_port": "vLLM's Rust frontend is not used",
    "data_parallel_supervisor_port": "there is one API server",
    "dp_supervisor_probe_interval_s": "there is one API server",
    "dp_supervisor_probe_timeout_s": "there is one API server",
    "dp_supervisor_probe_failure_threshold": "there is one API server",
    "ssl_keyfile": "TLS is not served on this port",
    "ssl_certfile": "TLS is not served on this port",
    "ssl_ca_certs": "TLS is not served on this port",
    "ssl_cert_reqs": "TLS is not served on this port",
    "ssl_ciphers": "TLS is not served on this port",
    "enable_ssl_refresh": "TLS is not served on this port",
}


class OpenAIConfigError(ValueError):
    """The OpenAI server's settings are invalid; the message says which and why."""


@dataclass(frozen=True)
class ListenAddress:
    """Where the OpenAI server listens."""

    host: str
    port: int

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


def _parameter(parameters: Mapping[str, Any], name: str) -> str | None:
    entry = parameters.get(name)
    if entry is None:
        return None
    value = entry.get("string_value") if isinstance(entry, Mapping) else entry
    return None if value is None else str(value).strip()


def listen_address(parameters: Mapping[str, Any]) -> ListenAddress | None:
    """The address from config.pbtxt's parameters, or None when the server is off."""
    raw_port = _parameter(parameters, PORT_PARAMETER)
    if raw_port is None or raw_port in {"", "0"}:
        return None
    if not raw_port.isdigit() or not 1 <= int(raw_port) <= 65535:
        raise OpenAIConfigError(
            f"{PORT_PARAMETER} must be a port number (1-65535), or 0 to turn the OpenAI "
            f"server off, not {raw_port!r}"
        )
    host = _parameter(parameters, HOST_PARAMETER) or DEFAULT_HOST
    if any(char.isspace() for char in host) or "/" in host:
        raise OpenAIConfigError(f"{HOST_PARAMETER} must be a host name or an address, not {host!r}")
    return ListenAddress(host, int(raw_port))


def check_not_reserved(keys: Collection[str]) -> None:
    """Raise naming each key that model.json may not set, and why."""
    reserved = sorted(key for key in keys if key in NOT_FROM_MODEL_JSON)
    if reserved:
        raise OpenAIConfigError(
            "; ".join(
                f"{key!r} cannot be set in model.json: {NOT_FROM_MODEL_JSON[key]}"
                for key in reserved
            )
        )


def served_names(model_name: str, configured: str | list[str] | None) -> list[str]:
    """The OpenAI model names: the Triton model's name first, then model.json's others."""
    others = [configured] if isinstance(configured, str) else list(configured or [])
    return list(dict.fromkeys([model_name, *others]))
