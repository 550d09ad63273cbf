"""Autoscaling end to end with the real parts: load on a real engine raises its queue, Prometheus
scrapes it, KEDA and the HPA controller scale the model's Deployment out and back in; a model at
zero replicas is woken by a gateway's series (one the test serves) and sent back to zero.

Short windows (polling 2 s, scale-down stabilization 10 s, idle 10 s) keep it to minutes;
`make bench-autoscaling` measures the defaults.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.autoscaling_scenario import Engine, engine, scale_out_and_in, zero_and_back
from tests.autoscaling_stack import AutoscalingStack, ScrapeTarget, SeriesServer
from tests.integration.keda_operator import models, operator
from tests.integration.models import Models
from tests.kube import ClusterHandle
from tests.operator_process import free_ports

__all__ = ["models", "operator"]  # fixtures (with this module's own work and stack)

FAST = {"pollingSeconds": 2, "scaleDownStabilizationSeconds": 10}


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("autoscaling")


@pytest.fixture(scope="module")
def served(work: Path) -> Iterator[Engine]:
    with engine("chat", work / "engine", free_ports(1)[0]) as running:
        yield running


@pytest.fixture(scope="module")
def stack(cluster: ClusterHandle, work: Path, gateway: SeriesServer) -> Iterator[AutoscalingStack]:
    targets = [ScrapeTarget(gateway.address, honor_labels=True)]
    # Scraped every 3 s: a scrape times out after its interval, and the engine's /metrics (on
    # its OpenAI port) answered in more than 1 s on a loaded 2-core machine under this load.
    with AutoscalingStack(
        cluster.kubeconfig, work / "stack", targets=targets, scrape_interval="3s"
    ) as running:
        yield running


def test_the_engines_queue_scales_the_model_out_and_idle_brings_it_back(
    models: Models, served: Engine, stack: AutoscalingStack
) -> None:
    timeline = scale_out_and_in(models, served, stack, FAST)
    sys.stderr.write(
        f"\nscale-out: load -> queue seen {timeline.between('load', 'queue'):.1f} s, "
        f"-> decision {timeline.between('load', 'scale-out decided'):.1f} s, "
        f"-> 3 ready {timeline.between('load', '3 replicas ready'):.1f} s; "
        f"scale-in: idle -> 1 replica {timeline.between('idle', 'scaled in'):.1f} s\n"
    )


def test_a_model_at_zero_is_woken_by_the_gateways_queue_and_sent_back_to_zero(
    models: Models, gateway: SeriesServer, stack: AutoscalingStack
) -> None:
    timeline = zero_and_back(models, gateway, stack, FAST, idle_seconds=10)
    sys.stderr.write(
        f"\nscale to zero: wake decision {timeline.between('gateway queue', 'woken'):.1f} s, "
        f"ready {timeline.between('gateway queue', 'ready again'):.1f} s; "
        f"idle -> zero {timeline.between('gateway idle', 'back at zero'):.1f} s\n"
    )
