"""Leader election on a coordination.k8s.io Lease, as client-go's: one replica reconciles, the
others keep their watches warm and take over when the leader's lease runs out.

A lease counts as expired when its holder has not renewed it for leaseDurationSeconds by this
replica's own clock (the time it first saw the current record), so clocks need not agree.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import time
from typing import TYPE_CHECKING, Any

from kubernetes import client

from .settings import Settings

if TYPE_CHECKING:
    from .controller import Controller

log = logging.getLogger("triton_vllm_operator")


def _micro_now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


class LeaderElector:
    """Acquires and renews the Lease; sets and clears the controller's `leading` event."""

    def __init__(self, api: client.ApiClient, settings: Settings) -> None:
        self.leases = client.CoordinationV1Api(api)
        self.settings = settings
        self.identity = settings.identity
        self._seen: tuple[Any, ...] | None = None
        self._seen_at = 0.0
        self._task: asyncio.Task[None] | None = None

    def start(self, controller: Controller) -> None:
        self._task = asyncio.create_task(self._run(controller))

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self, controller: Controller) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                leading = await loop.run_in_executor(None, self.try_acquire_or_renew)
            except Exception as err:  # the API may be down: keep trying, lose the lease
                log.warning("lease %s: %s", self.settings.lease_name, err)
                leading = False
            if leading and not controller.leading.is_set():
                log.info("leading as %s: reconciling every model", self.identity)
                for key in list(controller.world.models):
                    controller.queue.add(key)
                controller.leading.set()
            elif not leading and controller.leading.is_set():
                log.warning("lost the lease %s: standing by", self.settings.lease_name)
                controller.leading.clear()
            await asyncio.sleep(self.settings.lease_renew_seconds)

    def try_acquire_or_renew(self) -> bool:
        """One round: True while this replica holds the lease."""
        name, namespace = self.settings.lease_name, self.settings.lease_namespace
        duration = self.settings.lease_duration_seconds
        try:
            lease = self.leases.read_namespaced_lease(name, namespace)
        except client.ApiException as err:
            if err.status != 404:
                raise
            body = client.V1Lease(
                metadata=client.V1ObjectMeta(name=name, namespace=namespace),
                spec=self._spec(duration, transitions=0, acquire=True),
            )
            try:
                self.leases.create_namespaced_lease(namespace, body)
            except client.ApiException as conflict:
                if conflict.status == 409:
                    return False  # another replica created it first
                raise
            return True
        spec = lease.spec or client.V1LeaseSpec()
        record = (spec.holder_identity, spec.renew_time, spec.lease_transitions)
        if record != self._seen:
            self._seen, self._seen_at = record, time.monotonic()
        mine = spec.holder_identity == self.identity
        expired = time.monotonic() - self._seen_at > (spec.lease_duration_seconds or duration)
        if not mine and spec.holder_identity and not expired:
            return False
        transitions = (spec.lease_transitions or 0) + (0 if mine else 1)
        lease.spec = self._spec(duration, transitions, acquire=not mine, previous=spec)
        try:
            self.leases.replace_namespaced_lease(name, namespace, lease)
        except client.ApiException as err:
            if err.status == 409:
                return False  # someone else renewed or took it in between
            raise
        return True

    def _spec(
        self,
        duration: int,
        transitions: int,
        acquire: bool,
        previous: client.V1LeaseSpec | None = None,
    ) -> client.V1LeaseSpec:
        now = _micro_now()
        acquired = now if acquire or previous is None else previous.acquire_time
        return client.V1LeaseSpec(
            holder_identity=self.identity,
            lease_duration_seconds=duration,
            acquire_time=acquired,
            renew_time=now,
            lease_transitions=transitions,
        )
