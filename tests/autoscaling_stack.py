"""A real KEDA and a real Prometheus beside the local control plane, for autoscaling tests.

Everything runs as local processes listening on 127.0.0.1 on free ports, with its state and
logs under a work directory the caller gives:

    tools = autoscaling_tools()                      # hack/autoscaling-tools.sh (cached build)
    gateway = SeriesServer()                         # a series the test serves (gateway stand-in)
    gateway.set("gateway_queue_depth", {"namespace": ns}, 0)
    with AutoscalingStack(kubeconfig, work_dir, tools,
                          [ScrapeTarget(gateway.address, honor_labels=True)]) as stack:
        stack.prometheus.query('gateway_queue_depth{namespace="%s"}' % ns)
        stack.prometheus_url                         # serverAddress of a KEDA prometheus trigger

Prometheus scrapes the caller's targets every second (ScrapeTarget: host:port, metrics path and
target labels, e.g. namespace/pod as a Kubernetes pod scrape would label a tritonserver's OpenAI
port); Prometheus.set_targets() changes them on a running server.

KEDA: its CRDs are applied; its operator and its metrics apiserver (the adapter) run with the
admin kubeconfig, no leader election, no webhooks and no certificate rotation: a CA and one
certificate made here (openssl, as hack/cluster.sh makes the cluster's) serve both the gRPC
metrics service between them (mutual TLS) and the adapter's HTTPS. The adapter is registered as
the APIService v1beta1.external.metrics.k8s.io behind a Service of type ExternalName
(externalName: localhost): the aggregator resolves such a Service to https://localhost:<port>,
so no pod, endpoint or kube-proxy is needed, and checks the certificate against the caBundle for
keda-metrics-apiserver.keda.svc. kube-controller-manager's HPA controller (its service account,
bound to external.metrics.k8s.io as KEDA's config/metrics-server does) reads the metrics there.

One stack per control plane at a time (the APIService and the keda namespace are cluster-wide).
stop() deletes what start() created, KEDA's CRDs included (remove_crds=False keeps them), so
later tests see a cluster without KEDA.

Not on 127.0.0.1 only: the adapter's own /metrics server binds ":<port>" (keda-adapter's --port
takes a port, not an address); it gets a free port.
"""

from __future__ import annotations

import base64
import contextlib
import ctypes
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any

import yaml

from tests.operator_process import free_ports

ROOT = Path(__file__).resolve().parents[1]
TOOLS_SH = ROOT / "hack" / "autoscaling-tools.sh"
CLUSTER_SH = ROOT / "hack" / "cluster.sh"

KEDA_NAMESPACE = "keda"
ADAPTER_SERVICE = "keda-metrics-apiserver"
EXTERNAL_METRICS_APISERVICE = "v1beta1.external.metrics.k8s.io"
# Objects start() makes besides the CRDs and the keda namespace (stop() deletes them).
_HPA_READER_ROLE = "keda-external-metrics-reader"
_HPA_READER_BINDING = "keda-hpa-controller-external-metrics"


class StackError(RuntimeError):
    """A part of the stack did not start or answer; the message carries the logs' tails."""


def autoscaling_tools(build: bool = True) -> Path:
    """The directory of bin/keda, bin/keda-adapter, bin/prometheus and crds/ from
    hack/autoscaling-tools.sh: built once per version set (10-25 min cold), cached after.
    build=False only prints where it would be (it may not exist)."""
    args = [str(TOOLS_SH)] if build else [str(TOOLS_SH), "dir"]
    out = subprocess.run(args, check=True, capture_output=True, text=True, timeout=3600)
    tools = Path(out.stdout.strip().splitlines()[-1])
    if build and not (tools / ".complete").is_file():
        raise StackError(f"{TOOLS_SH} printed {tools}, which holds no complete build")
    return tools


def default_kubectl() -> Path:
    """The control plane's pinned kubectl (hack/cluster.sh bin-dir)."""
    out = subprocess.run(
        [str(CLUSTER_SH), "bin-dir"], check=True, capture_output=True, text=True, timeout=60
    )
    return Path(out.stdout.strip()) / "kubectl"


def wait_for(probe: Callable[[], Any], timeout: float, what: str, interval: float = 0.2) -> Any:
    """Poll probe() until it returns something truthy; TimeoutError after timeout seconds.
    An exception from probe() counts as not yet (the last one is in the error)."""
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    while True:
        try:
            value = probe()
            if value:
                return value
        except Exception as exc:  # not ready yet, whatever the reason
            last = exc
        if time.monotonic() > deadline:
            detail = f" (last error: {last})" if last else ""
            raise TimeoutError(f"timed out after {timeout:g}s waiting for {what}{detail}")
        time.sleep(interval)


def _http_get(url: str, timeout: float = 5) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        body: bytes = resp.read()
        return body


# --- processes -----------------------------------------------------------------------------

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    # A test run killed hard (timeout, ^C twice) must not leave KEDA or Prometheus running.
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


class ManagedProcess:
    """A child process in its own session, stdout and stderr to a log file."""

    def __init__(
        self, name: str, argv: Sequence[str], log_path: Path, env: Mapping[str, str]
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        self.env = dict(env)
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            log.write(f"$ {' '.join(self.argv)}\n".encode())
            log.flush()
            self.process = subprocess.Popen(
                self.argv,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def check_alive(self) -> None:
        """StackError with the log's tail if the process has exited."""
        if self.process is not None and self.process.poll() is not None:
            raise StackError(f"{self.name} exited with {self.process.returncode}\n{self.tail()}")

    def stop(self, timeout: float = 10) -> None:
        """SIGTERM, then SIGKILL after timeout seconds."""
        if not self.alive or self.process is None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)

    def tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace").splitlines()[-lines:]
        except OSError:
            text = []
        return f"--- {self.name}: last {len(text)} lines of {self.log_path}\n" + "\n".join(text)


# --- a series the test serves -------------------------------------------------------------


def _label_text(labels: Mapping[str, str]) -> str:
    if not labels:
        return ""
    esc = {
        k: v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
        for k, v in labels.items()
    }
    return "{" + ",".join(f'{k}="{v}"' for k, v in sorted(esc.items())) + "}"


class _QuietServer(ThreadingHTTPServer):
    """A scrape that timed out hangs up before the answer: not an error worth a traceback."""

    def handle_error(self, request: Any, client_address: Any) -> None:
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class SeriesServer:
    """A tiny HTTP server on 127.0.0.1 exposing gauges in Prometheus' text format at /metrics
    (a gateway's queue or request rate, standing in for the real one). Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._series: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path.split("?")[0] != "/metrics":
                    self.send_error(404)
                    return
                body = owner.exposition().encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = _QuietServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="series-server", daemon=True
        )
        self._thread.start()

    @property
    def address(self) -> str:
        """host:port, for a ScrapeTarget."""
        host, port = self._server.server_address[:2]
        return f"{host!s}:{port}"

    def set(self, name: str, labels: Mapping[str, str], value: float) -> None:
        with self._lock:
            self._series[(name, tuple(sorted(labels.items())))] = float(value)

    def remove(self, name: str, labels: Mapping[str, str]) -> None:
        """Stop exposing a series (Prometheus marks it stale on its next scrape)."""
        with self._lock:
            self._series.pop((name, tuple(sorted(labels.items()))), None)

    def exposition(self) -> str:
        with self._lock:
            items = sorted(self._series.items())
        lines: list[str] = []
        typed: set[str] = set()
        for (name, labels), value in items:
            if name not in typed:
                lines.append(f"# TYPE {name} gauge")
                typed.add(name)
            lines.append(f"{name}{_label_text(dict(labels))} {value!r}")
        return "\n".join(lines) + "\n"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


# --- Prometheus ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ScrapeTarget:
    """One scrape target: address host:port, metrics path, target labels (e.g. namespace and
    pod, as a Kubernetes pod scrape would set them). honor_labels keeps the scraped series' own
    labels where they clash with the target's (a gateway's series name their namespace)."""

    address: str
    metrics_path: str = "/metrics"
    labels: Mapping[str, str] = field(default_factory=dict)
    honor_labels: bool = False
    job: str | None = None


class Prometheus:
    """A Prometheus server with a generated config: every target scraped each scrape_interval."""

    def __init__(
        self,
        binary: Path,
        work_dir: Path,
        targets: Iterable[ScrapeTarget] = (),
        scrape_interval: str = "1s",
    ) -> None:
        self.binary = binary
        self.dir = work_dir / "prometheus"
        self.config_path = self.dir / "prometheus.yml"
        self.scrape_interval = scrape_interval
        self.targets = list(targets)
        self.port = free_ports(1)[0]
        self.process = ManagedProcess(
            "prometheus",
            [
                str(binary),
                f"--config.file={self.config_path}",
                f"--storage.tsdb.path={self.dir / 'data'}",
                "--storage.tsdb.retention.time=1d",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--web.enable-lifecycle",  # POST /-/reload after set_targets()
                "--log.level=info",
            ],
            work_dir / "logs" / "prometheus.log",
            {"PATH": os.environ.get("PATH", ""), "HOME": str(self.dir)},
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def config(self) -> dict[str, Any]:
        jobs = []
        for i, target in enumerate(self.targets):
            jobs.append(
                {
                    "job_name": target.job or f"target-{i}",
                    "metrics_path": target.metrics_path,
                    "honor_labels": target.honor_labels,
                    "scrape_interval": self.scrape_interval,
                    "scrape_timeout": self.scrape_interval,
                    # Prometheus 3 refuses a scrape without a valid Content-Type otherwise.
                    "fallback_scrape_protocol": "PrometheusText0.0.4",
                    "static_configs": [
                        {"targets": [target.address], "labels": dict(target.labels)}
                    ],
                }
            )
        return {
            "global": {
                "scrape_interval": self.scrape_interval,
                "scrape_timeout": self.scrape_interval,
                "evaluation_interval": self.scrape_interval,
            },
            "scrape_configs": jobs,
        }

    def _write_config(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        tmp = self.config_path.with_suffix(".tmp")
        tmp.write_text(yaml.safe_dump(self.config(), sort_keys=False))
        tmp.replace(self.config_path)

    def start(self, timeout: float = 60) -> None:
        self._write_config()
        self.process.start()

        def ready() -> bool:
            self.process.check_alive()
            return _http_get(f"{self.url}/-/ready", timeout=2) is not None

        try:
            wait_for(ready, timeout, "Prometheus /-/ready")
        except TimeoutError as exc:
            raise StackError(f"{exc}\n{self.process.tail()}") from exc

    def set_targets(self, targets: Iterable[ScrapeTarget], timeout: float = 30) -> None:
        """Replace the scrape targets and reload; returns once the running config has them."""
        self.targets = list(targets)
        self._write_config()
        req = urllib.request.Request(f"{self.url}/-/reload", method="POST")
        with urllib.request.urlopen(req, timeout=10):
            pass
        want = {t.address for t in self.targets}

        def loaded() -> bool:
            active = self.api("targets", {"state": "active"})["activeTargets"]
            return want <= {t["labels"].get("instance") for t in active}

        wait_for(loaded, timeout, f"Prometheus to scrape {sorted(want)}")

    def add_target(self, target: ScrapeTarget, timeout: float = 30) -> None:
        """Scrape one more target (e.g. a tritonserver's OpenAI port, labelled namespace/pod)."""
        self.set_targets([*self.targets, target], timeout)

    def api(self, path: str, params: Mapping[str, str] | None = None) -> Any:
        """GET /api/v1/<path>: the "data" of a successful answer."""
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        answer = json.loads(_http_get(f"{self.url}/api/v1/{path}{query}", timeout=10))
        if answer.get("status") != "success":
            raise StackError(f"Prometheus /api/v1/{path}: {answer}")
        return answer["data"]

    def query(self, promql: str) -> list[dict[str, Any]]:
        """An instant query at now: the result list ({"metric": {...}, "value": [t, "v"]} for
        a vector; a scalar comes back as one item without "metric")."""
        data = self.api("query", {"query": promql})
        if data["resultType"] in ("scalar", "string"):
            return [{"metric": {}, "value": data["result"]}]
        result: list[dict[str, Any]] = data["result"]
        return result

    def query_value(self, promql: str) -> float | None:
        """The value of a query with one result, None when it has none (several: an error)."""
        result = self.query(promql)
        if not result:
            return None
        if len(result) > 1:
            raise StackError(f"{promql!r} has {len(result)} results: {result}")
        return float(result[0]["value"][1])

    def wait_for_value(
        self, promql: str, predicate: Callable[[float | None], bool], timeout: float = 30
    ) -> float | None:
        """Wait until predicate(query_value(promql)) holds; returns that value."""
        box: list[float | None] = []

        def probe() -> bool:
            value = self.query_value(promql)
            if predicate(value):
                box.append(value)
                return True
            return False

        wait_for(probe, timeout, f"Prometheus: {promql}")
        return box[0]

    def stop(self) -> None:
        self.process.stop()


# --- KEDA ---------------------------------------------------------------------------------


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=60)


def make_keda_certs(cert_dir: Path) -> None:
    """ca.crt, tls.crt and tls.key as KEDA's cert rotation would write them: one EC certificate
    for serving and for client auth, valid for 127.0.0.1/localhost and KEDA's Service names."""
    cert_dir.mkdir(parents=True, exist_ok=True)
    ca_key, ca_crt = cert_dir / "ca.key", cert_dir / "ca.crt"
    key, csr, crt, ext = (cert_dir / n for n in ("tls.key", "tls.csr", "tls.crt", "tls.ext"))
    _openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", str(ca_key))
    _openssl(
        "req", "-x509", "-new", "-key", str(ca_key), "-subj", "/O=KEDAORG/CN=KEDA",
        "-days", "30", "-sha256",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,digitalSignature,keyCertSign,cRLSign",
        "-out", str(ca_crt),
    )  # fmt: skip
    _openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", str(key))
    _openssl("req", "-new", "-key", str(key), "-subj", "/O=KEDAORG/CN=keda", "-out", str(csr))
    names = [
        f"{svc}.{KEDA_NAMESPACE}.svc{suffix}"
        for svc in (ADAPTER_SERVICE, "keda-operator")
        for suffix in ("", ".cluster.local")
    ]
    sans = ",".join(["IP:127.0.0.1", "DNS:localhost", *(f"DNS:{n}" for n in names)])
    ext.write_text(
        "basicConstraints=critical,CA:FALSE\n"
        "keyUsage=critical,digitalSignature,keyEncipherment\n"
        "extendedKeyUsage=serverAuth,clientAuth\n"
        f"subjectAltName={sans}\n"
    )
    _openssl(
        "x509", "-req", "-in", str(csr), "-CA", str(ca_crt), "-CAkey", str(ca_key),
        "-CAcreateserial", "-days", "30", "-sha256", "-extfile", str(ext), "-out", str(crt),
    )  # fmt: skip
    csr.unlink()
    ext.unlink()
    for path in cert_dir.iterdir():
        path.chmod(0o600)


def _docs(*objs: Mapping[str, Any]) -> str:
    return yaml.safe_dump_all([dict(o) for o in objs], sort_keys=False)


class Keda:
    """KEDA's operator and metrics apiserver as local processes against the control plane."""

    def __init__(
        self,
        tools: Path,
        kubeconfig: Path,
        work_dir: Path,
        kubectl: Path | None = None,
        log_level: str = "info",
    ) -> None:
        self.tools = tools
        self.kubeconfig = kubeconfig
        self.dir = work_dir / "keda"
        self.cert_dir = self.dir / "certs"
        self.kubectl_bin = kubectl or default_kubectl()
        self.kube_cache = work_dir / "kube-cache"
        self._last_apiservice_conditions: list[dict[str, Any]] = []
        self._last_raw = ""
        (
            self.grpc_port,
            self.operator_metrics_port,
            self.probe_port,
            self.adapter_port,
            self.adapter_metrics_port,
        ) = free_ports(5)
        env = {
            "PATH": os.environ.get("PATH", ""),
            "HOME": str(self.dir),
            "KUBECONFIG": str(kubeconfig),
            "WATCH_NAMESPACE": "",
            "POD_NAMESPACE": KEDA_NAMESPACE,
            "KEDA_CLUSTER_OBJECT_NAMESPACE": KEDA_NAMESPACE,
        }
        kc = str(kubeconfig)
        self.operator = ManagedProcess(
            "keda-operator",
            [
                str(tools / "bin" / "keda"),
                f"--kubeconfig={kc}",
                "--leader-elect=false",
                f"--metrics-bind-address=127.0.0.1:{self.operator_metrics_port}",
                f"--health-probe-bind-address=127.0.0.1:{self.probe_port}",
                f"--metrics-service-bind-address=127.0.0.1:{self.grpc_port}",
                f"--cert-dir={self.cert_dir}",
                # CAs the scalers trust beyond the system's (an HTTPS Prometheus): none here.
                f"--ca-dir={self.dir / 'custom-ca'}",
                "--enable-cert-rotation=false",
                "--enable-webhook-patching=false",
                "--enable-apiservice-patching=false",
                f"--zap-log-level={log_level}",
                "--zap-encoder=console",
                "--zap-time-encoding=rfc3339nano",
            ],
            work_dir / "logs" / "keda-operator.log",
            env,
        )
        self.adapter = ManagedProcess(
            "keda-adapter",
            [
                str(tools / "bin" / "keda-adapter"),
                f"--kubeconfig={kc}",
                f"--lister-kubeconfig={kc}",
                f"--authentication-kubeconfig={kc}",
                f"--authorization-kubeconfig={kc}",
                "--bind-address=127.0.0.1",
                f"--secure-port={self.adapter_port}",
                f"--tls-cert-file={self.cert_dir / 'tls.crt'}",
                f"--tls-private-key-file={self.cert_dir / 'tls.key'}",
                f"--cert-dir={self.cert_dir}",
                f"--metrics-service-address=127.0.0.1:{self.grpc_port}",
                f"--port={self.adapter_metrics_port}",
                f"--zap-log-level={log_level}",
                "--zap-encoder=console",
                "--zap-time-encoding=rfc3339nano",
            ],
            work_dir / "logs" / "keda-adapter.log",
            env,
        )

    # kubectl against the control plane, nothing written under HOME.
    def kubectl(
        self, *args: str, input: str | None = None, check: bool = True, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        env = {
            **os.environ,
            "KUBECONFIG": str(self.kubeconfig),
            "KUBECACHEDIR": str(self.kube_cache),
        }
        res = subprocess.run(
            [str(self.kubectl_bin), *args],
            input=input,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and res.returncode != 0:
            raise StackError(f"kubectl {' '.join(args)} failed ({res.returncode}):\n{res.stderr}")
        return res

    def crd_files(self) -> list[Path]:
        return sorted((self.tools / "crds").glob("*.yaml"))

    def apply_crds(self, timeout: float = 60) -> None:
        """KEDA's CRDs as the module ships them (server-side: they exceed the annotation limit
        of a client-side apply), then wait until they are Established."""
        args = [a for f in self.crd_files() for a in ("-f", str(f))]
        if not args:
            raise StackError(f"no CRDs in {self.tools / 'crds'}")
        self.kubectl(
            "apply", "--server-side", "--force-conflicts", "--field-manager=keda-stack", *args
        )
        self.kubectl("wait", "--for=condition=Established", f"--timeout={timeout:g}s", *args)

    def _cluster_objects(self) -> str:
        ca_bundle = (self.cert_dir / "ca.crt").read_bytes()
        labels = {"app.kubernetes.io/part-of": "keda-operator", "tritonvllm.io/test": "keda-stack"}
        return _docs(
            {
                "apiVersion": "v1",
                "kind": "Namespace",
                "metadata": {"name": KEDA_NAMESPACE, "labels": labels},
            },
            # The aggregator turns an ExternalName Service into https://<externalName>:<port>.
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {
                    "name": ADAPTER_SERVICE,
                    "namespace": KEDA_NAMESPACE,
                    "labels": labels,
                },
                "spec": {"type": "ExternalName", "externalName": "localhost"},
            },
            {
                "apiVersion": "apiregistration.k8s.io/v1",
                "kind": "APIService",
                "metadata": {"name": EXTERNAL_METRICS_APISERVICE, "labels": labels},
                "spec": {
                    "service": {
                        "name": ADAPTER_SERVICE,
                        "namespace": KEDA_NAMESPACE,
                        "port": self.adapter_port,
                    },
                    "group": "external.metrics.k8s.io",
                    "version": "v1beta1",
                    "caBundle": base64.b64encode(ca_bundle).decode(),
                    "groupPriorityMinimum": 100,
                    "versionPriority": 100,
                },
            },
            # As KEDA's config/metrics-server/role.yaml and role_binding.yaml: the HPA
            # controller (kcm runs it as this service account) may read external metrics.
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "ClusterRole",
                "metadata": {"name": _HPA_READER_ROLE, "labels": labels},
                "rules": [
                    {"apiGroups": ["external.metrics.k8s.io"], "resources": ["*"], "verbs": ["*"]}
                ],
            },
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "ClusterRoleBinding",
                "metadata": {"name": _HPA_READER_BINDING, "labels": labels},
                "roleRef": {
                    "apiGroup": "rbac.authorization.k8s.io",
                    "kind": "ClusterRole",
                    "name": _HPA_READER_ROLE,
                },
                "subjects": [
                    {
                        "kind": "ServiceAccount",
                        "name": "horizontal-pod-autoscaler",
                        "namespace": "kube-system",
                    }
                ],
            },
        )

    def _apiservice_available(self) -> bool:
        self.operator.check_alive()
        self.adapter.check_alive()
        res = self.kubectl("get", "apiservice", EXTERNAL_METRICS_APISERVICE, "-o", "json")
        conditions = json.loads(res.stdout).get("status", {}).get("conditions", [])
        self._last_apiservice_conditions = conditions
        return any(c["type"] == "Available" and c["status"] == "True" for c in conditions)

    def _namespace_not_terminating(self) -> bool:
        res = self.kubectl(
            "get", "namespace", KEDA_NAMESPACE, "-o", "jsonpath={.status.phase}", check=False
        )
        return res.stdout.strip() != "Terminating"

    def _external_metrics_answer(self) -> bool:
        res = self.kubectl(
            "get", "--raw", "/apis/external.metrics.k8s.io/v1beta1", check=False, timeout=30
        )
        self._last_raw = res.stderr.strip() or res.stdout.strip()
        return res.returncode == 0

    def start(self, timeout: float = 120) -> None:
        """Apply the CRDs and cluster objects, start operator and adapter, and wait until the
        operator is ready and external.metrics.k8s.io answers through the aggregator."""
        make_keda_certs(self.cert_dir)
        (self.dir / "custom-ca").mkdir(parents=True, exist_ok=True)
        self.apply_crds()
        # The previous stack's namespace may still be going (its stop() does not wait for it):
        # nothing can be created in it until it is gone.
        wait_for(self._namespace_not_terminating, 120, f"namespace {KEDA_NAMESPACE} to go")
        self.kubectl("apply", "--server-side", "--field-manager=keda-stack", "-f", "-",
                     input=self._cluster_objects())  # fmt: skip
        self.operator.start()
        self.adapter.start()
        deadline = time.monotonic() + timeout

        def left() -> float:
            return max(1.0, deadline - time.monotonic())

        def operator_ready() -> bool:
            self.operator.check_alive()
            return _http_get(f"http://127.0.0.1:{self.probe_port}/readyz", timeout=2) == b"ok"

        wait_for(operator_ready, left(), "the KEDA operator's /readyz")
        try:
            wait_for(self._apiservice_available, left(), "APIService Available", interval=0.5)
        except TimeoutError as exc:
            raise TimeoutError(f"{exc}; conditions: {self._last_apiservice_conditions}") from exc
        try:
            wait_for(
                self._external_metrics_answer, left(), "GET /apis/external.metrics.k8s.io/v1beta1"
            )
        except TimeoutError as exc:
            raise TimeoutError(f"{exc}; last answer: {self._last_raw}") from exc

    def external_metric(self, namespace: str, metric: str, scaled_object: str) -> list[float]:
        """The values the HPA controller would read for a ScaledObject's metric (e.g.
        "s0-prometheus"), through the aggregator, the adapter and the operator."""
        selector = urllib.parse.quote(f"scaledobject.keda.sh/name={scaled_object}")
        path = f"/apis/external.metrics.k8s.io/v1beta1/namespaces/{namespace}/{metric}"
        res = self.kubectl("get", "--raw", f"{path}?labelSelector={selector}", timeout=30)
        items = json.loads(res.stdout).get("items", [])
        return [parse_quantity(i["value"]) for i in items]

    def stop(self, remove_crds: bool = True) -> None:
        """Delete every ScaledObject/ScaledJob while the operator can still drop its finalizers,
        stop both processes, then delete the APIService (a dead one would break discovery for
        everyone), the cluster objects and, with remove_crds, the CRDs."""
        errors: list[str] = []
        if remove_crds and self.operator.alive:
            for kind in ("scaledobjects.keda.sh", "scaledjobs.keda.sh"):
                res = self.kubectl(
                    "delete", kind, "--all", "--all-namespaces", "--wait=true", "--timeout=60s",
                    check=False, timeout=90,
                )  # fmt: skip
                if (
                    res.returncode != 0
                    and "the server doesn't have a resource type" not in res.stderr
                ):
                    errors.append(res.stderr.strip())
        self.adapter.stop()
        self.operator.stop()
        res = self.kubectl(
            "delete", "--ignore-not-found", "--wait=false", "-f", "-",
            input=self._cluster_objects() if (self.cert_dir / "ca.crt").exists() else "",
            check=False,
        )  # fmt: skip
        if res.returncode != 0:
            errors.append(res.stderr.strip())
        if remove_crds:
            args = [a for f in self.crd_files() for a in ("-f", str(f))]
            res = self.kubectl(
                "delete", "--ignore-not-found", "--timeout=60s", *args, check=False, timeout=90
            )
            if res.returncode != 0:
                errors.append(res.stderr.strip())
        if errors:
            raise StackError("stopping KEDA: " + "\n".join(errors))


def parse_quantity(value: str) -> float:
    """A Kubernetes quantity as the metrics APIs write it ("20", "1500m", "2k")."""
    suffixes = {"m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "Ki": 1024.0, "Mi": 1024.0**2}
    for suffix in sorted(suffixes, key=len, reverse=True):
        if value.endswith(suffix):
            return float(value[: -len(suffix)]) * suffixes[suffix]
    return float(value)


# --- both ---------------------------------------------------------------------------------


class AutoscalingStack:
    """Prometheus and KEDA together: start() both (Prometheus first), stop() both; a context
    manager. On a failed start, what started is stopped and the error has the logs' tails."""

    def __init__(
        self,
        kubeconfig: Path,
        work_dir: Path,
        tools: Path | None = None,
        targets: Iterable[ScrapeTarget] = (),
        kubectl: Path | None = None,
        scrape_interval: str = "1s",
    ) -> None:
        self.work_dir = work_dir
        self.tools = tools or autoscaling_tools()
        work_dir.mkdir(parents=True, exist_ok=True)
        self.prometheus = Prometheus(
            self.tools / "bin" / "prometheus", work_dir, targets, scrape_interval
        )
        self.keda = Keda(self.tools, kubeconfig, work_dir, kubectl)

    @property
    def prometheus_url(self) -> str:
        """serverAddress for a KEDA prometheus trigger."""
        return self.prometheus.url

    def processes(self) -> list[ManagedProcess]:
        return [self.prometheus.process, self.keda.operator, self.keda.adapter]

    def diagnostics(self, lines: int = 40) -> str:
        """The tails of every log, for a failure's message."""
        return "\n".join(p.tail(lines) for p in self.processes())

    def check_alive(self) -> None:
        for p in self.processes():
            p.check_alive()

    def start(self, timeout: float = 180) -> None:
        t0 = time.monotonic()
        try:
            self.prometheus.start()
            self.keda.start(timeout=max(10.0, timeout - (time.monotonic() - t0)))
        except BaseException as exc:
            diag = self.diagnostics()
            try:
                self.stop()
            except Exception as stop_exc:  # the start error matters more
                diag += f"\n(and stopping failed: {stop_exc})"
            raise StackError(f"autoscaling stack did not start: {exc}\n{diag}") from exc

    def stop(self, remove_crds: bool = True) -> None:
        try:
            self.keda.stop(remove_crds=remove_crds)
        finally:
            self.prometheus.stop()

    def __enter__(self) -> AutoscalingStack:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
