"""Start the operator: logging, kopf settings, the API client, then kopf's event loop."""

from __future__ import annotations

import logging
from typing import Any

import kopf
from kubernetes import client, config

from .handlers import register
from .settings import Settings


class QuietRechecks(logging.Filter):
    """Drops the line kopf logs for every successful periodic recheck: noise at 1000 models."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Timer 'recheck' succeeded" not in record.getMessage()


HANDLER_WORKERS = 32


def _api_client() -> client.ApiClient:
    """One client for all handler threads, with a connection for each."""
    configuration = client.Configuration.get_default_copy()
    configuration.connection_pool_maxsize = HANDLER_WORKERS
    return client.ApiClient(configuration)


def run_operator(settings: Settings) -> int:
    """Run until stopped; watches `settings.namespaces` or the whole cluster."""
    log_format = kopf.LogFormat.JSON if settings.log_format == "json" else kopf.LogFormat.FULL
    kopf.configure(log_format=log_format, log_prefix=True)
    logging.getLogger("kopf.objects").addFilter(QuietRechecks())
    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config()
    registry = kopf.OperatorRegistry()
    register(registry, settings)

    @kopf.on.login(registry=registry)
    def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
        # In a pod: the ServiceAccount token; elsewhere: the kubeconfig (KUBECONFIG or ~/.kube).
        info = kopf.login_with_service_account(**kwargs)
        return info or kopf.login_with_kubeconfig(**kwargs)

    @kopf.on.startup(registry=registry)
    def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
        # Structural status prunes kopf's own fields: keep its bookkeeping in annotations.
        settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(
            prefix="tritonvllm.io"
        )
        settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
            prefix="tritonvllm.io", key="last-handled-configuration"
        )
        settings.persistence.finalizer = "tritonvllm.io/finalizer"
        # Our own Events say what happened; kopf's per-handler chatter would only add writes.
        settings.posting.level = 100
        settings.watching.server_timeout = 300
        # Ride out an API server restart of a minute or more before giving up on a request.
        settings.networking.error_backoffs = [1, 1, 2, 3, 5, 8, 13, 21, 34]
        # Handlers are sync and mostly wait on the API server: let many wait at once.
        settings.execution.max_workers = HANDLER_WORKERS
        # A deleted model keeps its finalizer until its recheck timer has stopped: look often.
        settings.background.cancellation_polling = 1

    kopf.run(
        registry=registry,
        standalone=True,
        clusterwide=not settings.namespaces,
        namespaces=list(settings.namespaces),
        liveness_endpoint=settings.liveness_endpoint,
        memo=kopf.Memo(api=_api_client()),
    )
    return 0
