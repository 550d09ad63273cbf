"""The pinned tool versions of versions.env, for the benchmarks' reports and the tests."""

from __future__ import annotations

from pathlib import Path

VERSIONS_ENV = Path(__file__).resolve().parents[1] / "versions.env"


def pinned_versions() -> dict[str, str]:
    """versions.env as a mapping (its ``NAME=value`` lines)."""
    pins = {}
    for line in VERSIONS_ENV.read_text().splitlines():
        name, sep, value = line.partition("=")
        if sep and not line.lstrip().startswith("#"):
            pins[name.strip()] = value.strip()
    return pins
