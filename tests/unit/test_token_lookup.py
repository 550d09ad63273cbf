"""Lookups of gated repos with the model's own token, read from the Secret its spec names.

The Hub is the stand-in (tests/unit/hub_standin.py): its gated repo answers 401 without the token
and the facts with it. The Secrets are a dict behind the reader the operator passes in (the
operator's own reader is a GET of the Secret through the API; the cluster tests use that one).
"""

from __future__ import annotations

import base64
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

from tests.unit.builders import model_dict
from tests.unit.hub_standin import HubStandIn, serve
from tests.unit.test_hub import TOKEN, make_repo
from tests.unit.test_reconcile import NOW, conditions, empty, message
from triton_vllm_operator.facts_lookup import FactsLookup
from triton_vllm_operator.hub import FactsCache
from triton_vllm_operator.model_facts import ModelFacts, ModelFactsError
from triton_vllm_operator.placement import FactsQuery
from triton_vllm_operator.reconcile import needs_facts, plan_reconcile
from triton_vllm_operator.settings import Settings
from triton_vllm_operator.token_secret import SecretUnreadable, TokenRef, token_of

GATED = "acme/tiny-gated"
KEY = ("ml", "gated")


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


class Secrets:
    """Secrets by (namespace, name), as the API would answer a GET; counts the reads."""

    def __init__(self, secrets: dict[tuple[str, str], dict[str, str]], status: int = 404) -> None:
        self.secrets = secrets
        self.status = status  # the answer for a Secret not in the dict
        self.reads = 0

    def __call__(self, namespace: str, name: str) -> Mapping[str, str]:
        self.reads += 1
        if (namespace, name) not in self.secrets:
            raise SecretUnreadable(self.status, f"secrets {name!r} answered {self.status}")
        return self.secrets[(namespace, name)]


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[HubStandIn]:
    root = tmp_path / "hub"
    make_repo(root, GATED)
    with serve(HubStandIn(root, gated={GATED: {TOKEN}})) as running:
        yield running


def query(hub: HubStandIn, name: str = "hf", key: str = "token") -> FactsQuery:
    return FactsQuery(GATED, None, hub.url, token_secret=(name, key))


def lookup(tmp_path: Path, secrets: Secrets) -> FactsLookup:
    cache = FactsCache(cache_dir=tmp_path / "facts")
    return FactsLookup(Settings(), cache=cache, read_secret=secrets)


def test_the_spec_names_the_token_secret_for_the_lookup() -> None:
    body = model_dict(model=GATED, storage={"hfTokenSecret": {"name": "hf", "key": "token"}})
    found = needs_facts(body, empty(), Settings())
    assert found == FactsQuery(GATED, None, None, token_secret=("hf", "token"))


def test_a_gated_repo_is_read_with_the_token_from_the_models_secret(
    hub: HubStandIn, tmp_path: Path
) -> None:
    secrets = Secrets({("ml", "hf"): {"token": b64(TOKEN + "\n")}})
    found = lookup(tmp_path, secrets).lookup(KEY, query(hub)).found
    assert isinstance(found, ModelFacts), found
    assert found.attention_heads == 4
    sent = {r.authorization for r in hub.requests}
    assert f"Bearer {TOKEN}" in sent  # the trailing newline of `echo ... | kubectl` is dropped


def test_without_the_token_the_same_repo_answers_401(hub: HubStandIn, tmp_path: Path) -> None:
    found = lookup(tmp_path, Secrets({})).lookup(KEY, FactsQuery(GATED, None, hub.url)).found
    assert isinstance(found, ModelFactsError) and found.reason == "HubTokenRequired"
    assert {r.status for r in hub.requests} == {401}


def test_facts_are_cached_per_token_and_never_keep_the_token(
    hub: HubStandIn, tmp_path: Path
) -> None:
    secrets = Secrets({("ml", "hf"): {"token": b64(TOKEN)}})
    looker = lookup(tmp_path, secrets)
    assert isinstance(looker.lookup(KEY, query(hub)).found, ModelFacts)
    asked = len(hub.requests)
    assert isinstance(looker.lookup(("ml", "other"), query(hub)).found, ModelFacts)
    assert len(hub.requests) == asked  # the same repo, revision and token: from the cache
    assert secrets.reads == 2  # the Secret is read each time: a changed token is seen
    # A model without the token is not answered from the facts read with it.
    anonymous = looker.lookup(("ml", "anon"), FactsQuery(GATED, None, hub.url)).found
    assert isinstance(anonymous, ModelFactsError) and anonymous.reason == "HubTokenRequired"
    assert TOKEN not in repr(vars(looker)) and TOKEN not in repr(vars(looker._cache))


def ref() -> TokenRef:
    return TokenRef("ml", "hf", "token")


@pytest.mark.parametrize(
    ("secrets", "reason", "words"),
    [
        (
            Secrets({}, status=404),
            "TokenSecretNotFound",
            ["Secret hf in namespace ml", "does not exist", "key token"],
        ),
        (
            Secrets({}, status=403),
            "TokenSecretForbidden",
            ["may not read Secret hf in namespace ml", "operator.modelFacts.readTokenSecrets"],
        ),
        (
            Secrets({("ml", "hf"): {"HF_TOKEN": b64(TOKEN), "aws-secret-key": b64("x")}}),
            "TokenSecretKeyMissing",
            ["Secret hf in namespace ml has no key token", "kubectl describe secret"],
        ),
        (
            Secrets({("ml", "hf"): {"token": b64("  \n")}}),
            "TokenSecretInvalid",
            ["key token of Secret hf in namespace ml", "is empty"],
        ),
        (
            Secrets({}, status=500),
            "TokenSecretUnreadable",
            ["Secret hf in namespace ml", "could not be read", "retrying"],
        ),
    ],
    ids=["missing", "forbidden", "no-key", "empty", "api-error"],
)
def test_a_token_that_cannot_be_read_is_a_reason_that_says_what_to_change(
    secrets: Secrets, reason: str, words: list[str]
) -> None:
    with pytest.raises(ModelFactsError) as raised:
        token_of(ref(), secrets)
    assert raised.value.reason == reason
    for word in words:
        assert word in raised.value.message
    assert TOKEN not in raised.value.message
    # The Secret's other keys are not the model reader's business.
    assert "HF_TOKEN" not in raised.value.message and "aws-secret-key" not in raised.value.message


def test_a_missing_secret_is_reasoned_and_the_model_falls_back_to_its_size(
    hub: HubStandIn, tmp_path: Path
) -> None:
    found = lookup(tmp_path, Secrets({})).lookup(KEY, query(hub)).found
    assert isinstance(found, ModelFactsError) and found.reason == "TokenSecretNotFound"
    assert not hub.requests  # no token: the Hub is not asked
    body = model_dict(
        model=GATED, modelSizeGiB=1, storage={"hfTokenSecret": {"name": "hf", "key": "token"}}
    )
    result = plan_reconcile(body, empty(facts=found), Settings(), NOW)
    assert conditions(result.status)["Scheduled"] == ("True", "Placed")
    assert conditions(result.status)["ModelFacts"] == ("False", "TokenSecretNotFound")
    text = message(result.status, "ModelFacts")
    assert "Secret hf in namespace ml (spec.storage.hfTokenSecret) does not exist" in text
    assert "Placed by spec.modelSizeGiB (1 GiB) instead" in text
    assert ("Warning", "TokenSecretNotFound") in {(e[0], e[1]) for e in result.events}
