"""Model facts read through huggingface_hub from a local Hub stand-in serving generated repos."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.unit.hub_standin import HubStandIn, serve
from tests.unit.safetensors_files import write_safetensors
from triton_vllm_operator.hub import (
    AccessDenied,
    FactsCache,
    HubUnreachable,
    ModelNotFound,
    NeedsToken,
    fetch_facts,
)
from triton_vllm_operator.model_facts import ModelFactsError, status_of

TOKEN = "hf_test_token_of_the_gated_repo"
TINY_CONFIG = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 2048,
    "vocab_size": 512,
    "torch_dtype": "bfloat16",
}


def tiny_tensors(layers: int = 2) -> dict[str, tuple[str, tuple[int, ...]]]:
    tensors: dict[str, tuple[str, tuple[int, ...]]] = {
        "model.embed_tokens.weight": ("BF16", (512, 64))
    }
    for i in range(layers):
        tensors |= {
            f"model.layers.{i}.self_attn.q_proj.weight": ("BF16", (64, 64)),
            f"model.layers.{i}.self_attn.k_proj.weight": ("BF16", (32, 64)),
            f"model.layers.{i}.self_attn.v_proj.weight": ("BF16", (32, 64)),
            f"model.layers.{i}.self_attn.o_proj.weight": ("BF16", (64, 64)),
            f"model.layers.{i}.mlp.gate_proj.weight": ("BF16", (128, 64)),
            f"model.layers.{i}.mlp.up_proj.weight": ("BF16", (128, 64)),
            f"model.layers.{i}.mlp.down_proj.weight": ("BF16", (64, 128)),
        }
    return tensors


TINY_PARAMETERS = 512 * 64 + 2 * (64 * 64 * 2 + 32 * 64 * 2 + 128 * 64 * 3)


def make_repo(root: Path, repo: str, *, sharded: bool = False, config: bool = True) -> Path:
    """A tiny Llama-shaped model repo: config.json and real safetensors weights (zeros)."""
    path = root / repo
    path.mkdir(parents=True)
    if config:
        (path / "config.json").write_text(json.dumps(TINY_CONFIG))
    tensors = tiny_tensors()
    if not sharded:
        write_safetensors(path / "model.safetensors", tensors)
        return path
    names = list(tensors)
    half = len(names) // 2
    shards = {
        "model-00001-of-00002.safetensors": {n: tensors[n] for n in names[:half]},
        "model-00002-of-00002.safetensors": {n: tensors[n] for n in names[half:]},
    }
    weight_map = {}
    for shard, part in shards.items():
        write_safetensors(path / shard, part)
        weight_map |= dict.fromkeys(part, shard)
    index = {"metadata": {"total_size": TINY_PARAMETERS * 2}, "weight_map": weight_map}
    (path / "model.safetensors.index.json").write_text(json.dumps(index))
    return path


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[HubStandIn]:
    root = tmp_path / "hub"
    make_repo(root, "acme/tiny-llama")
    make_repo(root, "acme/tiny-sharded", sharded=True)
    make_repo(root, "acme/tiny-gated")
    make_repo(root, "acme/no-config", config=False)
    with serve(HubStandIn(root, gated={"acme/tiny-gated": {TOKEN}})) as running:
        yield running


def test_single_file_model_is_sized_from_its_header_without_downloading_weights(
    hub: HubStandIn, tmp_path: Path
) -> None:
    facts = fetch_facts("acme/tiny-llama", endpoint=hub.url, cache_dir=tmp_path / "cache")
    assert facts.source == "acme/tiny-llama@main"
    assert facts.commit == hub.commit("acme/tiny-llama")
    assert (facts.layers, facts.attention_heads, facts.kv_heads, facts.head_dim) == (2, 4, 2, 16)
    assert (facts.parameters, facts.weights_bytes) == (TINY_PARAMETERS, TINY_PARAMETERS * 2)
    assert facts.max_context == 2048
    assert status_of(facts).model_dump(by_alias=True, exclude_none=True) == {
        "source": "acme/tiny-llama@main",
        "commit": hub.commit("acme/tiny-llama"),
        "architecture": "LlamaForCausalLM",
        "parameters": TINY_PARAMETERS,
        "dtype": "bfloat16",
        "weightsGiB": 0.0,
        "kvBytesPerToken": 2 * 2 * 2 * 16 * 2,
        "maxContext": 2048,
        "attentionHeads": 4,
        "kvHeads": 2,
    }
    weights = [r for r in hub.requests if r.path.endswith("/model.safetensors")]
    assert weights and all(r.range == "bytes=0-100000" for r in weights)  # the header only


def test_sharded_model_is_sized_from_its_index_and_no_shard_is_fetched(
    hub: HubStandIn, tmp_path: Path
) -> None:
    facts = fetch_facts("acme/tiny-sharded", endpoint=hub.url, cache_dir=tmp_path / "cache")
    assert facts.weights_bytes == TINY_PARAMETERS * 2
    assert facts.parameters == TINY_PARAMETERS
    assert not [p for p in hub.paths() if "-of-" in p]


def test_hf_endpoint_points_huggingface_hub_at_a_mirror(hub: HubStandIn, tmp_path: Path) -> None:
    script = (
        "from triton_vllm_operator.hub import fetch_facts\n"
        f"facts = fetch_facts('acme/tiny-llama', cache_dir={str(tmp_path / 'cache')!r})\n"
        "print(facts.parameters, facts.commit)\n"
    )
    env = {**os.environ, "HF_ENDPOINT": hub.url, "HF_HUB_DISABLE_TELEMETRY": "1"}
    out = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == [str(TINY_PARAMETERS), hub.commit("acme/tiny-llama")]


def test_gated_repo_without_a_token_needs_one(hub: HubStandIn, tmp_path: Path) -> None:
    with pytest.raises(NeedsToken) as err:
        fetch_facts("acme/tiny-gated", endpoint=hub.url, cache_dir=tmp_path / "cache")
    assert err.value.reason == "HubTokenRequired"
    assert err.value.message == (
        f"acme/tiny-gated is gated at {hub.url}: set spec.storage.hfTokenSecret to a Secret "
        "holding a token whose account accepted the model's license."
    )
    assert not err.value.retryable


def test_gated_repo_with_a_token_without_access_is_denied(hub: HubStandIn, tmp_path: Path) -> None:
    with pytest.raises(AccessDenied) as err:
        fetch_facts("acme/tiny-gated", endpoint=hub.url, token="hf_other", cache_dir=tmp_path / "c")
    assert err.value.reason == "HubAccessDenied"
    assert "accept the model's license" in err.value.message
    assert "hf_other" not in err.value.message


def test_gated_repo_with_its_token_works_and_the_token_is_sent(
    hub: HubStandIn, tmp_path: Path
) -> None:
    facts = fetch_facts("acme/tiny-gated", endpoint=hub.url, token=TOKEN, cache_dir=tmp_path / "c")
    assert facts.parameters == TINY_PARAMETERS
    assert {r.authorization for r in hub.requests} == {f"Bearer {TOKEN}"}


def test_no_token_is_sent_unless_the_model_names_one(
    hub: HubStandIn, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_TOKEN", "hf_token_of_the_operator_process")
    fetch_facts("acme/tiny-llama", endpoint=hub.url, cache_dir=tmp_path / "cache")
    assert {r.authorization for r in hub.requests} == {None}


@pytest.mark.parametrize(
    ("repo", "revision", "token", "reason", "words"),
    [
        ("acme/missing", None, None, "ModelNotFound", "acme/missing was not found at"),
        ("acme/missing", None, TOKEN, "ModelNotFound", "or the token in"),
        ("acme/tiny-llama", "v9", None, "ModelNotFound", "acme/tiny-llama has no revision v9"),
        ("acme/no-config", None, None, "ModelConfigMissing", "has no config.json"),
    ],
    ids=["repo-anonymous", "repo-with-token", "revision", "no-config"],
)
def test_what_is_not_there_is_not_found(
    hub: HubStandIn,
    tmp_path: Path,
    repo: str,
    revision: str | None,
    token: str | None,
    reason: str,
    words: str,
) -> None:
    with pytest.raises(ModelNotFound) as err:
        fetch_facts(repo, revision, hub.url, token, cache_dir=tmp_path / "cache")
    assert err.value.reason == reason
    assert words in err.value.message


def test_hub_that_does_not_answer_is_unreachable_and_retryable(tmp_path: Path) -> None:
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(HubUnreachable) as err:
        fetch_facts("acme/tiny-llama", endpoint=f"http://127.0.0.1:{port}", timeout=2)
    assert err.value.retryable
    assert "could not be reached" in err.value.message
    assert "spec.storage.endpoint" in err.value.message


def test_second_lookup_is_answered_from_the_cache(hub: HubStandIn, tmp_path: Path) -> None:
    cache = FactsCache(cache_dir=tmp_path / "cache")
    first = cache.facts("acme/tiny-llama", endpoint=hub.url)
    asked = len(hub.requests)
    assert asked > 0
    assert cache.facts("acme/tiny-llama", endpoint=hub.url) == first
    assert len(hub.requests) == asked


def test_branch_facts_expire_and_commit_facts_do_not(hub: HubStandIn, tmp_path: Path) -> None:
    now = [0.0]
    cache = FactsCache(cache_dir=tmp_path / "cache", branch_ttl_seconds=60, clock=lambda: now[0])
    commit = hub.commit("acme/tiny-llama")
    cache.facts("acme/tiny-llama", endpoint=hub.url)
    cache.facts("acme/tiny-llama", revision=commit, endpoint=hub.url)
    asked = len(hub.requests)
    now[0] = 61.0
    cache.facts("acme/tiny-llama", revision=commit, endpoint=hub.url)
    assert len(hub.requests) == asked
    cache.facts("acme/tiny-llama", endpoint=hub.url)
    assert len(hub.requests) > asked


def test_failures_are_not_cached(hub: HubStandIn, tmp_path: Path) -> None:
    cache = FactsCache(cache_dir=tmp_path / "cache")
    with pytest.raises(ModelFactsError):
        cache.facts("acme/tiny-gated", endpoint=hub.url)
    hub.gated.clear()  # the license was accepted, say
    assert cache.facts("acme/tiny-gated", endpoint=hub.url).parameters == TINY_PARAMETERS


def test_unusable_local_cache_is_a_reasoned_error(hub: HubStandIn, tmp_path: Path) -> None:
    not_a_dir = tmp_path / "cache"
    not_a_dir.write_text("a file where the cache should be")
    with pytest.raises(ModelFactsError) as err:
        fetch_facts("acme/tiny-llama", endpoint=hub.url, cache_dir=not_a_dir)
    assert err.value.reason == "ModelCacheUnusable"
    assert err.value.retryable
