"""Command line: `render` manifests offline, print the `crd`, or `run` the operator."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

import yaml

from .api import KIND, TritonVLLMModel
from .crd import custom_resource_definition
from .lora import check_local_adapters
from .model_facts import ModelFactsError, facts_from_dir
from .placement import Placement, Unplaceable, inventory, place
from .render.autoscaling import plan_autoscaler
from .render.manifests import render_all
from .settings import Settings
from .sized_placement import place_from_snapshot
from .validation import SpecError, check_model, parse_model


class _BlockDumper(yaml.SafeDumper):
    """Dumps multi-line strings (config.pbtxt, model.json) as readable literal blocks."""


def _represent_str(dumper: yaml.SafeDumper, text: str) -> yaml.Node:
    style = "|" if "\n" in text else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", text, style=style)


_BlockDumper.add_representer(str, _represent_str)


def _load_yaml(path: str) -> list[dict[str, Any]]:
    with open(path) if path != "-" else sys.stdin as stream:
        return [doc for doc in yaml.safe_load_all(stream) if doc]


def _items(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Flatten `kind: List` documents (as `kubectl get -o yaml` prints)."""
    flat: list[dict[str, Any]] = []
    for doc in docs:
        if doc.get("kind", "").endswith("List"):
            flat.extend(doc.get("items", []))
        else:
            flat.append(doc)
    return flat


def _assume_ready(node: dict[str, Any]) -> dict[str, Any]:
    """Offline node files (hand-written, or the test pool) may lack status: take them as Ready."""
    status = node.setdefault("status", {})
    if not status.get("conditions"):
        status["conditions"] = [{"type": "Ready", "status": "True"}]
    return node


def render_documents(
    docs: list[dict[str, Any]],
    nodes: list[dict[str, Any]] | None,
    settings: Settings,
    model_dir: str | None = None,
    keda: bool = True,
    adapters_dir: str | None = None,
) -> list[dict[str, Any]]:
    """Every manifest the operator would create for the TritonVLLMModels in `docs`.

    With `model_dir` (a snapshot: config.json and the safetensors index), tensor parallelism is
    sized from the model's own facts. `keda`: whether the cluster has KEDA, for the autoscaler
    of a model with spec.autoscaling. With `adapters_dir`, each LoRA adapter found in
    `adapters_dir/<name>/` is checked as the operator checks it once downloaded.
    """
    manifests: list[dict[str, Any]] = []
    for doc in docs:
        if doc.get("kind") != KIND:
            continue
        model = parse_model(doc)
        check_model(model, settings.backend_name)
        if adapters_dir is not None:
            _check_adapters(model, adapters_dir, model_dir)
        placement: Placement | Unplaceable
        if model_dir is not None:
            try:
                placement = place_from_snapshot(model, model_dir, nodes)
            except ModelFactsError as err:
                raise SpecError(err.reason, f"{model.metadata.name}: {err.message}") from err
        elif nodes is not None:
            placement = place(model.spec, inventory(model.spec, nodes, []))
        elif model.spec.tensor_parallel_size == "auto":
            raise SpecError(
                "NeedsNodes",
                f"{model.metadata.name}: tensorParallelSize is auto; pass --nodes FILE "
                "(e.g. `kubectl get nodes -o yaml`) or set an integer tensorParallelSize",
            )
        else:
            tp = model.spec.tensor_parallel_size
            placement = Placement(tp, (), 0, None, "rendered offline without nodes")
        if isinstance(placement, Unplaceable):
            raise SpecError(placement.reason, f"{model.metadata.name}: {placement.message}")
        manifests.extend(render_all(model, placement, settings))
        scaler = plan_autoscaler(model, keda, settings.prometheus_address)
        if scaler is not None and scaler.manifest is None:
            raise SpecError(
                scaler.verdict.reason, f"{model.metadata.name}: {scaler.verdict.message}"
            )
        if scaler is not None and scaler.manifest is not None:
            manifests.append(scaler.manifest)
    return manifests


def _check_adapters(model: TritonVLLMModel, adapters_dir: str, model_dir: str | None) -> None:
    """SpecError naming each adapter the operator would refuse, and why."""
    architecture = None
    if model_dir is not None:
        try:
            architecture = facts_from_dir(model_dir).architecture
        except ModelFactsError as err:
            raise SpecError(err.reason, f"{model.metadata.name}: {err.message}") from err
    refused = check_local_adapters(model, Path(adapters_dir), architecture)
    if refused:
        why = "; ".join(f"adapter {name} ({reason}): {text}" for name, reason, text in refused)
        raise SpecError("AdapterRefused", f"{model.metadata.name}: {why}")


def _render(args: argparse.Namespace, out: TextIO) -> int:
    settings = Settings.from_env(os.environ)
    nodes = [_assume_ready(n) for n in _items(_load_yaml(args.nodes))] if args.nodes else None
    try:
        manifests = render_documents(
            _items(_load_yaml(args.file)),
            nodes,
            settings,
            args.model,
            args.autoscaler == "keda",
            args.adapters,
        )
    except SpecError as err:
        print(f"error: {err.reason}: {err.message}", file=sys.stderr)
        return 1
    yaml.dump_all(manifests, out, Dumper=_BlockDumper, sort_keys=False)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="triton-vllm-operator", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    render = sub.add_parser("render", help="print the manifests the operator would create")
    render.add_argument("file", help="TritonVLLMModel YAML file, or - for stdin")
    render.add_argument("--nodes", help="Node manifests YAML to size tensorParallelSize=auto")
    render.add_argument(
        "--model",
        metavar="DIR",
        help="local model snapshot (config.json + safetensors index) to size from its own facts",
    )
    render.add_argument(
        "--adapters",
        metavar="DIR",
        help="local LoRA adapters, DIR/<name>/adapter_config.json, checked as the operator "
        "checks spec.lora's adapters (base model, rank, target modules)",
    )
    render.add_argument(
        "--autoscaler",
        choices=("keda", "hpa"),
        default="keda",
        help="for spec.autoscaling: a KEDA ScaledObject (the cluster has KEDA; default) or a "
        "HorizontalPodAutoscaler",
    )
    sub.add_parser("crd", help="print the CustomResourceDefinition")
    sub.add_parser("run", help="run the operator against the current kubeconfig")
    args = parser.parse_args(argv)
    if args.command == "render":
        return _render(args, sys.stdout)
    if args.command == "crd":
        yaml.safe_dump(custom_resource_definition(), sys.stdout, sort_keys=False)
        return 0
    from .runtime.main import run_operator  # kopf is imported only when running

    return run_operator(Settings.from_env(os.environ))


if __name__ == "__main__":
    sys.exit(main())
