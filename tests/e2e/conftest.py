"""The e2e tests share the integration tier's control plane, so the session stops it at the end."""

from tests.integration.conftest import api_client, cluster, kubeconfig

__all__ = ["api_client", "cluster", "kubeconfig"]
