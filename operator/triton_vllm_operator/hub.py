"""The Hub client: a model's facts read with huggingface_hub from the Hub or a mirror.

Reads config.json and the safetensors index (or, for a single-file checkpoint, only the header
of model.safetensors, by a range request), never the weights. Every failure becomes a
`ModelFactsError` whose reason and message a condition can carry; nothing else escapes.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import httpx2
from huggingface_hub import HfApi, get_session, hf_hub_download, hf_hub_url
from huggingface_hub.errors import (
    GatedRepoError,
    HfHubHTTPError,
    LocalEntryNotFoundError,
    OfflineModeIsEnabled,
    RemoteEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
    SafetensorsParsingError,
)

from .model_facts import (
    CONFIG_FILE,
    INDEX_FILE,
    SAFETENSORS_DTYPE_BYTES,
    SINGLE_FILE,
    ModelFacts,
    ModelFactsError,
    Weights,
    parse_config,
    weights_from_index,
    with_weights,
)

DEFAULT_REVISION = "main"
DEFAULT_TIMEOUT_SECONDS = 10.0
# Facts read at a branch or tag are looked up again after this long; at a commit, never.
BRANCH_TTL_SECONDS = 3600.0


class NeedsToken(ModelFactsError):
    """The repo is gated or private and no token was given."""

    def __init__(self, message: str) -> None:
        super().__init__("HubTokenRequired", message)


class AccessDenied(ModelFactsError):
    """A token was given, and the Hub refused it for this repo."""

    def __init__(self, message: str) -> None:
        super().__init__("HubAccessDenied", message)


class ModelNotFound(ModelFactsError):
    """No such repo, revision, or config.json in it."""

    def __init__(self, message: str, reason: str = "ModelNotFound") -> None:
        super().__init__(reason, message)


class HubUnreachable(ModelFactsError):
    """The Hub did not answer (network, timeout, 5xx, rate limit): worth retrying."""

    def __init__(self, message: str) -> None:
        super().__init__("HubUnreachable", message, retryable=True)


def _where(endpoint: str | None) -> str:
    return endpoint or "the Hub"


def _status(error: HfHubHTTPError) -> int | None:
    response = getattr(error, "response", None)
    return getattr(response, "status_code", None)


@contextmanager
def _hub_errors(
    repo: str, revision: str, endpoint: str | None, token: str | None
) -> Iterator[None]:
    """Turn what huggingface_hub and its HTTP client raise into reasoned errors."""
    where = _where(endpoint)
    try:
        yield
    except GatedRepoError as err:
        if token:
            raise AccessDenied(
                f"{repo} is gated at {where} and the token in spec.storage.hfTokenSecret may not "
                "read it: accept the model's license on the Hub with that account, or use a "
                "token that has access."
            ) from err
        raise NeedsToken(
            f"{repo} is gated at {where}: set spec.storage.hfTokenSecret to a Secret holding a "
            "token whose account accepted the model's license."
        ) from err
    except RevisionNotFoundError as err:
        raise ModelNotFound(f"{repo} has no revision {revision} at {where}.") from err
    except RepositoryNotFoundError as err:
        if token:
            raise ModelNotFound(
                f"{repo} was not found at {where}, or the token in spec.storage.hfTokenSecret "
                "may not read it: check spec.model."
            ) from err
        raise ModelNotFound(
            f"{repo} was not found at {where}: check spec.model (a private repo also needs "
            "spec.storage.hfTokenSecret)."
        ) from err
    except RemoteEntryNotFoundError as err:
        raise ModelNotFound(
            f"{repo}@{revision} has no {CONFIG_FILE} at {where}: spec.model must be a "
            "Transformers model repo.",
            reason="ModelConfigMissing",
        ) from err
    except SafetensorsParsingError as err:
        raise ModelFactsError(
            "WeightsUnreadable", f"{repo}@{revision}: {SINGLE_FILE} has no readable header."
        ) from err
    except HfHubHTTPError as err:
        status = _status(err)
        if status in (401, 403):
            raise AccessDenied(
                f"{where} refused {repo} ({status}): check the token in spec.storage.hfTokenSecret."
            ) from err
        raise HubUnreachable(f"{where} answered {status} for {repo}; retrying.") from err
    except (LocalEntryNotFoundError, OfflineModeIsEnabled, httpx2.TransportError) as err:
        raise HubUnreachable(
            f"{where} could not be reached for {repo} ({type(err).__name__}); retrying. Where "
            "the cluster has no route to the Hub, set spec.storage.endpoint to a mirror."
        ) from err
    except httpx2.HTTPError as err:
        raise HubUnreachable(
            f"{where} gave no usable answer for {repo} ({err}); retrying."
        ) from err
    except OSError as err:  # the local cache: full, read-only, not a directory
        raise ModelFactsError(
            "ModelCacheUnusable",
            f"The operator could not keep {repo}'s files in its cache ({err}).",
            retryable=True,
        ) from err
    except ValueError as err:  # config.json or the index is not JSON
        raise ModelFactsError(
            "ModelConfigInvalid", f"{repo}@{revision}: a model file is not JSON ({err})."
        ) from err


def _load(path: str) -> object:
    return json.loads(Path(path).read_text(encoding="utf-8"))


@dataclass(frozen=True)
class _Repo:
    """Where and how to read one repo's files."""

    repo: str
    endpoint: str | None
    token: str | None
    cache_dir: str | Path | None
    timeout: float

    def download(self, filename: str, revision: str) -> str:
        return hf_hub_download(
            self.repo,
            filename,
            revision=revision,
            endpoint=self.endpoint,
            token=self.token or False,
            cache_dir=self.cache_dir,
            etag_timeout=self.timeout,
        )

    def api(self) -> HfApi:
        return HfApi(endpoint=self.endpoint, token=self.token or False)

    def probe(self, revision: str) -> None:
        """One request, without huggingface_hub's retries (about 25 s of backoff when the Hub is
        down): any answer means reachable; no answer raises httpx2's TransportError."""
        url = hf_hub_url(self.repo, CONFIG_FILE, revision=revision, endpoint=self.endpoint)
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        get_session().head(url, headers=headers, timeout=self.timeout, follow_redirects=False)


def _weights(source: _Repo, commit: str, dtype: str | None) -> Weights | None:
    """From the index when the checkpoint is sharded, else from model.safetensors' header."""
    try:
        index = _load(source.download(INDEX_FILE, commit))
    except RemoteEntryNotFoundError:
        pass
    else:
        return weights_from_index(index, dtype) if isinstance(index, dict) else None
    try:
        header = source.api().parse_safetensors_file_metadata(
            source.repo, SINGLE_FILE, revision=commit, timeout=source.timeout
        )
    except RemoteEntryNotFoundError:
        return None  # not a safetensors checkpoint: spec.modelSizeGiB must say
    total = 0
    parameters = 0
    for tensor in header.tensors.values():
        parameters += tensor.parameter_count
        start, end = tensor.data_offsets
        width = SAFETENSORS_DTYPE_BYTES.get(tensor.dtype, 2)
        total += end - start if end > start else int(tensor.parameter_count * width)
    return Weights(total, parameters)


def fetch_facts(
    repo: str,
    revision: str | None = None,
    endpoint: str | None = None,
    token: str | None = None,
    *,
    cache_dir: str | Path | None = None,
    timeout: float = DEFAULT_TIMEOUT_SECONDS,
) -> ModelFacts:
    """The facts of `repo` at `revision` from `endpoint` (default: the Hub, or HF_ENDPOINT).

    `token` is the model's own token; without one, no token is sent (not even one the operator
    process may have in its environment). Files land in `cache_dir` (huggingface_hub's cache
    layout); a file already there is used when the Hub cannot be reached.
    """
    wanted = revision or DEFAULT_REVISION
    source = _Repo(repo, endpoint, token, cache_dir, timeout)
    with _hub_errors(repo, wanted, endpoint, token):
        source.probe(wanted)
        config_path = source.download(CONFIG_FILE, wanted)
        commit = Path(config_path).parent.name
        config = _load(config_path)
        if not isinstance(config, dict):
            raise ModelFactsError("ModelConfigInvalid", f"{repo}: {CONFIG_FILE} is not an object.")
        facts = replace(parse_config(config, f"{repo}@{wanted}"), commit=commit)
        return with_weights(facts, _weights(source, commit, facts.dtype))


@dataclass
class _Entry:
    facts: ModelFacts
    expires: float | None


def _is_commit(revision: str) -> bool:
    return len(revision) == 40 and all(c in "0123456789abcdef" for c in revision)


class FactsCache:
    """Facts per (endpoint, repo, revision, token), so a model is looked up once, not per pass.

    Failures are not kept: the next lookup tries again. A token is keyed by its HMAC under a key
    made at start-up and never kept, so the cache holds nothing a token could be checked against.
    """

    def __init__(
        self,
        *,
        cache_dir: str | Path | None = None,
        timeout: float = DEFAULT_TIMEOUT_SECONDS,
        branch_ttl_seconds: float = BRANCH_TTL_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._cache_dir = cache_dir
        self._timeout = timeout
        self._ttl = branch_ttl_seconds
        self._clock = clock
        self._entries: dict[tuple[str, str, str, str], _Entry] = {}
        self._salt = secrets.token_bytes(32)

    def facts(
        self,
        repo: str,
        revision: str | None = None,
        endpoint: str | None = None,
        token: str | None = None,
    ) -> ModelFacts:
        """Cached facts, fetched on the first lookup or once a branch's entry expired."""
        wanted = revision or DEFAULT_REVISION
        fingerprint = (
            hmac.new(self._salt, token.encode(), hashlib.sha256).hexdigest() if token else ""
        )
        key = (endpoint or "", repo, wanted, fingerprint)
        now = self._clock()
        entry = self._entries.get(key)
        if entry is not None and (entry.expires is None or now < entry.expires):
            return entry.facts
        facts = fetch_facts(
            repo, wanted, endpoint, token, cache_dir=self._cache_dir, timeout=self._timeout
        )
        expires = None if _is_commit(wanted) else now + self._ttl
        self._entries[key] = _Entry(facts, expires)
        return facts
