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
from .desired import desire
from .lora import check_local_adapters
from .model_facts import ModelFactsError, facts_from_dir
from .observed import Observed
from .placement import Unplaceable
from .settings import Settings
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
    warnings: list[str] | None = None,
) -> list[dict[str, Any]]:
    """Every manifest the operator would create for the TritonVLLMModels in `docs`: the same
    function the operator's first pass runs, with `nodes` as the cluster's nodes and nothing
    else running.

    With `model_dir` (a snapshot: config.json and the safetensors index), tensor parallelism is
    sized from the model's own facts. `keda`: whether the cluster has KEDA, for the autoscaler
    of a model with spec.autoscaling. With `adapters_dir`, each LoRA adapter found in
    `adapters_dir/<name>/` is checked as the operator checks it once downloaded. `warnings`
    collects what the operator would say in Scheduled=False while its pods wait (no node fits
    an explicit size yet: the pods are rendered for a node autoscaler).
    """
    manifests: list[dict[str, Any]] = []
    for doc in docs:
        if doc.get("kind") != KIND:
            continue
        model = parse_model(doc)
        check_model(model, settings.backend_name)
        if adapters_dir is not None:
            _check_adapters(model, adapters_dir, model_dir)
        name = model.metadata.name
        if nodes is None and model_dir is None and model.spec.tensor_parallel_size == "auto":
            raise SpecError(
                "NeedsNodes",
                f"{name}: tensorParallelSize is auto; pass --nodes FILE (e.g. `kubectl get "
                "nodes -o yaml`) or set an integer tensorParallelSize",
            )
        facts = None
        if model_dir is not None:
            try:
                facts = facts_from_dir(model_dir)
            except ModelFactsError as err:
                raise SpecError(err.reason, f"{name}: {err.message}") from err
        observed = Observed(nodes=nodes or [], pods=[], facts=facts, keda_served=keda)
        wanted = desire(model, observed, settings)
        if wanted.refusal is not None:
            message = wanted.refusal.message
            named = message if message.startswith(f"{name}:") else f"{name}: {message}"
            raise SpecError(wanted.refusal.reason, named)
        fresh = wanted.placed.fresh if wanted.placed else None
        if isinstance(fresh, Unplaceable):
            if wanted.placement is None:
                raise SpecError(fresh.reason, f"{name}: {fresh.message}")
            if warnings is not None:
                warnings.append(f"{fresh.reason}: {name}: {fresh.message} The pods wait Pending.")
        if wanted.scaler is not None and wanted.scaler.manifest is None:
            raise SpecError(
                wanted.scaler.verdict.reason, f"{name}: {wanted.scaler.verdict.message}"
            )
        manifests.extend(wanted.children)
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
    warnings: list[str] = []
    try:
        manifests = render_documents(
            _items(_load_yaml(args.file)),
            nodes,
            settings,
            args.model,
            args.autoscaler == "keda",
            args.adapters,
            warnings,
        )
    except SpecError as err:
        print(f"error: {err.reason}: {err.message}", file=sys.stderr)
        return 1
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)
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
