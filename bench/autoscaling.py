"""Autoscaling timings with the default settings (`make bench-autoscaling`).

The e2e scenario (tests/autoscaling_scenario.py: a real engine, Prometheus, KEDA, the HPA
controller, kwok pods) with spec.autoscaling's defaults: polling every 15 s, a 300 s scale-down
window, 300 s idle before zero. Prints a table and writes docs/benchmarks/autoscaling.{md,json,png}
with the Deployment's replicas over time.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from kubernetes import client

from tests.autoscaling_scenario import (
    Timeline,
    engine,
    replicas,
    scale_out_and_in,
    zero_and_back,
)
from tests.autoscaling_stack import AutoscalingStack, ScrapeTarget, SeriesServer
from tests.integration.models import Models, running_operator
from tests.kube import ensure_cluster
from tests.operator_process import free_ports

ROOT = Path(__file__).resolve().parents[1]
OUT_DIR = ROOT / "docs" / "benchmarks"


class Sampler:
    """The Deployment's spec.replicas every half second, for the plot."""

    def __init__(self, models: Models, name: str, t0: float) -> None:
        self.models, self.name, self.t0 = models, name, t0
        self.points: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.5):
            try:
                self.points.append((time.monotonic() - self.t0, replicas(self.models, self.name)))
            except client.ApiException:
                continue

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        # The scenario returns on the last change: keep the state it ended in.
        self.points.append((time.monotonic() - self.t0, replicas(self.models, self.name)))


def namespace(api: client.ApiClient) -> str:
    name = f"bench-autoscaling-{uuid.uuid4().hex[:6]}"
    client.CoreV1Api(api).create_namespace(client.V1Namespace(metadata={"name": name}))
    deadline = time.monotonic() + 30
    core = client.CoreV1Api(api)
    while not core.list_namespaced_service_account(name).items:
        if time.monotonic() > deadline:
            raise TimeoutError("no default ServiceAccount")
        time.sleep(0.25)
    return name


def rows(out_in: Timeline, zero: Timeline) -> list[tuple[str, float]]:
    return [
        ("load starts -> Prometheus sees a queue of 4", out_in.between("load", "queue")),
        ("load starts -> scale-out decided", out_in.between("load", "scale-out decided")),
        ("load starts -> 3 replicas Ready (kwok)", out_in.between("load", "3 replicas ready")),
        ("load starts -> model Ready with 3", out_in.between("load", "model Ready with 3")),
        ("queue empty -> back at minReplicas (1)", out_in.between("idle", "scaled in")),
        ("new idle model -> at zero", zero.events["new model at zero"]),
        ("gateway queue -> woken (0 -> 1)", zero.between("gateway queue", "woken")),
        ("gateway queue -> model Ready", zero.between("gateway queue", "ready again")),
        ("gateway idle -> back at zero", zero.between("gateway idle", "back at zero")),
    ]


def write_report(
    table: list[tuple[str, float]],
    samples: dict[str, list[tuple[float, int]]],
    settings: dict[str, Any],
    out: Path,
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    machine = f"{platform.machine()}, {os.cpu_count()} cores"
    lines = [
        "# Autoscaling timings (`make bench-autoscaling`)",
        "",
        f"Machine: {machine}; the local control plane, KEDA, Prometheus, the operator and one real",
        "tritonserver (the tiny model on vLLM's CPU engine, `max_num_seqs` 2, 12 streaming OpenAI",
        "clients as the load) on the same cores; the model's pods are kwok's. Settings: "
        + ", ".join(f"`{k}` {v}" for k, v in settings.items())
        + " (spec.autoscaling's defaults); the HPA controller syncs every 5 s (the test cluster's"
        " `--horizontal-pod-autoscaler-sync-period`; Kubernetes' default is 15 s).",
        "",
        "| step | seconds |",
        "| --- | ---: |",
        *[f"| {step} | {seconds:.1f} |" for step, seconds in table],
        "",
        "Scale-out and waking take up to one polling interval (15 s) plus an HPA sync; scale-in",
        "and the return to zero take the configured windows (stabilization, idleSeconds):",
        "the stabilization window counts from the HPA's last high recommendation, which can come",
        "just before Prometheus shows the empty queue, hence slightly under 300 s.",
        "",
    ]
    out.mkdir(parents=True, exist_ok=True)
    (out / "autoscaling.md").write_text("\n".join(lines))
    (out / "autoscaling.json").write_text(
        json.dumps(
            {"machine": machine, "settings": settings, "steps": dict(table), "replicas": samples},
            indent=1,
        )
    )
    fig, axes = plt.subplots(2, 1, figsize=(9, 6), sharex=False)
    for axis, (title, points) in zip(axes, samples.items(), strict=True):
        axis.step([t for t, _ in points], [r for _, r in points], where="post")
        axis.set_title(title)
        axis.set_ylabel("Deployment replicas")
    axes[-1].set_xlabel("seconds")
    fig.tight_layout()
    fig.savefig(out / "autoscaling.png", dpi=100)
    print("\n".join(lines))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--polling-seconds", type=int, default=15)
    parser.add_argument("--scale-down-stabilization-seconds", type=int, default=300)
    parser.add_argument("--idle-seconds", type=int, default=300)
    parser.add_argument("--out", type=Path, default=OUT_DIR)
    args = parser.parse_args(argv)
    settings = {
        "pollingSeconds": args.polling_seconds,
        "scaleDownStabilizationSeconds": args.scale_down_stabilization_seconds,
    }
    patience = max(1.0, (args.scale_down_stabilization_seconds + args.idle_seconds) / 60)
    cluster = ensure_cluster()
    api = cluster.api_client()
    gateway = SeriesServer()
    samples: dict[str, list[tuple[float, int]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        targets = [ScrapeTarget(gateway.address, honor_labels=True)]
        with (
            engine("chat", work / "engine", free_ports(1)[0]) as served,
            AutoscalingStack(cluster.kubeconfig, work / "stack", targets=targets) as stack,
            running_operator(
                cluster,
                work / "operator.log",
                {"TRITON_VLLM_PROMETHEUS_ADDRESS": stack.prometheus_url},
            ),
        ):
            models = Models(api, namespace(api))
            with Sampler(models, "chat", time.monotonic()) as sampler:
                out_in = scale_out_and_in(models, served, stack, settings, patience=patience)
            samples["scale out on the engine's queue, back in when idle"] = sampler.points
            with Sampler(models, "sleepy", time.monotonic()) as sampler:
                zero = zero_and_back(
                    models, gateway, stack, settings, args.idle_seconds, patience=patience
                )
            samples["scale to zero, woken by the gateway's queue"] = sampler.points
            client.CoreV1Api(api).delete_namespace(models.namespace)
    gateway.close()
    write_report(
        rows(out_in, zero), samples, {**settings, "idleSeconds": args.idle_seconds}, args.out
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
