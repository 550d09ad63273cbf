"""A stand-in for the Hugging Face Hub: a small HTTP server of the Hub's URL layout, for tests.

It serves model repos from a directory (`<root>/<org>/<name>/...`, one commit per repo) on
127.0.0.1, with the parts of the Hub's protocol that huggingface_hub relies on to download
files: `HEAD`/`GET /<repo>/resolve/<revision>/<path>` with `X-Repo-Commit`, `ETag` and byte
ranges; `GET /api/models/<repo>/revision/<revision>` and `/api/models/<repo>/tree/<revision>`;
and the Hub's error answers (`X-Error-Code` RepoNotFound, GatedRepo, RevisionNotFound,
EntryNotFound with the status codes the Hub sends). Gated repos accept only the tokens given.

A stand-in, not a mirror: olah 0.5.4 (a self-hosted Hub mirror on PyPI) does serve local git
repos offline, but it answers a missing file with 401 RepoNotFound instead of 404 EntryNotFound,
ignores Range requests and has no gated repos, and those are what the tests are about.

Faults for download tests: `cut_after[path] = n` sends the first n bytes of a file's first full
GET and drops the connection; `stall_after[path] = n` sends n bytes and then waits until
`release` is set (for a client killed mid-download).
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

RESOLVE = re.compile(r"^/(?P<repo>[^/]+/[^/]+)/resolve/(?P<revision>[^/]+)/(?P<path>.+)$")
API = re.compile(r"^/api/models/(?P<repo>[^/]+/[^/]+)/(?P<kind>revision|tree)/(?P<revision>[^/]+)")


@dataclass
class Request:
    """One request the stand-in answered, as a test reads it back."""

    method: str
    path: str
    status: int
    range: str | None
    authorization: str | None
    bytes_sent: int


@dataclass
class HubStandIn:
    """The stand-in's repos, gating, faults and log; `url` once started."""

    root: Path
    gated: dict[str, set[str]] = field(default_factory=dict)  # repo -> tokens allowed
    cut_after: dict[str, int] = field(default_factory=dict)
    stall_after: dict[str, int] = field(default_factory=dict)
    release: threading.Event = field(default_factory=threading.Event)
    requests: list[Request] = field(default_factory=list)
    url: str = ""

    def commit(self, repo: str) -> str:
        """The repo's one commit: a hash of its files' names and contents."""
        digest = hashlib.sha1()
        for path in sorted(self.files(repo)):
            digest.update(path.encode())
            digest.update(hashlib.sha256((self.root / repo / path).read_bytes()).digest())
        return digest.hexdigest()

    def files(self, repo: str) -> list[str]:
        base = self.root / repo
        return sorted(str(p.relative_to(base)) for p in base.rglob("*") if p.is_file())

    def paths(self, method: str | None = None) -> list[str]:
        """The paths requested so far (of one method, if given)."""
        return [r.path for r in self.requests if method is None or r.method == method]


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # quiet: the log is `requests`
        return

    # --- plumbing ------------------------------------------------------------------------

    def _record(self, status: int, sent: int) -> None:
        self.server.hub.requests.append(
            Request(
                self.command,
                urlsplit(self.path).path,
                status,
                self.headers.get("Range"),
                self.headers.get("Authorization"),
                sent,
            )
        )

    def _error(self, status: int, code: str, message: str, commit: str | None = None) -> None:
        body = json.dumps({"error": message}).encode()
        self._record(status, 0)  # before answering: a test may look as soon as it has the answer
        self.send_response(status)
        self.send_header("X-Error-Code", code)
        self.send_header("X-Error-Message", message)
        if commit:
            self.send_header("X-Repo-Commit", commit)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, payload: Any) -> None:
        body = json.dumps(payload).encode()
        self._record(200, len(body))
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _token(self) -> str | None:
        header = self.headers.get("Authorization") or ""
        return header.removeprefix("Bearer ") if header.startswith("Bearer ") else None

    def _repo_commit(self, repo: str, revision: str) -> str | None:
        """The commit, or None once an error answer was sent (unknown repo, gated, revision)."""
        hub = self.server.hub
        token = self._token()
        if not (hub.root / repo).is_dir():
            # The Hub answers 401 to anonymous callers, so as not to tell private from missing.
            status = 404 if token else 401
            self._error(status, "RepoNotFound", "Repository not found")
            return None
        if repo in hub.gated and token not in hub.gated[repo]:
            if token is None:
                message = (
                    f"Access to model {repo} is restricted. You must have access to it and be "
                    "authenticated to access it. Please log in."
                )
                self._error(401, "GatedRepo", message)
            else:
                message = (
                    f"Access to model {repo} is restricted and you are not in the authorized list."
                )
                self._error(403, "GatedRepo", message)
            return None
        commit = hub.commit(repo)
        if revision not in ("main", commit):
            self._error(404, "RevisionNotFound", f"Invalid rev id: {revision}")
            return None
        return commit

    # --- routes --------------------------------------------------------------------------

    def do_HEAD(self) -> None:
        self._resolve()

    def do_GET(self) -> None:
        path = urlsplit(self.path).path
        if API.match(path):
            self._api(API.match(path))  # type: ignore[arg-type]
        else:
            self._resolve()

    def _api(self, match: re.Match[str]) -> None:
        repo, kind, revision = match["repo"], match["kind"], unquote(match["revision"])
        commit = self._repo_commit(repo, revision)
        if commit is None:
            return
        hub = self.server.hub
        if kind == "revision":
            self._json(
                {
                    "_id": commit[:24],
                    "id": repo,
                    "modelId": repo,
                    "sha": commit,
                    "private": False,
                    "gated": "manual" if repo in hub.gated else False,
                    "disabled": False,
                    "siblings": [{"rfilename": f} for f in hub.files(repo)],
                }
            )
            return
        self._json(
            [
                {
                    "type": "file",
                    "path": f,
                    "size": (hub.root / repo / f).stat().st_size,
                    "oid": hashlib.sha1((hub.root / repo / f).read_bytes()).hexdigest(),
                }
                for f in hub.files(repo)
            ]
        )

    def _resolve(self) -> None:
        match = RESOLVE.match(urlsplit(self.path).path)
        if match is None:
            self._error(404, "EntryNotFound", "Not a Hub path")
            return
        repo, revision, name = match["repo"], unquote(match["revision"]), unquote(match["path"])
        commit = self._repo_commit(repo, revision)
        if commit is None:
            return
        hub = self.server.hub
        file = hub.root / repo / name
        if not file.is_file():
            self._error(404, "EntryNotFound", f"{name} does not exist on {revision}", commit)
            return
        data = file.read_bytes()
        start, end = 0, len(data)
        ranged = self.headers.get("Range")
        status = 200
        if ranged:
            first, _, last = ranged.removeprefix("bytes=").partition("-")
            start = int(first) if first else 0
            end = min(int(last) + 1, len(data)) if last else len(data)
            status = 206
        body = data[start:end]
        fault = ""
        if self.command == "HEAD":
            sent = 0
        elif not ranged and name in hub.cut_after:
            sent = hub.cut_after.pop(name)
            fault = "cut"
        elif not ranged and name in hub.stall_after:
            sent = hub.stall_after.pop(name)
            fault = "stall"
        else:
            sent = len(body)
        self._record(status, sent)
        self.send_response(status)
        self.send_header("X-Repo-Commit", commit)
        self.send_header("ETag", f'"{hashlib.sha256(data).hexdigest()}"')
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Length", str(end - start))
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end - 1}/{len(data)}")
        self.end_headers()
        if self.command == "HEAD":
            return
        self.wfile.write(body[:sent])
        self.wfile.flush()
        if fault == "cut":
            self.close_connection = True
            self.connection.shutdown(2)
        elif fault == "stall":
            hub.release.wait(timeout=60)
            self.close_connection = True


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, hub: HubStandIn) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.hub = hub


@contextmanager
def serve(hub: HubStandIn) -> Iterator[HubStandIn]:
    """Run the stand-in on a free port of 127.0.0.1 until the block ends."""
    server = _Server(hub)
    hub.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield hub
    finally:
        hub.release.set()
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
