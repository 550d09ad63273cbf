"""Start the operator: logging, kopf settings, the API client, then kopf's event loop."""

from __future__ import annotations

import logging
from typing import Any

import kopf
from kubernetes import client, config

from .controller import Controller
from .handlers import configure_watches, register
from .leader import LeaderElector
from .settings import Settings

HANDLER_WORKERS = 32


def _api_client() -> client.ApiClient:
    """One client for all worker threads, with a connection for each."""
    configuration = client.Configuration.get_default_copy()
    configuration.connection_pool_maxsize = HANDLER_WORKERS
    return client.ApiClient(configuration)


def run_operator(settings: Settings) -> int:
    """Run until stopped; watches `settings.namespaces` or the whole cluster."""
    log_format = kopf.LogFormat.JSON if settings.log_format == "json" else kopf.LogFormat.FULL
    kopf.configure(log_format=log_format, log_prefix=True)
    # kopf logs every handled watch event at INFO: at a thousand models that is the whole log.
    logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config()
    api = _api_client()
    controller = Controller(api, settings)
    registry = kopf.OperatorRegistry()
    register(registry, settings, controller)
    elector = LeaderElector(api, settings) if settings.leader_election else None

    @kopf.on.login(registry=registry)
    def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
        # In a pod: the ServiceAccount token; elsewhere: the kubeconfig (KUBECONFIG or ~/.kube).
        info = kopf.login_with_service_account(**kwargs)
        return info or kopf.login_with_kubeconfig(**kwargs)

    @kopf.on.startup(registry=registry)
    async def start(settings: kopf.OperatorSettings, **_: Any) -> None:
        configure_watches(settings)
        # Our own Events say what happened; kopf's per-handler chatter would only add writes.
        settings.posting.level = 100
        settings.watching.server_timeout = 300
        # Ride out an API server restart of a minute or more before giving up on a request.
        settings.networking.error_backoffs = [1, 1, 2, 3, 5, 8, 13, 21, 34]
        await controller.sync()
        controller.start()
        if elector is None:
            controller.leading.set()
        else:
            elector.start(controller)

    @kopf.on.cleanup(registry=registry)
    async def stop(**_: Any) -> None:
        if elector is not None:
            await elector.stop()
        await controller.stop()

    kopf.run(
        registry=registry,
        standalone=True,
        clusterwide=not settings.namespaces,
        namespaces=list(settings.namespaces),
        liveness_endpoint=settings.liveness_endpoint,
    )
    return 0
