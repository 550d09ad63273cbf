"""The autoscaling harness' pure parts: Prometheus' generated config, the served series."""

from __future__ import annotations

import urllib.request
from pathlib import Path

import pytest

from tests.autoscaling_stack import Prometheus, ScrapeTarget, SeriesServer, parse_quantity


def test_prometheus_config_scrapes_each_target_with_its_path_and_labels(tmp_path: Path) -> None:
    prom = Prometheus(
        tmp_path / "prometheus",
        tmp_path,
        [
            ScrapeTarget("127.0.0.1:8000", labels={"namespace": "ns", "pod": "m-0"}),
            ScrapeTarget("127.0.0.1:9000", "/gw", honor_labels=True, job="gateway"),
        ],
    )
    config = prom.config()
    assert config["global"]["scrape_interval"] == "1s"
    first, second = config["scrape_configs"]
    assert first["metrics_path"] == "/metrics"
    assert first["static_configs"] == [
        {"targets": ["127.0.0.1:8000"], "labels": {"namespace": "ns", "pod": "m-0"}}
    ]
    assert first["honor_labels"] is False
    assert first["scrape_timeout"] == first["scrape_interval"] == "1s"
    assert second["job_name"] == "gateway" and second["metrics_path"] == "/gw"
    assert second["honor_labels"] is True
    assert "--web.listen-address=127.0.0.1:" in " ".join(prom.process.argv)


def test_series_server_serves_prometheus_text() -> None:
    server = SeriesServer()
    try:
        server.set("gateway_queue_depth", {"namespace": "a", "q": 'x"y'}, 3)
        server.set("gateway_queue_depth", {"namespace": "b"}, 0)
        with urllib.request.urlopen(f"http://{server.address}/metrics", timeout=5) as resp:
            assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
            body = resp.read().decode()
        assert body == (
            "# TYPE gateway_queue_depth gauge\n"
            'gateway_queue_depth{namespace="a",q="x\\"y"} 3.0\n'
            'gateway_queue_depth{namespace="b"} 0.0\n'
        )
        server.remove("gateway_queue_depth", {"namespace": "b"})
        assert 'namespace="b"' not in server.exposition()
    finally:
        server.close()


@pytest.mark.parametrize(
    ("text", "value"), [("20", 20.0), ("1500m", 1.5), ("2k", 2000.0), ("0", 0.0)]
)
def test_parse_quantity(text: str, value: float) -> None:
    assert parse_quantity(text) == value
