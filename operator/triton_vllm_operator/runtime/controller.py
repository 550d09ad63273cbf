"""The control loop: reflectors keep the World (the cache) true, a work queue of models is fed by
what changed in it, and workers run one pure reconcile pass each and carry out its plan through
the API, while this replica leads.

No per-model timers: a model is reconciled when it, one of its children or pods, or (while its
placement is not settled) what placement reads of the nodes changes; when a re-list finds
something gone; on the periodic resync; and failed passes come back with backoff. A model to be
placed afresh has its facts looked up on the Hub first, in the worker thread; a failed lookup
comes back with the same backoff, and is not repeated for the events in between.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import datetime
import logging
import threading
import time
from collections.abc import Iterable, Mapping
from typing import Any

from kubernetes import client

from ..children import same_render
from ..facts_lookup import FactsLookup, Lookup
from ..observed import Key
from ..reconcile import (
    APPLIED_HASH_ANNOTATION,
    Observed,
    Plan,
    api_failure,
    needs_facts,
    plan_reconcile,
    progress_pod,
    refused,
    status_changed,
)
from ..render.prefetch import PREFETCH_CONTAINER
from ..settings import Settings
from . import kinds, metrics
from .client import UNREACHABLE, AdmissionDenied, ApplyRejected, Client, Conflict, NotLeading
from .informer import Reflector
from .store import ModelKey, World
from .workqueue import WorkQueue

# The finalizer round 1 put on every model (for a timer); removed on sight, nothing needs it.
LEGACY_FINALIZER = "tritonvllm.io/finalizer"
WORKERS = 16
# Events about a model already reconciled wait this long, so that a burst of them is one pass.
COALESCE_SECONDS = 0.2

log = logging.getLogger("triton_vllm_operator")


def applied_hash_of(obj: Mapping[str, Any]) -> str:
    return str(((obj.get("metadata") or {}).get("annotations") or {}).get(APPLIED_HASH_ANNOTATION))


def _version(obj: Mapping[str, Any]) -> str:
    """Changes when anyone changes the object's spec, labels or annotations (not its status)."""
    metadata = obj.get("metadata") or {}
    return f"{metadata.get('generation')}:{_kept_form(obj)!r}"


def _kept_form(obj: Mapping[str, Any]) -> dict[str, Any]:
    """What of an object its writers decide: labels, annotations and everything but status."""
    metadata = obj.get("metadata") or {}
    kept = {k: v for k, v in obj.items() if k not in ("metadata", "status", "kind", "apiVersion")}
    return {"labels": metadata.get("labels"), "annotations": metadata.get("annotations"), **kept}


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class Controller:
    """The world as the reflectors keep it, the queue of models to reconcile, and the workers."""

    def __init__(self, api: Client, settings: Settings, facts: FactsLookup | None = None) -> None:
        self.api = api
        self.settings = settings
        self.facts = facts or FactsLookup(settings, read_secret=api.read_secret_data)
        self.world = World(kinds.CHILD_KINDS)
        self.queue: WorkQueue[ModelKey] = WorkQueue()
        self._pool = concurrent.futures.ThreadPoolExecutor(WORKERS, "reconcile")
        # Events are best effort and said in status too: posted off the reconcile's path.
        self._events = concurrent.futures.ThreadPoolExecutor(2, "events")
        self._workers: list[asyncio.Task[None]] = []
        self._resync: asyncio.Task[None] | None = None
        self._stop = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self.reflectors = self._reflectors()
        # Children the API server refused, by (model, kind, name): the manifest's hash and why.
        # The same manifest is not sent again until the spec changes what it renders.
        self._refused: dict[tuple[ModelKey, str, str], tuple[str, str]] = {}
        # Children whose live form differs from the render only by what the API server's
        # admission (a mutating webhook) made of it, as a dry-run apply showed, by (model, kind,
        # name): the render's hash and the live object's version it was shown for.
        self._server_made: dict[tuple[ModelKey, str, str], tuple[str, str]] = {}
        self.leading = asyncio.Event()
        # Per model, from its last pass: when to look again while a download runs (else None).
        self._recheck: dict[ModelKey, float | None] = {}

    # --- the reflectors (their threads) ---------------------------------------------------

    def _reflectors(self) -> list[Reflector]:
        namespaces = self.settings.namespaces
        sources: list[tuple[str, kinds.Collection]] = [
            ("models", kinds.MODELS),
            *((c.kind, c) for c in (*kinds.CHILDREN, kinds.SCALED_OBJECTS, kinds.INFERENCE_POOLS)),
            ("own-pods", kinds.OWN_PODS),
            ("bound-pods", kinds.BOUND_PODS),
            ("nodes", kinds.NODES),
            ("crds", kinds.CRDS),
            ("pool-crds", kinds.POOL_CRDS),
        ]
        reflectors = []
        for source, collection in sources:
            scopes: Iterable[str | None] = (
                namespaces if collection.namespaced and namespaces else [None]
            )
            for namespace in scopes:
                path = collection.collection_paths((namespace,) if namespace else ())[0]
                reflectors.append(
                    Reflector(
                        f"{source}/{namespace}" if namespace else source,
                        self.api,
                        path,
                        slim=self.world.slimmer(source),
                        replace=self._replacer(source, namespace),
                        deliver=self._deliverer(source),
                        label_selector=collection.label_selector,
                        field_selector=collection.field_selector,
                        relist_seconds=self.settings.relist_seconds,
                    )
                )
        return reflectors

    def _replacer(self, source: str, namespace: str | None) -> Any:
        def replace(slims: list[Any]) -> None:
            self._wake(self.world.replace(source, slims, namespace))
            self._crd_changed(source)

        return replace

    def _deliverer(self, source: str) -> Any:
        def deliver(event: str, obj: Mapping[str, Any]) -> None:
            keys = self.world.apply_event(source, event, obj)
            if keys:
                name = (obj.get("metadata") or {}).get("name")
                log.debug("%s %s %s woke %d model(s)", source, event, name, len(keys))
            self._wake(keys)
            self._crd_changed(source)

        return deliver

    def _crd_changed(self, source: str) -> None:
        """KEDA's or the InferencePool's CRD installed or removed: its objects are listed again
        (or found gone)."""
        kind = {"crds": kinds.SCALED_OBJECTS.kind, "pool-crds": kinds.INFERENCE_POOLS.kind}
        if source not in kind:
            return
        for reflector in self.reflectors:
            if reflector.name.startswith(kind[source]):
                reflector.relist()

    def _wake(self, keys: Iterable[ModelKey]) -> None:
        keys = list(keys)
        if keys and self._loop is not None:
            self._loop.call_soon_threadsafe(self._add_events, keys)

    def _add_events(self, keys: list[ModelKey]) -> None:
        for key in keys:
            self.queue.add_coalesced(key, COALESCE_SECONDS)

    def _add_all(self, keys: list[ModelKey]) -> None:
        for key in keys:
            self.queue.add(key)

    # --- start and stop -------------------------------------------------------------------

    async def sync(self) -> None:
        """Start the reflectors and wait for each one's first list, so no pass decides on a
        half-filled world (a Deployment missing from it would lose the model's placement)."""
        self._loop = asyncio.get_running_loop()
        for reflector in self.reflectors:
            reflector.start(self._stop)
        for reflector in self.reflectors:
            await self._loop.run_in_executor(None, reflector.synced.wait)

    def start(self) -> None:
        """Start the workers (they take keys only while leading) and the periodic resync."""
        for _ in range(WORKERS):
            self._workers.append(asyncio.create_task(self._work()))
        self._resync = asyncio.create_task(self._resync_every(self.settings.resync_seconds))

    def lead(self) -> None:
        log.info("reconciling every model")
        for key in self.world.model_keys():
            self.queue.add(key)
        self.leading.set()
        metrics.set_leading(True)

    async def stop_leading(self, grace: float = 5.0) -> None:
        """Take no more keys and wait (a bounded while) for the passes in flight; their writes
        are refused once the lease is not fresh."""
        self.leading.clear()
        metrics.set_leading(False)
        busy = [t for t in self._workers if not t.done()]
        for task in busy:
            task.cancel()
        await asyncio.wait(busy, timeout=grace) if busy else None
        self._pool.shutdown(wait=False, cancel_futures=True)

    async def stop(self) -> None:
        await self.stop_leading()
        if self._resync:
            self._resync.cancel()
        self._stop.set()
        self._events.shutdown(wait=False, cancel_futures=True)

    async def _resync_every(self, seconds: float) -> None:
        """Re-queue every cached model now and then, as an informer's resync: a pass that was
        lost (or a decision that depends on time) is made again."""
        while True:
            await asyncio.sleep(seconds)
            keys = self.world.model_keys()
            log.info("resync: %d models", len(keys))
            self._add_all(keys)

    # --- workers --------------------------------------------------------------------------

    async def _work(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self.leading.wait()
            key = await self.queue.get()
            gone = False
            try:
                if not self.leading.is_set():  # lost while waiting: leave it to the next leader
                    continue
                body = self.world.model(key)
                if body is None:
                    gone = True
                    continue
                observed = self.world.observe(key)
                log.debug("pass %s/%s", *key)
                started = time.monotonic()
                ok, lookup = await loop.run_in_executor(
                    self._pool, self._reconcile, key, body, observed
                )
                looked_up_in_vain = lookup is not None and lookup.failed
                metrics.RECONCILE_TIME.labels(metrics.CONTROLLER).observe(
                    time.monotonic() - started
                )
                result = "error" if not ok else "requeue" if looked_up_in_vain else "success"
                metrics.RECONCILE_TOTAL.labels(metrics.CONTROLLER, result).inc()
                if not ok or (looked_up_in_vain and lookup is not None and lookup.fresh):
                    delay = self.queue.retry(key)
                    if looked_up_in_vain:
                        self.facts.hold(key, delay)
                elif not looked_up_in_vain:
                    self.queue.forget(key)
                # else: the failure was held; the retry that will look it up again is due
                recheck = self._recheck.pop(key, None)
                if recheck is not None:  # a download runs: its progress is read again then
                    self.queue.add_after(key, recheck)
            except NotLeading:
                log.warning("pass of %s/%s stopped: not leading", *key)
            except Exception:  # a bug must not stop the worker; the key comes back
                log.exception("reconcile of %s/%s failed", *key)
                metrics.RECONCILE_TOTAL.labels(metrics.CONTROLLER, "error").inc()
                self.queue.retry(key)
            finally:
                self.queue.done(key)
                if gone:
                    self._forget(key)

    def models(self) -> list[dict[str, Any]]:
        """Every cached model (for the metrics of models by condition)."""
        return [m for key in self.world.model_keys() if (m := self.world.model(key)) is not None]

    def _forget(self, key: ModelKey) -> None:
        """The model is gone: drop what was kept about it."""
        self.queue.drop(key)
        self.facts.forget(key)
        self._recheck.pop(key, None)
        self._refused = {k: v for k, v in self._refused.items() if k[0] != key}

    def _reconcile(
        self, key: ModelKey, body: dict[str, Any], observed: Observed
    ) -> tuple[bool, Lookup | None]:
        """One pass for one model, in a worker thread. False: retry later."""
        metadata = body["metadata"]
        finalizers = list(metadata.get("finalizers") or [])
        if LEGACY_FINALIZER in finalizers:
            self.api.remove_finalizer(key[0], key[1], finalizers, LEGACY_FINALIZER)
        if metadata.get("deletionTimestamp"):
            return True, None  # going away with its children (ownerReferences)
        query = needs_facts(body, observed, self.settings)
        lookup = self.facts.lookup(key, query) if query else None
        if lookup is not None:
            observed = dataclasses.replace(observed, facts=lookup.found)
        pods = self._prefetch_pods(key, observed)
        if pods:
            observed = dataclasses.replace(observed, prefetch_pods=pods)
        downloading = progress_pod(body, observed, self.settings)
        if downloading:
            log_tail = self._log_tail(key, downloading)
            observed = dataclasses.replace(observed, prefetch_log=log_tail)
        return self._converge(key, body, observed), lookup

    def _log_tail(self, key: ModelKey, pod: str) -> str | None:
        """The last lines of the running prefetch pod's log: its latest progress report."""
        try:
            tail = self.api.read_log_tail(key[0], pod, PREFETCH_CONTAINER)
        except (client.ApiException, *UNREACHABLE) as err:
            log.warning("log of %s/%s not read: %s", key[0], pod, err)
            return None
        if tail is None:
            log.debug("log of %s/%s not given; Cached shows no progress", key[0], pod)
        return tail

    def _prefetch_pods(self, key: ModelKey, observed: Observed) -> list[dict[str, Any]]:
        """The pods of the model's prefetch Jobs that have ended attempts, ended ones too (the pod
        watch leaves those out): their termination messages say why one failed, or what the
        completed one downloaded (its size and commit)."""
        ended = [
            name
            for (kind, name), job in observed.children.items()
            if kind == "Job"
            and (
                (job.get("status") or {}).get("failed")
                or (job.get("status") or {}).get("succeeded")
            )
        ]
        pods: list[dict[str, Any]] = []
        path = f"/api/v1/namespaces/{key[0]}/pods"
        try:
            for name in ended:
                selector = f"batch.kubernetes.io/job-name={name}"
                pods.extend(self.api.list_objects(path, label_selector=selector))
        except (client.ApiException, *UNREACHABLE) as err:
            log.warning("pods of the prefetch Job of %s/%s not listed: %s", *key, err)
        return pods

    def _converge(self, key: ModelKey, body: dict[str, Any], observed: Observed) -> bool:
        """Plan the pass and carry it out; False: retry later."""
        now = _now()
        observed = dataclasses.replace(observed, server_made=self._known_server_made(key, observed))
        plan = plan_reconcile(body, observed, self.settings, now)
        ok = True
        try:
            if self._find_server_made(key, plan, observed):
                observed = dataclasses.replace(
                    observed, server_made=self._known_server_made(key, observed)
                )
                plan = plan_reconcile(body, observed, self.settings, now)
            self._recheck[key] = plan.recheck_after
            self._carry_out(key, body, plan, observed.children)
        except AdmissionDenied as err:
            # The cluster's policy, not the spec: said in status, and tried again with backoff.
            plan = refused(body, plan, "AdmissionDenied", str(err), now)
            ok = False
        except ApplyRejected as err:
            plan = refused(body, plan, "RejectedByAPIServer", str(err), now)
        except Conflict as err:
            plan = refused(body, plan, "NameConflict", str(err), now)
        except client.ApiException as err:
            plan = api_failure(body, plan, f"API error {err.status}: {err.reason}", now)
            ok = False
        except UNREACHABLE as err:
            log.warning("API server unreachable for %s/%s: %s", *key, err)
            return False
        try:
            self._write_status(key, body, plan)
        except client.ApiException as err:
            log.warning("status of %s/%s not written: %s", *key, err)
            return False
        except UNREACHABLE:
            return False
        return ok

    def _known_server_made(self, key: ModelKey, observed: Observed) -> frozenset[Key]:
        """The children still as the dry-run showed them (same render, same live version)."""
        known = set()
        for (model, kind, name), (rendered, version) in list(self._server_made.items()):
            live = observed.children.get((kind, name))
            if model != key:
                continue
            if live is not None and (applied_hash_of(live), _version(live)) == (rendered, version):
                known.add((kind, name))
            else:
                del self._server_made[(model, kind, name)]
        return frozenset(known)

    def _find_server_made(self, key: ModelKey, plan: Plan, observed: Observed) -> bool:
        """For each child the plan would re-apply only because the live object differs from the
        render that made it: would the API server store just what is live (its admission
        rewrites what we send)? A dry-run apply says; True when one was found."""
        found = False
        for manifest in plan.apply:
            kind, name = manifest["kind"], manifest["metadata"]["name"]
            live = observed.children.get((kind, name))
            if live is None or not same_render(manifest, live):
                continue
            dry = self.api.apply(manifest, self.settings.field_manager, dry_run=True)
            if _kept_form(dry) == _kept_form(live):
                log.debug("%s %s/%s: the API server's admission rewrites it", kind, key[0], name)
                self._server_made[(key, kind, name)] = (applied_hash_of(live), _version(live))
                found = True
        return found

    def _carry_out(
        self,
        key: ModelKey,
        body: Mapping[str, Any],
        plan: Plan,
        live: Mapping[tuple[str, str], Any],
    ) -> None:
        uid = body["metadata"].get("uid", "")
        if plan.initial_replicas is not None:
            log.debug("scale %s/%s to %d", key[0], key[1], plan.initial_replicas)
            self.api.set_replicas(
                key[0], key[1], plan.initial_replicas, self.settings.field_manager
            )
        for manifest in plan.apply:
            kind, name = manifest["kind"], manifest["metadata"]["name"]
            rendered = manifest["metadata"]["annotations"][APPLIED_HASH_ANNOTATION]
            known = self._refused.get((key, kind, name))
            if known and known[0] == rendered:
                raise ApplyRejected(known[1])
            if (kind, name) not in live and kind != "ConfigMap":
                # (A ConfigMap's name holds its content's digest: no one else's has it.)
                self.api.check_not_foreign(manifest, uid)
            log.debug("apply %s %s/%s", kind, key[0], name)
            try:
                stored = self.api.apply(manifest, self.settings.field_manager)
            except ApplyRejected as err:
                self._refused[(key, kind, name)] = (rendered, str(err))
                raise
            self._refused.pop((key, kind, name), None)
            self.world.set_child({"kind": kind, **stored})
        for kind, name in plan.delete:
            gone = live.get((kind, name)) or {}
            self.api.delete(kind, key[0], name, (gone.get("metadata") or {}).get("uid"))

    def _write_status(self, key: ModelKey, body: dict[str, Any], plan: Plan) -> None:
        if status_changed(body.get("status"), plan.status):
            stored = self.api.patch_status(key[0], key[1], plan.status)
            if stored:
                self.world.set_model(stored)
        for type_, reason, message in plan.events:
            level = logging.WARNING if type_ == "Warning" else logging.INFO
            log.log(level, "%s/%s %s: %s", key[0], key[1], reason, message)
            self._events.submit(self._post_event, body, type_, reason, message)

    def _post_event(self, body: dict[str, Any], type_: str, reason: str, message: str) -> None:
        try:
            self.api.post_event(body, type_, reason, message, self.settings.field_manager)
        except (client.ApiException, NotLeading, *UNREACHABLE) as err:
            log.warning("Event %s for %s not posted: %s", reason, body["metadata"]["name"], err)
