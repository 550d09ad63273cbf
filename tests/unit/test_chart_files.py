"""The chart's files, without helm: the CRD copy is current, every value is commented, used by a
template and covered by the strict schema, and every scanner exception is justified."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "triton-vllm-operator"
CRD_NAME = "tritonvllm.io_tritonvllmmodels.yaml"
SECURITY_DOC = ROOT / "docs" / "security.md"
# Values that are Kubernetes objects passed through whole: documented as a whole, not per field.
PASSTHROUGH = {"podSecurityContext", "securityContext", "resources"}


def _values() -> dict[str, Any]:
    values: dict[str, Any] = yaml.safe_load((CHART / "values.yaml").read_text())
    return values


def _schema() -> dict[str, Any]:
    schema: dict[str, Any] = json.loads((CHART / "values.schema.json").read_text())
    return schema


def _leaf_paths(node: Any, prefix: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    if isinstance(node, dict) and node and (not prefix or prefix[0] not in PASSTHROUGH):
        for key, value in node.items():
            yield from _leaf_paths(value, (*prefix, key))
    else:
        yield prefix


def test_the_charts_crd_is_the_generated_one() -> None:
    """files/crds/ is a copy (helm does not follow symlinks out of the chart): `make crds` then
    `cp crds/*.yaml charts/triton-vllm-operator/files/crds/`."""
    chart_copy = (CHART / "files" / "crds" / CRD_NAME).read_bytes()
    assert chart_copy == (ROOT / "crds" / CRD_NAME).read_bytes(), (
        "charts/triton-vllm-operator/files/crds/ differs from crds/: copy crds/ over it"
    )


def test_the_chart_has_no_crds_directory() -> None:
    """The CRD is templated (upgraded by helm, kept on uninstall); a crds/ directory would be
    installed a second time and never upgraded."""
    assert not (CHART / "crds").exists()


def test_every_value_is_commented() -> None:
    lines = (CHART / "values.yaml").read_text().splitlines()
    missing = []
    stack: list[tuple[int, str]] = []
    for i, line in enumerate(lines):
        match = re.match(r"^( *)([A-Za-z][\w-]*):", line)
        if not match:
            continue
        indent, key = len(match[1]), match[2]
        while stack and stack[-1][0] >= indent:
            stack.pop()
        parents = [k for _, k in stack]
        stack.append((indent, key))
        if parents and parents[0] in PASSTHROUGH:
            continue
        previous = next((p.strip() for p in reversed(lines[:i]) if p.strip()), "")
        if not previous.startswith("#"):
            missing.append(".".join([*parents, key]))
    assert not missing, f"values without a comment above them: {missing}"


def test_every_value_is_used_by_a_template() -> None:
    templates = "\n".join(p.read_text() for p in (CHART / "templates").iterdir())
    unused = []
    for path in _leaf_paths(_values()):
        # Used itself, or a parent handed over whole (toYaml .Values.resources).
        prefixes = [".Values." + ".".join(path[: n + 1]) for n in range(len(path))]
        if not any(re.search(re.escape(p) + r"(?![\w.])", templates) for p in prefixes):
            unused.append(".".join(path))
    assert not unused, f"values no template reads: {unused}"


def _objects_with_properties(node: Any, where: str = "$") -> Iterator[tuple[str, dict[str, Any]]]:
    if isinstance(node, dict):
        if "properties" in node:
            yield where, node
        for key, value in node.items():
            yield from _objects_with_properties(value, f"{where}.{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _objects_with_properties(value, f"{where}[{i}]")


def test_the_values_schema_is_strict() -> None:
    schema = _schema()
    loose = [
        where
        for where, node in _objects_with_properties(schema)
        if node.get("additionalProperties") is not False and not where.endswith(".extraEnv.items")
    ]
    assert not loose, f"objects that accept unknown keys: {loose}"


def test_the_schema_and_values_yaml_name_the_same_values() -> None:
    def schema_paths(node: dict[str, Any], prefix: tuple[str, ...] = ()) -> set[tuple[str, ...]]:
        paths = set()
        for key, sub in node.get("properties", {}).items():
            path = (*prefix, key)
            if "properties" in sub and key not in PASSTHROUGH and prefix == ():
                paths |= schema_paths(sub, path)
            else:
                paths.add(path)
        return paths

    values = {p if p[0] in PASSTHROUGH or len(p) == 1 else p[:2] for p in _leaf_paths(_values())}
    values = {p[:1] if p[0] in PASSTHROUGH else p for p in values}
    assert values == schema_paths(_schema())


def _exceptions() -> dict[str, list[str]]:
    lint = CHART / "lint"
    found = {}
    for name in ("checkov-chart.yaml", "checkov-operator.yaml"):
        found[name] = list(yaml.safe_load((lint / name).read_text()).get("skip-check") or [])
    for target, tests in yaml.safe_load((lint / "kube-score.yaml").read_text()).items():
        found[f"kube-score.yaml:{target}"] = list(tests or [])
    return found


@pytest.mark.parametrize("config", sorted(_exceptions()))
def test_every_scanner_exception_is_justified_in_docs_security(config: str) -> None:
    doc = SECURITY_DOC.read_text()
    unjustified = [check for check in _exceptions()[config] if f"`{check}`" not in doc]
    assert not unjustified, f"{config}: not justified in docs/security.md: {unjustified}"


def test_the_scanner_configs_stay_out_of_the_packaged_chart() -> None:
    assert "lint/" in (CHART / ".helmignore").read_text().split()
