"""The model's Hub token for its facts lookup, from the Secret spec.storage.hfTokenSecret names.

Pure: the caller passes how to read a Secret's data (in the operator, one GET of the Secret in
the model's namespace). Every way the token can be missing becomes a `ModelFactsError` whose
message names the Secret, the key and what to change; the token never goes into a message.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from .model_facts import ModelFactsError

# The chart value that grants the operator `get` on Secrets (docs/security.md).
CHART_VALUE = "operator.modelFacts.readTokenSecrets"


@dataclass(frozen=True)
class TokenRef:
    """Where a model's token is: a key of a Secret in the model's own namespace."""

    namespace: str
    name: str
    key: str


class SecretUnreadable(Exception):
    """The API did not give the Secret: `status` is its HTTP status (None: no answer)."""

    def __init__(self, status: int | None, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


# (namespace, name) -> the Secret's `data` (base64 values); raises SecretUnreadable.
ReadSecret = Callable[[str, str], Mapping[str, str]]


def token_of(ref: TokenRef, read: ReadSecret) -> str:
    """The token under `ref.key`, or a reasoned ModelFactsError."""
    secret = f"Secret {ref.name} in namespace {ref.namespace}"
    where = f"{secret} (spec.storage.hfTokenSecret)"
    try:
        data = read(ref.namespace, ref.name)
    except SecretUnreadable as err:
        if err.status == 404:
            raise ModelFactsError(
                "TokenSecretNotFound",
                f"{where} does not exist: create it with the Hub token under key {ref.key}, or "
                "point spec.storage.hfTokenSecret at the right one (the serving pods need it "
                "too).",
            ) from err
        if err.status in (401, 403):
            raise ModelFactsError(
                "TokenSecretForbidden",
                f"The operator may not read {where}: grant its ServiceAccount get on secrets "
                f"(the chart's {CHART_VALUE}, on by default), or set spec.modelSizeGiB.",
            ) from err
        raise ModelFactsError(
            "TokenSecretUnreadable",
            f"{where} could not be read ({err.detail}); retrying.",
            retryable=True,
        ) from err
    raw = data.get(ref.key)
    if raw is None:
        # The Secret's other keys are not named: status and Events are read by whoever may read
        # the model, who need not be allowed to read the Secret.
        raise ModelFactsError(
            "TokenSecretKeyMissing",
            f"{secret} has no key {ref.key}: set spec.storage.hfTokenSecret.key to the key that "
            "holds the token (kubectl describe secret lists its keys).",
        )
    try:
        token = base64.b64decode(raw, validate=True).decode("utf-8").strip()
    except (binascii.Error, UnicodeDecodeError) as err:
        raise ModelFactsError(
            "TokenSecretInvalid", f"The key {ref.key} of {where} is not a UTF-8 token."
        ) from err
    if not token:
        raise ModelFactsError("TokenSecretInvalid", f"The key {ref.key} of {where} is empty.")
    return token
