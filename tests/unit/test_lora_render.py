"""spec.lora in what the operator renders: model.json's LoRA switch and limits, the adapter list
the pods follow, the CRD's rules, and `render` showing the adapter file."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from tests.unit.builders import model
from tests.unit.test_lora_prefetch import make_adapter_repo
from triton_vllm_operator.__main__ import main
from triton_vllm_operator.placement import Placement, placement_digest
from triton_vllm_operator.render import model_repository_files
from triton_vllm_operator.render.manifests import render_all
from triton_vllm_operator.settings import Settings

ADAPTERS = [{"name": "sql", "path": "/cache/adapters/sql"}, {"name": "chat", "repo": "acme/chat"}]


def placed() -> Placement:
    return Placement(1, (), 0, None, "placed")


def test_model_json_turns_lora_on_with_limits_from_the_spec_or_the_adapters() -> None:
    files = model_repository_files(model(lora={"adapters": ADAPTERS}), 1)
    engine = json.loads(files["llama/1/model.json"])
    assert (engine["enable_lora"], engine["max_loras"], engine["max_lora_rank"]) == (True, 2, 16)
    files = model_repository_files(model(lora={"maxLoras": 8, "maxLoraRank": 64}), 1)
    engine = json.loads(files["llama/1/model.json"])
    assert (engine["max_loras"], engine["max_lora_rank"]) == (8, 64)
    assert "enable_lora" not in json.loads(model_repository_files(model(), 1)["llama/1/model.json"])


def test_the_adapter_list_lies_beside_model_json_where_the_backend_reads_it() -> None:
    files = model_repository_files(model(lora={"adapters": ADAPTERS}), 1, adapters={"sql": "/a"})
    assert json.loads(files["llama/1/multi_lora.json"]) == {"sql": "/a"}
    manifests = render_all(model(lora={"adapters": ADAPTERS}), placed(), Settings())
    assert [m["kind"] for m in manifests] == ["ConfigMap", "ConfigMap", "Deployment", "Service"]
    adapters = manifests[1]
    assert adapters["metadata"]["name"] == "llama-lora" and "immutable" not in adapters
    # Offline, the path adapters are listed; a Hub adapter only once its Job downloaded it.
    assert json.loads(adapters["data"]["multi_lora.json"]) == {"sql": "/cache/adapters/sql"}
    volume = manifests[2]["spec"]["template"]["spec"]["volumes"][0]
    items = [s["configMap"]["items"] for s in volume["projected"]["sources"]]
    assert items[1] == [{"key": "multi_lora.json", "path": "1/multi_lora.json"}]


def test_adapters_change_neither_the_pod_template_nor_the_placement() -> None:
    one = model(lora={"adapters": ADAPTERS[:1]})
    two = model(lora={"adapters": ADAPTERS})
    deployments = [render_all(m, placed(), Settings(), adapters={})[2] for m in (one, two)]
    # With max_loras given, the engine config is the same whatever the adapters.
    fixed = [model(lora={"adapters": a, "maxLoras": 4}) for a in (ADAPTERS[:1], ADAPTERS)]
    fixed_deployments = [render_all(m, placed(), Settings())[2] for m in fixed]
    assert fixed_deployments[0]["spec"]["template"] == fixed_deployments[1]["spec"]["template"]
    assert placement_digest(one) == placement_digest(two)
    assert placement_digest(model()) != placement_digest(one)
    assert deployments[0]["spec"]["template"] != deployments[1]["spec"]["template"]  # max_loras


@pytest.mark.parametrize(
    ("adapter", "words"),
    [
        ({"name": "x"}, "exactly one of repo"),
        ({"name": "x", "repo": "a/b", "path": "/c"}, "exactly one of repo"),
        ({"name": "x", "path": "/c", "revision": "v1"}, "revision goes with repo"),
        ({"name": "x", "path": "relative"}, "should match pattern"),
        ({"name": "x y", "path": "/c"}, "should match pattern"),
    ],
)
def test_a_malformed_adapter_is_refused_with_what_to_change(
    adapter: dict[str, str], words: str
) -> None:
    with pytest.raises(ValidationError, match=words):
        model(lora={"adapters": [adapter]})


def test_the_crd_says_what_the_api_server_refuses() -> None:
    from triton_vllm_operator.crd import custom_resource_definition

    crd = custom_resource_definition()
    spec = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    lora = spec["properties"]["lora"]
    adapters = lora["properties"]["adapters"]
    assert adapters["x-kubernetes-list-type"] == "map"
    assert adapters["x-kubernetes-list-map-keys"] == ["name"]
    rules = [r["rule"] for r in adapters["items"]["x-kubernetes-validations"]]
    assert "has(self.repo) != has(self.path)" in rules
    assert lora["properties"]["maxLoraRank"]["enum"] == [1, 8, 16, 32, 64, 128, 256, 320, 512]


def test_render_prints_the_adapter_file(tmp_path: Path) -> None:
    doc = {
        "apiVersion": "tritonvllm.io/v1alpha1",
        "kind": "TritonVLLMModel",
        "metadata": {"name": "tiny"},
        "spec": {
            "model": "/cache/models/tiny",
            "tensorParallelSize": 1,
            "lora": {"adapters": [{"name": "sql", "path": "/cache/adapters/sql"}]},
        },
    }
    path = tmp_path / "m.yaml"
    path.write_text(yaml.safe_dump(doc))
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["render", str(path)]) == 0
    docs = list(yaml.safe_load_all(out.getvalue()))
    (adapters,) = [d for d in docs if d["metadata"]["name"] == "tiny-lora"]
    assert json.loads(adapters["data"]["multi_lora.json"]) == {"sql": "/cache/adapters/sql"}


def test_render_checks_local_adapters_as_the_operator_does(tmp_path: Path) -> None:
    doc = {
        "apiVersion": "tritonvllm.io/v1alpha1",
        "kind": "TritonVLLMModel",
        "metadata": {"name": "llama"},
        "spec": {
            "model": "meta-llama/Llama-3.1-8B-Instruct",
            "tensorParallelSize": 1,
            "lora": {
                "maxLoraRank": 16,
                "adapters": [
                    {"name": "sql", "repo": "acme/sql"},
                    {"name": "big", "repo": "acme/big"},
                    {"name": "qwen", "repo": "acme/qwen"},
                ],
            },
        },
    }
    path = tmp_path / "m.yaml"
    path.write_text(yaml.safe_dump(doc))
    adapters = tmp_path / "adapters"
    make_adapter_repo(adapters, "sql", rank=8)
    make_adapter_repo(adapters, "big", rank=64)
    make_adapter_repo(adapters, "qwen", base="Qwen/Qwen2.5-7B-Instruct")
    err = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
        assert main(["render", str(path), "--adapters", str(adapters)]) == 1
    message = err.getvalue()
    assert "adapter big (AdapterRankTooLarge)" in message
    assert "adapter qwen (AdapterBaseMismatch)" in message
    assert "adapter sql" not in message
    doc["spec"]["lora"]["adapters"] = doc["spec"]["lora"]["adapters"][:1]
    path.write_text(yaml.safe_dump(doc))
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(["render", str(path), "--adapters", str(adapters)]) == 0
