"""Start the operator: logging, the API client, the controller and the leader elector inside
kopf's process framework (its event loop, signal handling, start-up and clean-up, liveness
endpoint). The watches are the controller's own reflectors (informer.py says why)."""

from __future__ import annotations

import logging
import os
import threading
from typing import Any

import kopf
from kubernetes import client, config

from ..settings import Settings
from . import metrics
from .client import Client, RateLimiter
from .controller import WORKERS, Controller
from .leader import LeaderElector

log = logging.getLogger("triton_vllm_operator")


def _api_client(reflectors: int) -> client.ApiClient:
    """One client for every thread: a connection per worker, per reflector and for the lease."""
    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config()
    configuration = client.Configuration.get_default_copy()
    configuration.connection_pool_maxsize = WORKERS + reflectors + 8
    return client.ApiClient(configuration)


def run_operator(settings: Settings) -> int:
    """Run until stopped; watches `settings.namespaces` or the whole cluster. A replica that
    loses its lease exits with status 1 (the pod restarts as a standby)."""
    log_format = kopf.LogFormat.JSON if settings.log_format == "json" else kopf.LogFormat.FULL
    kopf.configure(log_format=log_format, log_prefix=True)
    log.setLevel(settings.log_level.upper())
    namespaces = max(1, len(settings.namespaces))
    api = _api_client(reflectors=12 * namespaces)
    elector = LeaderElector(api, settings) if settings.leader_election else None
    rest = Client(
        api,
        timeout=(settings.api_connect_timeout_seconds, settings.api_read_timeout_seconds),
        limiter=RateLimiter(settings.api_qps, settings.api_burst),
        may_write=elector.may_write if elector else lambda: True,
    )
    controller = Controller(rest, settings)
    if settings.metrics_bind_address != "0":
        port = metrics.serve(settings.metrics_bind_address, controller.models)
        log.info("metrics on port %d", port)
    registry = kopf.OperatorRegistry()
    stop_flag = threading.Event()

    @kopf.on.login(registry=registry)
    def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
        # In a pod: the ServiceAccount token; elsewhere: the kubeconfig (KUBECONFIG or ~/.kube).
        info = kopf.login_with_service_account(**kwargs)
        return info or kopf.login_with_kubeconfig(**kwargs)

    def on_lost() -> None:
        # As controller-runtime: end the process at once. Its writes already stopped at the
        # renew deadline; there is no lease to hand back, and a clean-up could hang on the very
        # network that failed. The pod restarts as a standby.
        for handler in logging.getLogger().handlers:
            handler.flush()
        os._exit(1)

    @kopf.on.startup(registry=registry)
    async def start(settings: kopf.OperatorSettings, **_: Any) -> None:
        settings.posting.level = 100  # our own Events say what happened
        await controller.sync()
        controller.start()
        if elector is None:
            controller.lead()
        else:
            elector.start(on_started=controller.lead, on_lost=on_lost)

    @kopf.on.cleanup(registry=registry)
    async def stop(**_: Any) -> None:
        # No more passes, then hand the lease over, then stop the reflectors.
        await controller.stop_leading()
        if elector is not None:
            await elector.stop()
        await controller.stop()
        # kopf waits on a thread for a threading.Event stop flag: end that wait too.
        stop_flag.set()

    kopf.run(
        registry=registry,
        standalone=True,
        clusterwide=not settings.namespaces,
        namespaces=list(settings.namespaces),
        liveness_endpoint=settings.liveness_endpoint,
        stop_flag=stop_flag,
    )
    return 0
