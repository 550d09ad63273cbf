"""List-then-watch of one collection, with client-go's reflector guarantees, feeding the World.

Why not kopf's watch: kopf resumes a broken stream from the last resourceVersion, and on `410
Gone` lists again and yields every live object; but it yields nothing for the objects that
vanished while no watch was open, and its `on.event` handlers never learn that a re-list
happened. A cache fed by kopf's events therefore keeps deleted objects for ever (a Deployment
deleted during a partition is never re-created, and its model stays Ready). This reflector lists
page by page, replaces the collection's cache with each list (what it lacks is removed, and the
models it concerned are woken), watches from the list's resourceVersion with bookmarks, lists
again on `410 Gone` or any error event, and lists again every `relist_seconds` (jittered) to
repair anything a watch missed. A stream that stalls longer than its read timeout is dropped and
resumed. Each reflector is one thread: the kubernetes client is synchronous.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from kubernetes import client

from .client import UNREACHABLE, Client

log = logging.getLogger("triton_vllm_operator")

Slim = Callable[[Mapping[str, Any]], Any]
Replace = Callable[[list[Any]], None]
Deliver = Callable[[str, Mapping[str, Any]], None]
# Watch streams end on the server after this long (client-go: 5 to 10 minutes, at random).
WATCH_SECONDS = (300, 600)
BACKOFF = (0.5, 1, 2, 4, 5)


class Gone(Exception):
    """The watch's resourceVersion is too old (410), or the stream sent an error: list again."""


class Reflector:
    """Keeps one collection path's objects in the World, for as long as `stop` is not set."""

    def __init__(
        self,
        name: str,
        api: Client,
        path: str,
        slim: Slim,
        replace: Replace,
        deliver: Deliver,
        label_selector: str = "",
        field_selector: str = "",
        relist_seconds: float = 1800.0,
        read_timeout: float = 90.0,
        page_size: int = 500,
    ) -> None:
        self.name = name
        self.api = api
        self.path = path
        self.slim = slim
        self.replace = replace
        self.deliver = deliver
        self.label_selector = label_selector
        self.field_selector = field_selector
        self.relist_seconds = relist_seconds
        self.read_timeout = read_timeout
        self.page_size = page_size
        self.synced = threading.Event()
        self.lists = 0  # how many lists this reflector made (a test and the bench read it)
        self._relist_now = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, stop: threading.Event) -> None:
        self._thread = threading.Thread(
            target=self.run, args=(stop,), name=f"reflector-{self.name}", daemon=True
        )
        self._thread.start()

    def relist(self) -> None:
        """List again at once (e.g. a CRD just became served)."""
        self._relist_now.set()

    def run(self, stop: threading.Event) -> None:
        failures = 0
        version: str | None = None
        listed_at = 0.0
        relist_after = self._jittered()
        while not stop.is_set():
            try:
                due = time.monotonic() - listed_at > relist_after or self._relist_now.is_set()
                if version is None or due:
                    self._relist_now.clear()
                    version = self._list()
                    listed_at, relist_after = time.monotonic(), self._jittered()
                    self.synced.set()
                left = max(1.0, relist_after - (time.monotonic() - listed_at))
                version = self._watch(version, left, stop)
                failures = 0
            except Gone:
                version = None
            except client.ApiException as err:
                if err.status == 410:
                    version = None
                elif err.status == 404:
                    # A kind not served (yet): the cache holds none; look again after a while.
                    self.replace([])
                    self.synced.set()
                    self._relist_now.wait(timeout=30)
                    version = None
                else:  # any other refusal: list afresh after the backoff
                    why = f"API error {err.status}: {err.reason}"
                    failures = self._backoff(stop, failures, why)
                    version = None
            except UNREACHABLE as err:
                failures = self._backoff(stop, failures, f"{type(err).__name__}: {err}")
            except Exception:  # a bug must not end the cache's upkeep
                log.exception("reflector %s failed", self.name)
                failures = self._backoff(stop, failures, "unexpected error")
                version = None

    def _jittered(self) -> float:
        return self.relist_seconds * random.uniform(0.9, 1.1)

    def _backoff(self, stop: threading.Event, failures: int, why: str) -> int:
        delay = BACKOFF[min(failures, len(BACKOFF) - 1)]
        if failures == 0:
            log.warning("watch of %s broke (%s); resuming", self.name, why)
        stop.wait(delay)
        return failures + 1

    def _list(self) -> str:
        """List page by page and replace the cache; returns the list's resourceVersion. Each page
        is slimmed as it comes, so a list of 10,000 pods never holds them all whole."""
        items: list[Any] = []
        version = ""
        for page in self.api.list_pages(
            self.path, self.label_selector, self.field_selector, self.page_size
        ):
            version = version or (page.get("metadata") or {}).get("resourceVersion", "")
            # List items carry neither kind nor apiVersion; watch events and the objects we
            # render do, and the drift check compares them.
            kind = page.get("kind", "List").removesuffix("List")
            api_version = page.get("apiVersion", "v1")
            for item in page.get("items") or []:
                slim = self.slim({"kind": kind, "apiVersion": api_version, **item})
                if slim is not None:
                    items.append(slim)
        self.replace(items)
        self.lists += 1
        return version

    def _watch(self, version: str, seconds: float, stop: threading.Event) -> str:
        """Watch from `version` until the server ends the stream; returns the last version."""
        timeout = int(min(seconds, random.uniform(*WATCH_SECONDS)))
        query = [
            ("watch", "true"),
            ("resourceVersion", version),
            ("allowWatchBookmarks", "true"),
            ("timeoutSeconds", str(timeout)),
        ]
        if self.label_selector:
            query.append(("labelSelector", self.label_selector))
        if self.field_selector:
            query.append(("fieldSelector", self.field_selector))
        # The server ends the stream after `timeout`; bookmarks come about once a minute, so a
        # read that waits longer than read_timeout means a dead connection.
        for event in self.api.stream(self.path, query, self.read_timeout):
            if stop.is_set() or self._relist_now.is_set():
                break
            kind, obj = event.get("type"), event.get("object") or {}
            if kind == "ERROR":
                raise Gone(f"{obj.get('code')}: {obj.get('message')}")
            version = (obj.get("metadata") or {}).get("resourceVersion") or version
            if kind in ("ADDED", "MODIFIED", "DELETED"):
                self.deliver(kind, obj)
        return version
