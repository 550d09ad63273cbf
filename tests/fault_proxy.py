"""A fault injector: a TCP proxy between the operator and the real kube-apiserver that a test can
cut (every connection reset, new ones refused), black-hole (connections accepted, bytes swallowed
in both directions, nothing answered: packets dropped) and restore. TLS passes through it
untouched; the operator's kubeconfig points at it (`kubeconfig_through`).

It is a stand-in for a network fault the real parts cannot be made to show on one machine, and
is named as such; everything behind it is the real API server.
"""

from __future__ import annotations

import select
import socket
import struct
import threading
import time
from pathlib import Path

import yaml

PASS, CUT, BLACKHOLE = "pass", "cut", "blackhole"


def _reset(sock: socket.socket) -> None:
    """Close with an RST, as a broken network path looks to the peer."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()
    except OSError:
        pass


class FaultProxy:
    """Listens on 127.0.0.1 and forwards to `upstream` while in PASS mode."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.mode = PASS
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._conns: set[tuple[socket.socket, socket.socket | None]] = set()
        self._lock = threading.Lock()
        self._closed = False
        # When bytes last went from a client to the API server (monotonic), and how many.
        self.last_forwarded = 0.0
        self.forwarded = 0
        threading.Thread(target=self._accept, daemon=True, name="fault-proxy").start()

    # --- what a test does -----------------------------------------------------------------

    def cut(self) -> None:
        self._set(CUT)

    def blackhole(self) -> None:
        self._set(BLACKHOLE)

    def restore(self) -> None:
        self._set(PASS)

    def close(self) -> None:
        self._closed = True
        self._set(CUT)
        self._listener.close()

    def _set(self, mode: str) -> None:
        with self._lock:
            previous, self.mode = self.mode, mode
            # A cut resets everything open; leaving a black hole drops what it swallowed (the
            # streams inside are broken), as a real path that comes back would.
            if mode == CUT or previous == BLACKHOLE:
                for client, server in self._conns:
                    _reset(client)
                    if server is not None:
                        _reset(server)
                self._conns.clear()

    # --- the proxy ------------------------------------------------------------------------

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        with self._lock:
            mode = self.mode
        if mode == CUT:
            _reset(client)
            return
        server = None
        if mode == PASS:
            try:
                server = socket.create_connection(self.upstream, timeout=5)
            except OSError:
                _reset(client)
                return
        pair = (client, server)
        with self._lock:
            self._conns.add(pair)
        try:
            self._pump(client, server)
        finally:
            with self._lock:
                self._conns.discard(pair)
            _reset(client)
            if server is not None:
                _reset(server)

    def _pump(self, client: socket.socket, server: socket.socket | None) -> None:
        sockets = [client] if server is None else [client, server]
        while True:
            with self._lock:
                if (client, server) not in self._conns:
                    return
                mode = self.mode
            try:
                readable, _, _ = select.select(sockets, [], [], 0.2)
                for sock in readable:
                    data = sock.recv(65536)
                    if not data:
                        return
                    if mode != PASS or server is None:
                        continue  # black hole: swallowed
                    if sock is client:
                        server.sendall(data)
                        self.last_forwarded = time.monotonic()
                        self.forwarded += len(data)
                    else:
                        client.sendall(data)
            except OSError:
                return


def kubeconfig_through(kubeconfig: Path, proxy: FaultProxy, out: Path) -> Path:
    """A copy of `kubeconfig` whose clusters are reached through `proxy`."""
    config = yaml.safe_load(kubeconfig.read_text())
    for cluster in config.get("clusters") or []:
        cluster["cluster"]["server"] = f"https://127.0.0.1:{proxy.port}"
    out.write_text(yaml.safe_dump(config))
    return out


def upstream_of(kubeconfig: Path) -> tuple[str, int]:
    """The API server's host and port, from the kubeconfig's first cluster."""
    config = yaml.safe_load(kubeconfig.read_text())
    server = config["clusters"][0]["cluster"]["server"]
    host_port = server.split("://", 1)[1].rstrip("/")
    host, _, port = host_port.rpartition(":")
    return host, int(port)
