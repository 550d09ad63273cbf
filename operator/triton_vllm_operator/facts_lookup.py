"""Model facts for the control loop: Hub lookups through `FactsCache`, run in a worker thread.

A failed lookup is held for the model until its retry (the work queue's backoff) is due, so the
events that reach the model in between (its pods, its children, nodes) do not query the Hub
again. Facts that were read are cached per repo and revision by `FactsCache`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from .hub import FactsCache
from .model_facts import ModelFacts, ModelFactsError
from .settings import Settings
from .sized_placement import FactsQuery

ModelKey = tuple[str, str]


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
    ) -> None:
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
            # The operator reads no Secrets: lookups are made without the model's token.
            facts = self._cache.facts(query.repo, query.revision, query.endpoint)
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
