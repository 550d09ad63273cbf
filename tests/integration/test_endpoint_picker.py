"""A real endpoint picker routes to the operator's InferencePool.

The parts: the Gateway API Inference Extension's InferencePool CRD and its lightweight endpoint
picker (cmd/lwepp), both from the pinned Go module (hack/gateway-tools.sh); the operator, which
makes the pool for a model with spec.gateway; two real tritonserver processes with the bundled
backend, standing for the model's two kwok pods (the test maps each pod's IP and target port to
one server's 127.0.0.1 port, as a pod network would). The test plays Envoy's part: it sends a
request's headers and body to lwepp over ext_proc gRPC, reads the endpoint lwepp sets in
`x-gateway-destination-endpoint`, and sends the request there.

lwepp picks round-robin among the pool's ready pods: it reads no load and runs no scorers, so
the test checks that every pick is one of the pool's pods, that both are picked, that a pod
leaving the pool is no longer picked, and that each pick is served by the real engine.

Not on 127.0.0.1 only: lwepp binds its gRPC, health and metrics servers on every address
(":<port>"; it takes ports, not addresses); they get free ports.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import grpc
import pytest
import requests
from envoy.config.core.v3 import base_pb2
from envoy.service.ext_proc.v3 import external_processor_pb2 as ext_proc
from envoy.service.ext_proc.v3 import external_processor_pb2_grpc as ext_proc_grpc
from kubernetes import client

from tests.autoscaling_stack import ManagedProcess, wait_for
from tests.integration.models import Models, running_operator
from tests.kube import ClusterHandle
from tests.monitoring_scenario import Served, served_engine
from tests.operator_process import OperatorProcess, free_ports

pytestmark = [pytest.mark.cluster, pytest.mark.serving]

ROOT = Path(__file__).resolve().parents[2]
MODEL = "chat"
POOL_CRD = "inferencepools.inference.networking.k8s.io"
ENDPOINT_HEADER = "x-gateway-destination-endpoint"


def gateway_tools() -> Path:
    """bin/lwepp and crds/ from hack/gateway-tools.sh (built once per version, cached)."""
    out = subprocess.run(
        [str(ROOT / "hack" / "gateway-tools.sh")],
        check=True,
        capture_output=True,
        text=True,
        timeout=3600,
    )
    return Path(out.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def tools() -> Path:
    return gateway_tools()


@pytest.fixture(scope="module")
def pool_crd(cluster: ClusterHandle, tools: Path) -> Iterator[None]:
    """The GA InferencePool CRD as the module ships it; removed afterwards."""
    crd = tools / "crds" / "inference.networking.k8s.io_inferencepools.yaml"
    cluster.kubectl("apply", "--server-side", "-f", str(crd))
    cluster.kubectl("wait", "--for=condition=Established", f"crd/{POOL_CRD}")
    yield
    cluster.kubectl("delete", "crd", POOL_CRD, "--ignore-not-found", "--wait=true")


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("endpoint-picker")


@pytest.fixture(scope="module")
def servers(work: Path) -> Iterator[list[Served]]:
    """Two tritonservers of the model, started side by side."""
    with ExitStack() as stack:
        started: list[Served | BaseException] = [RuntimeError("not started")] * 2

        def start(i: int) -> None:
            try:
                engine = served_engine(MODEL, work / f"engine-{i}", free_ports(1)[0])
                started[i] = stack.enter_context(engine)
            except BaseException as err:  # reported below, in the test's thread
                started[i] = err

        threads = [threading.Thread(target=start, args=(i,)) for i in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        for result in started:
            if isinstance(result, BaseException):
                raise result
        yield [s for s in started if isinstance(s, Served)]


@pytest.fixture(scope="module")
def operator(cluster: ClusterHandle, work: Path, pool_crd: None) -> Iterator[OperatorProcess]:
    with running_operator(cluster, work / "operator.log") as process:
        yield process


def _pool(models: Models, name: str) -> dict[str, Any] | None:
    custom = client.CustomObjectsApi(models.core.api_client)
    try:
        pool: dict[str, Any] = custom.get_namespaced_custom_object(
            "inference.networking.k8s.io", "v1", models.namespace, "inferencepools", name
        )
        return pool
    except client.ApiException as err:
        if err.status == 404:
            return None
        raise


class Lwepp:
    """lwepp for one pool, its ext_proc server in plaintext on a free port."""

    def __init__(self, tools: Path, kubeconfig: Path, namespace: str, pool: str, work: Path):
        self.grpc_port, health, metrics = free_ports(3)
        self.process = ManagedProcess(
            "lwepp",
            [
                str(tools / "bin" / "lwepp"),
                f"--pool-name={pool}",
                f"--pool-namespace={namespace}",
                f"--grpc-port={self.grpc_port}",
                f"--grpc-health-port={health}",
                f"--metrics-port={metrics}",
                "--secure-serving=false",
            ],
            work / "lwepp.log",
            {"KUBECONFIG": str(kubeconfig), "PATH": os.environ.get("PATH", "")},
        )
        self.channel = grpc.insecure_channel(f"127.0.0.1:{self.grpc_port}")

    def pick(self, body: dict[str, Any]) -> str:
        """Envoy's part: the request's headers, then its body; the endpoint lwepp sets."""
        raw = json.dumps(body).encode()
        headers = [
            (":method", "POST"),
            (":path", "/v1/completions"),
            (":authority", "inference-gateway"),
            ("content-type", "application/json"),
            ("content-length", str(len(raw))),
        ]
        messages = [
            ext_proc.ProcessingRequest(
                request_headers=ext_proc.HttpHeaders(
                    headers=base_pb2.HeaderMap(
                        headers=[
                            base_pb2.HeaderValue(key=k, raw_value=v.encode()) for k, v in headers
                        ]
                    ),
                    end_of_stream=False,
                )
            ),
            ext_proc.ProcessingRequest(
                request_body=ext_proc.HttpBody(body=raw, end_of_stream=True)
            ),
        ]
        stub = ext_proc_grpc.ExternalProcessorStub(self.channel)
        responses = stub.Process(iter(messages), timeout=10)
        try:
            first = next(responses)
        finally:
            responses.cancel()
        assert first.WhichOneof("response") == "request_headers", first
        mutation = first.request_headers.response.header_mutation
        found = {
            h.header.key: (h.header.raw_value or h.header.value.encode()).decode()
            for h in mutation.set_headers
        }
        # The same endpoint in the dynamic metadata Envoy's load balancer reads.
        lb = first.dynamic_metadata.fields["envoy.lb"].struct_value.fields
        assert lb[ENDPOINT_HEADER].string_value == found[ENDPOINT_HEADER]
        return found[ENDPOINT_HEADER]

    def __enter__(self) -> Lwepp:
        self.process.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.channel.close()
        self.process.stop()


def _endpoints(models: Models, port: int) -> dict[str, str]:
    """The pool's pods as lwepp addresses them (pod IP and target port), by pod name."""
    return {
        pod.metadata.name: f"{pod.status.pod_ip}:{port}"
        for pod in models.pods(MODEL)
        if pod.status.pod_ip and pod.metadata.deletion_timestamp is None
    }


def _two(endpoints: dict[str, str]) -> dict[str, str] | None:
    return endpoints if len(endpoints) == 2 else None


def _complete(server: Served) -> str:
    answer = requests.post(
        f"http://{server.server.openai}/v1/completions",
        json={"model": MODEL, "prompt": "the quick brown fox", "max_tokens": 8},
        timeout=60,
    )
    answer.raise_for_status()
    text: str = answer.json()["choices"][0]["text"]
    return text


def test_lwepp_routes_to_the_operators_pool_and_follows_a_pod_leaving_it(
    api_client: client.ApiClient,
    namespace: str,
    cluster: ClusterHandle,
    tools: Path,
    servers: list[Served],
    operator: OperatorProcess,
    work: Path,
) -> None:
    models = Models(api_client, namespace)
    models.create(
        MODEL,
        servedModelName=MODEL,
        tensorParallelSize=1,
        replicas=2,
        gateway={"endpointPicker": {"name": f"{MODEL}-epp"}},
    )
    models.wait_condition(MODEL, "Ready", "True", timeout=120)
    gateway = models.wait_condition(MODEL, "Gateway", "True", timeout=60)
    assert gateway["reason"] == "InferencePool"
    pool = wait_for(lambda: _pool(models, MODEL), 30, "the operator's InferencePool")
    (target,) = pool["spec"]["targetPorts"]
    endpoints = wait_for(
        lambda: _two(_endpoints(models, target["number"])), 60, "two pods with IPs"
    )
    # The pod network, as the test's Envoy sees it: each pod's endpoint is one real server.
    route = dict(zip(sorted(endpoints.values()), servers, strict=True))
    with Lwepp(tools, cluster.kubeconfig, namespace, MODEL, work) as picker:
        body = {"model": MODEL, "prompt": "the quick brown fox", "max_tokens": 8}
        first = wait_for(lambda: picker.pick(body), 60, "lwepp to answer with an endpoint")
        picks = [first, *(picker.pick(body) for _ in range(5))]
        assert set(picks) == set(endpoints.values()), (picks, endpoints)
        for endpoint in set(picks):
            assert _complete(route[endpoint]).strip()
        # One pod leaves the pool: the model scales to one replica.
        models.patch_spec(MODEL, replicas=1)
        wait_for(lambda: len(_endpoints(models, target["number"])) == 1, 60, "one pod left")
        (staying,) = _endpoints(models, target["number"]).values()
        wait_for(
            lambda: {picker.pick(body) for _ in range(4)} == {staying},
            60,
            f"lwepp to pick only {staying}",
        )
        assert _complete(route[staying]).strip()


def test_the_pool_goes_with_the_field_and_the_condition_says_when_the_crd_goes(
    api_client: client.ApiClient,
    namespace: str,
    cluster: ClusterHandle,
    tools: Path,
    operator: OperatorProcess,
) -> None:
    models = Models(api_client, namespace)
    models.create("pooled", tensorParallelSize=1, gateway={"endpointPicker": {"name": "epp"}})
    models.wait_condition("pooled", "Gateway", "True", timeout=60)
    wait_for(lambda: _pool(models, "pooled"), 30, "the pool")
    models.patch_spec("pooled", gateway=None)
    wait_for(lambda: _pool(models, "pooled") is None, 60, "the pool deleted with the field")
    wait_for(
        lambda: "Gateway" not in {c["type"] for c in models.get("pooled")["status"]["conditions"]},
        60,
        "the Gateway condition gone",
    )
    models.patch_spec("pooled", gateway={"endpointPicker": {"name": "epp"}})
    wait_for(lambda: _pool(models, "pooled"), 60, "the pool again")
    cluster.kubectl("delete", "crd", POOL_CRD, "--wait=true")
    try:
        condition = models.wait_condition(
            "pooled", "Gateway", "False", "InferencePoolCRDMissing", timeout=60
        )
        assert POOL_CRD in condition["message"]
    finally:
        crd = tools / "crds" / "inference.networking.k8s.io_inferencepools.yaml"
        cluster.kubectl("apply", "--server-side", "-f", str(crd))
        cluster.kubectl("wait", "--for=condition=Established", f"crd/{POOL_CRD}")
