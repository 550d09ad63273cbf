"""Leader election on a coordination.k8s.io Lease, as client-go's: one replica reconciles, the
others keep their caches warm and take over when the leader's lease runs out.

- A lease counts as expired when its holder has not renewed it for leaseDurationSeconds by this
  replica's own clock (the time it first saw the current record), so clocks need not agree.
- The leader tries to renew every retry period; one that has not renewed within the renew
  deadline (shorter than the lease) stops: `may_write` turns False at once, so no write leaves
  after the deadline, and `on_lost` ends the process (it restarts as a standby). A standby takes
  over only after the full lease duration, so the two never write at once.
- Every lease call has a timeout shorter than the renew deadline: a leader whose packets are
  dropped learns it within the deadline, not after the TCP timeout.
- On shutdown the leader hands the lease back (holder emptied), so a standby leads within one
  retry period instead of a lease duration.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import time
from collections.abc import Callable
from typing import Any

from kubernetes import client

from ..settings import Settings

log = logging.getLogger("triton_vllm_operator")


def _micro_now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


class LeaderElector:
    """Acquires, renews and releases the Lease; says whether this replica may write."""

    def __init__(self, api: client.ApiClient, settings: Settings) -> None:
        self.leases = client.CoordinationV1Api(api)
        self.settings = settings
        self.identity = settings.identity
        # When this replica last renewed successfully (monotonic: the request's start).
        self._renewed_at: float | None = None
        self._seen: tuple[Any, ...] | None = None
        self._seen_at = 0.0
        self._task: asyncio.Task[None] | None = None
        deadline = settings.lease_renew_deadline_seconds
        self._timeout = (min(2.0, deadline / 4), deadline / 2)

    @property
    def leading(self) -> bool:
        return self.may_write()

    def may_write(self) -> bool:
        """True while the lease was renewed within the renew deadline; thread-safe."""
        renewed = self._renewed_at
        deadline = self.settings.lease_renew_deadline_seconds
        return renewed is not None and time.monotonic() - renewed < deadline

    def start(self, on_started: Callable[[], None], on_lost: Callable[[], None]) -> None:
        self._task = asyncio.create_task(self._run(on_started, on_lost))

    async def _run(self, on_started: Callable[[], None], on_lost: Callable[[], None]) -> None:
        loop = asyncio.get_running_loop()
        retry = self.settings.lease_retry_seconds
        deadline = self.settings.lease_renew_deadline_seconds
        while True:
            attempt = time.monotonic()
            leading = self._renewed_at is not None
            # A leader waits for its renewal no longer than its deadline leaves it.
            left = (self._renewed_at + deadline - attempt) if self._renewed_at else None
            try:
                call = loop.run_in_executor(None, self.try_acquire_or_renew)
                mine = await asyncio.wait_for(call, timeout=left)
            except Exception as err:  # the API may be down: keep trying until the deadline
                log.warning("lease %s: %s", self.settings.lease_name, err or type(err).__name__)
                mine = False
            if mine:
                self._renewed_at = attempt
                if not leading:
                    log.info("leading as %s", self.identity)
                    on_started()
            elif leading and not self.may_write():
                self._renewed_at = None
                log.error(
                    "lost the lease %s: not renewed within %g s; stopping",
                    self.settings.lease_name,
                    deadline,
                )
                on_lost()
                return
            await asyncio.sleep(max(0.0, retry - (time.monotonic() - attempt)))

    async def stop(self) -> None:
        """Stop renewing; hand the lease back if this replica holds it."""
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self.may_write():
            self._renewed_at = None
            loop = asyncio.get_running_loop()
            try:
                await loop.run_in_executor(None, self.release)
                log.info("released the lease %s", self.settings.lease_name)
            except Exception as err:
                log.warning("lease %s not released: %s", self.settings.lease_name, err)

    def release(self) -> None:
        """Empty the holder, so a standby takes the lease at its next try."""
        name, namespace = self.settings.lease_name, self.settings.lease_namespace
        lease = self.leases.read_namespaced_lease(name, namespace, _request_timeout=self._timeout)
        spec = lease.spec or client.V1LeaseSpec()
        if spec.holder_identity != self.identity:
            return
        now = _micro_now()
        lease.spec = client.V1LeaseSpec(
            holder_identity=None,
            lease_duration_seconds=1,
            acquire_time=now,
            renew_time=now,
            lease_transitions=spec.lease_transitions,
        )
        self.leases.replace_namespaced_lease(name, namespace, lease, _request_timeout=self._timeout)

    def try_acquire_or_renew(self) -> bool:
        """One round: True while this replica holds the lease."""
        name, namespace = self.settings.lease_name, self.settings.lease_namespace
        duration = self.settings.lease_duration_seconds
        try:
            lease = self.leases.read_namespaced_lease(
                name, namespace, _request_timeout=self._timeout
            )
        except client.ApiException as err:
            if err.status != 404:
                raise
            body = client.V1Lease(
                metadata=client.V1ObjectMeta(name=name, namespace=namespace),
                spec=self._spec(duration, transitions=0, acquire=True),
            )
            try:
                self.leases.create_namespaced_lease(namespace, body, _request_timeout=self._timeout)
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
            self.leases.replace_namespaced_lease(
                name, namespace, lease, _request_timeout=self._timeout
            )
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
