"""A cluster whose admission rewrites what the operator sends, or denies it.

The webhook here is a test stand-in (a real HTTPS server the real API server calls, answering
AdmissionReviews), shaped like common policy engines: it labels Deployments and rewrites their
image to a registry mirror; switched to deny, it refuses them with a message.
"""

from __future__ import annotations

import base64
import json
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from tests.integration.models import (
    GROUP,
    PLURAL,
    VERSION,
    Models,
    running_operator,
    wait_for,
)
from tests.kube import ClusterHandle
from tests.operator_process import OperatorProcess

MIRROR = "registry.mirror.example/"
SCANNED = ("policy.example.com/scanned", "true")


class WebhookStandIn(ThreadingHTTPServer):
    """The stand-in mutating webhook, on 127.0.0.1 with its own CA."""

    deny: str | None = None  # a message: deny every Deployment with it


def _patch(deployment: dict[str, Any]) -> list[dict[str, Any]]:
    """Label the Deployment and send its images through the mirror (as a policy engine would)."""
    ops: list[dict[str, Any]] = []
    if "labels" not in deployment["metadata"]:
        ops.append({"op": "add", "path": "/metadata/labels", "value": {}})
    ops.append(
        {"op": "add", "path": "/metadata/labels/policy.example.com~1scanned", "value": "true"}
    )
    for i, container in enumerate(deployment["spec"]["template"]["spec"]["containers"]):
        if not container["image"].startswith(MIRROR):
            path = f"/spec/template/spec/containers/{i}/image"
            ops.append({"op": "replace", "path": path, "value": MIRROR + container["image"]})
    return ops


class _Handler(BaseHTTPRequestHandler):
    server: WebhookStandIn

    def do_POST(self) -> None:
        review = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        request = review["request"]
        response: dict[str, Any] = {"uid": request["uid"], "allowed": True}
        if self.server.deny:
            response = {
                "uid": request["uid"],
                "allowed": False,
                "status": {"code": 403, "message": self.server.deny},
            }
        elif request["operation"] in ("CREATE", "UPDATE"):
            patch = json.dumps(_patch(request["object"])).encode()
            response["patchType"] = "JSONPatch"
            response["patch"] = base64.b64encode(patch).decode()
        body = json.dumps({**review, "response": response}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


def _certificates(directory: Path) -> tuple[Path, Path, bytes]:
    """A CA and a server certificate for 127.0.0.1, made with openssl."""

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=directory)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt",
        "-days", "1", "-subj", "/CN=test-webhook-ca")  # fmt: skip
    run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "tls.key", "-out", "tls.csr",
        "-subj", "/CN=127.0.0.1")  # fmt: skip
    (directory / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    run("x509", "-req", "-in", "tls.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
        "-out", "tls.crt", "-days", "1", "-extfile", "san.ext")  # fmt: skip
    return directory / "tls.crt", directory / "tls.key", (directory / "ca.crt").read_bytes()


@pytest.fixture
def webhook(cluster: ClusterHandle, namespace: str, tmp_path: Path) -> Iterator[WebhookStandIn]:
    cert, key, ca = _certificates(tmp_path)
    server = WebhookStandIn(("127.0.0.1", 0), _Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    name = f"test-webhook-{namespace}"
    config = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": name},
        "webhooks": [
            {
                "name": "deployments.test-webhook.example.com",
                "clientConfig": {
                    "url": f"https://127.0.0.1:{server.server_address[1]}/mutate",
                    "caBundle": base64.b64encode(ca).decode(),
                },
                "rules": [
                    {
                        "apiGroups": ["apps"],
                        "apiVersions": ["v1"],
                        "operations": ["CREATE", "UPDATE"],
                        "resources": ["deployments"],
                    }
                ],
                "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}},
                "failurePolicy": "Fail",
                "sideEffects": "None",
                "admissionReviewVersions": ["v1"],
                "timeoutSeconds": 5,
            }
        ],
    }
    cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(config))
    time.sleep(2)  # the API server's webhook configuration cache
    try:
        yield server
    finally:
        cluster.kubectl("delete", "mutatingwebhookconfiguration", name, "--wait=false")
        server.shutdown()


@pytest.fixture
def debug_operator(
    cluster: ClusterHandle, namespace: str, tmp_path: Path
) -> Iterator[OperatorProcess]:
    env = {"TRITON_VLLM_NAMESPACES": namespace, "TRITON_VLLM_LOG_LEVEL": "debug"}
    with running_operator(cluster, tmp_path / "operator.log", env) as process:
        yield process


def _applies(log: Path, namespace: str, name: str) -> int:
    return log.read_text().count(f"apply Deployment {namespace}/{name}")


def test_a_model_converges_where_a_webhook_rewrites_its_deployment(
    webhook: WebhookStandIn,
    debug_operator: OperatorProcess,
    api_client: client.ApiClient,
    namespace: str,
) -> None:
    models = Models(api_client, namespace)
    models.create("mirrored", tensorParallelSize=1)
    models.wait_condition("mirrored", "Ready", "True", timeout=90)
    deployment = models.apps.read_namespaced_deployment("mirrored", namespace)
    assert deployment.metadata.labels[SCANNED[0]] == SCANNED[1]
    assert deployment.spec.template.spec.containers[0].image.startswith(MIRROR)
    # Converged: what the webhook made is not taken for a hand edit and applied pass after pass.
    # (An annotation on the model wakes a pass, as any event about it does.)
    log = debug_operator.log_path
    before = _applies(log, namespace, "mirrored")
    for team in ("search", "ads"):
        models.custom.patch_namespaced_custom_object(
            GROUP,
            VERSION,
            namespace,
            PLURAL,
            "mirrored",
            {"metadata": {"annotations": {"team": team}}},
        )
    time.sleep(10)
    assert _applies(log, namespace, "mirrored") == before
    assert models.condition("mirrored", "Ready")["status"] == "True"


def test_a_denial_is_said_and_retried_until_the_policy_allows(
    webhook: WebhookStandIn,
    debug_operator: OperatorProcess,
    api_client: client.ApiClient,
    namespace: str,
) -> None:
    models = Models(api_client, namespace)
    webhook.deny = "images must come from the approved registry"
    models.create("denied", tensorParallelSize=1)
    cond = models.wait_condition("denied", "Accepted", "False", "AdmissionDenied", timeout=30)
    assert "images must come from the approved registry" in cond["message"]
    warnings = wait_for(
        lambda: [e for e in models.events("denied") if e.reason == "AdmissionDenied"], 30, "Event"
    )
    assert warnings[0].type == "Warning"
    webhook.deny = None  # the policy's owner relents: no edit of the model is needed
    models.wait_condition("denied", "Ready", "True", timeout=120)
    assert models.condition("denied", "Accepted")["status"] == "True"
