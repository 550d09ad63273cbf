"""Model facts for the control loop: Hub lookups through `FactsCache`, run in a worker thread.

A model whose spec names a token Secret is looked up with that token, read from the Secret at
each lookup (one GET; the operator may not list or watch Secrets), so a rotated token is used
from the next lookup on; without the Secret or the right to read it, the lookup fails with a
reason (token_secret.py) and the Hub is not asked.

A failed lookup is held for the model until its retry (the work queue's backoff) is due, so the
events that reach the model in between (its pods, its children, nodes) do not query the Hub
again. Facts that were read are cached per repo, revision and token by `FactsCache`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from .hub import FactsCache
from .model_facts import ModelFacts, ModelFactsError
from .placement import FactsQuery
from .settings import Settings
from .token_secret import ReadSecret, SecretUnreadable, TokenRef, token_of

ModelKey = tuple[str, str]


def _no_secrets(namespace: str, name: str) -> dict[str, str]:
    raise SecretUnreadable(None, "no Secret reader was given")


@dataclass(frozen=True)
class Lookup:
    """The outcome of one model's lookup; `fresh`: the Hub was asked in this pass."""

    found: ModelFacts | ModelFactsError
    fresh: bool

    @property
    def failed(self) -> bool:
        return isinstance(self.found, ModelFactsError)


@dataclass
class _Held:
    query: FactsQuery
    error: ModelFactsError
    until: float  # held until then; hold() sets it when the model's retry is due


class FactsLookup:
    """Looks facts up, keeping each model's last failure until its retry is due."""

    def __init__(
        self,
        settings: Settings,
        cache: FactsCache | None = None,
        clock: Callable[[], float] = time.monotonic,
        read_secret: ReadSecret | None = None,
    ) -> None:
        self._read_secret = read_secret or _no_secrets
        self._cache = cache or FactsCache(
            cache_dir=settings.facts_cache_dir, timeout=settings.facts_timeout_seconds
        )
        self._clock = clock
        self._held: dict[ModelKey, _Held] = {}
        self._lock = threading.Lock()

    def lookup(self, key: ModelKey, query: FactsQuery) -> Lookup:
        """The model's facts, or the held failure while its retry is not yet due."""
        with self._lock:
            held = self._held.get(key)
            if held and held.query == query and self._clock() < held.until:
                return Lookup(held.error, fresh=False)
        try:
            token = None
            if query.token_secret:
                ref = TokenRef(key[0], *query.token_secret)
                token = token_of(ref, self._read_secret)
            facts = self._cache.facts(query.repo, query.revision, query.endpoint, token)
        except ModelFactsError as err:
            with self._lock:
                self._held[key] = _Held(query, err, self._clock())
            return Lookup(err, fresh=True)
        with self._lock:
            self._held.pop(key, None)
        return Lookup(facts, fresh=True)

    def hold(self, key: ModelKey, seconds: float) -> None:
        """Keep the model's last failure for `seconds`: its retry comes then."""
        with self._lock:
            held = self._held.get(key)
            if held:
                held.until = self._clock() + seconds

    def forget(self, key: ModelKey) -> None:
        """The model is gone."""
        with self._lock:
            self._held.pop(key, None)
