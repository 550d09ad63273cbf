"""The control loop: a work queue of models, fed by watch events, drained by workers that run one
pure reconcile pass each and carry out its plan through the API.

No timers: a model is reconciled when it, one of its children or pods, or (while its placement
is not settled) a node changes; failed passes come back with backoff. A model to be placed afresh
has its facts looked up on the Hub first, in the worker thread; a failed lookup comes back with
the same backoff, and is not repeated for the events in between.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import datetime
import logging
from collections.abc import Mapping
from typing import Any

import urllib3
from kubernetes import client

from . import kube
from .facts_lookup import FactsLookup, Lookup
from .reconcile import (
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
from .render.manifests import MANAGED_BY
from .render.prefetch import PREFETCH_CONTAINER
from .settings import Settings
from .workqueue import WorkQueue
from .world import ModelKey, World

# The finalizer round 1 put on every model (for a timer); removed on sight, nothing needs it.
LEGACY_FINALIZER = "tritonvllm.io/finalizer"
WORKERS = 16

log = logging.getLogger("triton_vllm_operator")


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class Controller:
    """The world as watched, the queue of models to reconcile, and the workers."""

    def __init__(
        self, api: client.ApiClient, settings: Settings, facts: FactsLookup | None = None
    ) -> None:
        self.api = api
        self.settings = settings
        self.facts = facts or FactsLookup(
            settings, read_secret=lambda ns, name: kube.read_secret_data(api, ns, name)
        )
        self.world = World()
        self.queue: WorkQueue[ModelKey] = WorkQueue()
        self._pool = concurrent.futures.ThreadPoolExecutor(WORKERS, "reconcile")
        # Events are best effort and said in status too: posted off the reconcile's path.
        self._events = concurrent.futures.ThreadPoolExecutor(2, "events")
        self._workers: list[asyncio.Task[None]] = []
        # Children the API server refused, by (model, kind, name): the manifest's hash and why.
        # The same manifest is not sent again until the spec changes what it renders.
        self._refused: dict[tuple[ModelKey, str, str], tuple[str, str]] = {}
        self.leading = asyncio.Event()
        # Per model, from its last pass: when to look again while a download runs (else None).
        self._recheck: dict[ModelKey, float | None] = {}

    # --- watch events (event loop) --------------------------------------------------------

    def on_model(self, event_type: str | None, body: Mapping[str, Any]) -> None:
        key = (body["metadata"]["namespace"], body["metadata"]["name"])
        if event_type == "DELETED":
            self.world.drop_model(key)
            self.queue.drop(key)
            self.facts.forget(key)
            self._recheck.pop(key, None)
            self._refused = {k: v for k, v in self._refused.items() if k[0] != key}
            return
        self.world.set_model(body)
        self.queue.add(key)

    def on_child(self, event_type: str | None, body: Mapping[str, Any]) -> None:
        if event_type == "DELETED":
            owner = self.world.drop_child(body)
        else:
            owner = self.world.set_child(body)
        if owner:
            self.queue.add(owner)

    def on_pod(self, event_type: str | None, body: Mapping[str, Any]) -> None:
        owner = self.world.set_pod(body, deleted=event_type == "DELETED")
        if owner:
            self.queue.add(owner)

    def on_crd(self, event_type: str | None, body: Mapping[str, Any]) -> None:
        """KEDA installed or removed: autoscaled models switch between ScaledObject and HPA."""
        if (body.get("metadata") or {}).get("name") != KEDA_CRD:
            return
        served = event_type != "DELETED" and crd_established(body)
        if served != self.world.keda_served:
            log.info("KEDA's ScaledObject kind is %s", "served" if served else "not served")
            self.world.keda_served = served
            for key in self.world.autoscaled():
                self.queue.add(key)

    def on_node(self, event_type: str | None, body: Mapping[str, Any]) -> None:
        if self.world.set_node(body, deleted=event_type == "DELETED"):
            for key in self.world.waiting_for_nodes():
                self.queue.add(key)

    # --- start and stop -------------------------------------------------------------------

    async def sync(self) -> None:
        """List what the watches will keep current, so no pass decides on a half-filled world
        (a Deployment missing from it would lose the model's sticky placement)."""
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._pool, self._list_all)

    def _paths(self, group_path: str, plural: str) -> list[str]:
        if not self.settings.namespaces:
            return [f"{group_path}/{plural}"]
        return [f"{group_path}/namespaces/{ns}/{plural}" for ns in self.settings.namespaces]

    def _list_all(self) -> None:
        ours = OURS_SELECTOR
        # (list: the operator may list and watch CRDs, for kopf's discovery, but not get them)
        crds = kube.list_objects(self.api, CRD_PATH, field_selector=f"metadata.name={KEDA_CRD}")
        self.world.keda_served = any(crd_established(crd) for crd in crds)
        collections = list(CHILD_COLLECTIONS)
        if self.world.keda_served:
            collections.append(("/apis/keda.sh/v1alpha1", "scaledobjects"))
        for group_path, plural in collections:
            for path in self._paths(group_path, plural):
                for obj in kube.list_objects(self.api, path, label_selector=ours):
                    self.world.set_child(obj)
        for path in self._paths("/api/v1", "pods"):
            for obj in kube.list_objects(self.api, path, field_selector=ACTIVE_PODS):
                self.world.set_pod(obj)
        for obj in kube.list_objects(self.api, "/api/v1/nodes"):
            self.world.set_node(obj)

    def start(self) -> None:
        for _ in range(WORKERS):
            self._workers.append(asyncio.create_task(self._work()))

    async def stop(self) -> None:
        for task in self._workers:
            task.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._events.shutdown(wait=False, cancel_futures=True)

    # --- workers --------------------------------------------------------------------------

    async def _work(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self.leading.wait()
            key = await self.queue.get()
            try:
                body = self.world.model(key)
                if body is None:
                    continue
                observed = self.world.observe(key)
                ok, lookup = await loop.run_in_executor(
                    self._pool, self._reconcile, key, body, observed
                )
                looked_up_in_vain = lookup is not None and lookup.failed
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
            except Exception:  # a bug must not stop the worker; the key comes back
                log.exception("reconcile of %s/%s failed", *key)
                self.queue.retry(key)
            finally:
                self.queue.done(key)

    def _reconcile(
        self, key: ModelKey, body: dict[str, Any], observed: Observed
    ) -> tuple[bool, Lookup | None]:
        """One pass for one model, in a worker thread. False: retry later."""
        metadata = body["metadata"]
        finalizers = list(metadata.get("finalizers") or [])
        if LEGACY_FINALIZER in finalizers:
            kube.remove_finalizer(self.api, key[0], key[1], finalizers, LEGACY_FINALIZER)
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
            tail = kube.read_log_tail(self.api, key[0], pod, PREFETCH_CONTAINER)
        except (client.ApiException, urllib3.exceptions.HTTPError, OSError) as err:
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
                pods.extend(kube.list_objects(self.api, path, label_selector=selector))
        except (client.ApiException, urllib3.exceptions.HTTPError, OSError) as err:
            log.warning("pods of the prefetch Job of %s/%s not listed: %s", *key, err)
        return pods

    def _converge(self, key: ModelKey, body: dict[str, Any], observed: Observed) -> bool:
        """Plan the pass and carry it out; False: retry later."""
        now = _now()
        plan = plan_reconcile(body, observed, self.settings, now)
        self._recheck[key] = plan.recheck_after
        ok = True
        try:
            self._carry_out(key, body, plan, observed.children)
        except kube.ApplyRejected as err:
            plan = refused(body, plan, "RejectedByAPIServer", str(err), now)
        except kube.Conflict as err:
            plan = refused(body, plan, "NameConflict", str(err), now)
        except client.ApiException as err:
            plan = api_failure(body, plan, f"API error {err.status}: {err.reason}", now)
            ok = False
        except (urllib3.exceptions.HTTPError, OSError) as err:
            log.warning("API server unreachable for %s/%s: %s", *key, err)
            return False
        try:
            self._write_status(key, body, plan)
        except client.ApiException as err:
            log.warning("status of %s/%s not written: %s", *key, err)
            return False
        except (urllib3.exceptions.HTTPError, OSError):
            return False
        return ok

    def _carry_out(
        self,
        key: ModelKey,
        body: Mapping[str, Any],
        plan: Plan,
        live: Mapping[tuple[str, str], Any],
    ) -> None:
        uid = body["metadata"].get("uid", "")
        for manifest in plan.apply:
            kind, name = manifest["kind"], manifest["metadata"]["name"]
            rendered = manifest["metadata"]["annotations"][APPLIED_HASH_ANNOTATION]
            known = self._refused.get((key, kind, name))
            if known and known[0] == rendered:
                raise kube.ApplyRejected(known[1])
            if (kind, name) not in live and kind != "ConfigMap":
                # (A ConfigMap's name holds its content's digest: no one else's has it.)
                kube.check_not_foreign(self.api, manifest, uid)
            try:
                stored = kube.apply(self.api, manifest, self.settings.field_manager)
            except kube.ApplyRejected as err:
                self._refused[(key, kind, name)] = (rendered, str(err))
                raise
            self._refused.pop((key, kind, name), None)
            self.world.set_child({"kind": kind, **stored})
        for kind, name in plan.delete:
            kube.delete(self.api, kind, key[0], name)

    def _write_status(self, key: ModelKey, body: dict[str, Any], plan: Plan) -> None:
        if status_changed(body.get("status"), plan.status):
            stored = kube.patch_status(self.api, key[0], key[1], plan.status)
            if stored:
                self.world.set_model(stored)
        for type_, reason, message in plan.events:
            level = logging.WARNING if type_ == "Warning" else logging.INFO
            log.log(level, "%s/%s %s: %s", key[0], key[1], reason, message)
            self._events.submit(self._post_event, body, type_, reason, message)

    def _post_event(self, body: dict[str, Any], type_: str, reason: str, message: str) -> None:
        try:
            kube.post_event(self.api, body, type_, reason, message, self.settings.field_manager)
        except (client.ApiException, urllib3.exceptions.HTTPError, OSError) as err:
            log.warning("Event %s for %s not posted: %s", reason, body["metadata"]["name"], err)


CHILD_COLLECTIONS = (
    ("/api/v1", "configmaps"),
    ("/api/v1", "services"),
    ("/apis/apps/v1", "deployments"),
    ("/apis/policy/v1", "poddisruptionbudgets"),
    ("/apis/batch/v1", "jobs"),  # the prefetch Job
    ("/apis/autoscaling/v2", "horizontalpodautoscalers"),
)
CRD_PATH = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"
KEDA_CRD = "scaledobjects.keda.sh"


def crd_established(crd: Mapping[str, Any]) -> bool:
    """Whether a CustomResourceDefinition's kind is served (its Established condition)."""
    conditions = (crd.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Established" and c.get("status") == "True" for c in conditions)


OURS_SELECTOR = f"app.kubernetes.io/managed-by={MANAGED_BY}"
# Pods that hold resources: the field selector is applied by the API server.
ACTIVE_PODS = "status.phase!=Succeeded,status.phase!=Failed"
