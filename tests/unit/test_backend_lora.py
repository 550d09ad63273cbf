"""LoRA adapters follow multi_lora.json: changes are diffed and applied as one step, a bad file
changes nothing, and a removed adapter leaves the engine only once no request in flight uses it."""

import asyncio
import itertools
import json
import os
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "backend" / "tritonvllm"))
from tritonvllm_backend.lora import (
    Changes,
    LoraAdapters,
    LoraFileError,
    adapters_in_use,
    diff_adapters,
    parse_multi_lora,
    read_multi_lora,
)
from tritonvllm_backend.sampling import RequestError


@dataclass(frozen=True)
class FakeLoRARequest:
    """vLLM's LoRARequest, as far as the backend uses it."""

    lora_name: str
    lora_int_id: int
    lora_path: str


class FakeEngine:
    """AsyncLLM's LoRA calls, with the requests in flight that its output processor holds."""

    def __init__(self) -> None:
        self.loaded: dict[int, str] = {}
        self.broken: set[str] = set()
        self.output_processor = SimpleNamespace(request_states={})

    async def add_lora(self, request: FakeLoRARequest) -> bool:
        if request.lora_path in self.broken:
            raise ValueError(f"Loading lora {request.lora_name} failed:\nNo adapter found")
        self.loaded[request.lora_int_id] = request.lora_name
        return True

    async def remove_lora(self, lora_id: int) -> bool:
        return self.loaded.pop(lora_id, None) is not None

    def start_request(self, request_id: str, lora: FakeLoRARequest) -> None:
        self.output_processor.request_states[request_id] = SimpleNamespace(lora_request=lora)

    def finish_request(self, request_id: str) -> None:
        del self.output_processor.request_states[request_id]


class Counter:
    def __init__(self) -> None:
        self._ids = itertools.count(1)

    def inc(self, num: int = 1) -> int:
        return next(self._ids)


class Log:
    def __init__(self) -> None:
        self.errors: list[str] = []
        self.infos: list[str] = []

    def log_info(self, message: str) -> None:
        self.infos.append(message)

    def log_error(self, message: str) -> None:
        self.errors.append(message)


@pytest.fixture
def version_dir(tmp_path: Path) -> Path:
    return tmp_path


def swap_file(version_dir: Path, content: object) -> None:
    """Replace multi_lora.json as a ConfigMap update does: ``..data`` swapped to a new dir."""
    text = content if isinstance(content, str) else json.dumps(content)
    target = version_dir / f"..{uuid.uuid4().hex}"
    target.mkdir()
    (target / "multi_lora.json").write_text(text)
    (version_dir / "..data_tmp").symlink_to(target.name)
    os.replace(version_dir / "..data_tmp", version_dir / "..data")
    link = version_dir / "multi_lora.json"
    if not link.is_symlink():
        link.symlink_to("..data/multi_lora.json")


def served(adapters: LoraAdapters) -> dict[str, str]:
    return {name: request.lora_path for name, request in adapters.requests.items()}


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def make(version_dir: Path) -> tuple[LoraAdapters, FakeEngine, Log]:
    log = Log()
    adapters = LoraAdapters(version_dir / "multi_lora.json", FakeLoRARequest, Counter(), log)
    return adapters, FakeEngine(), log


class TestParse:
    def test_names_map_to_directories_relative_to_the_file(self, tmp_path: Path) -> None:
        text = json.dumps({"pirate": "loras/pirate", "x": "/a"})
        assert parse_multi_lora(text, "f", tmp_path) == {
            "pirate": str(tmp_path / "loras" / "pirate"),
            "x": "/a",
        }

    @pytest.mark.parametrize(
        ("content", "fragment"),
        [(None, "multi_lora.json is missing"), ("{nope", "not valid JSON"),
         ('["a"]', "must map LoRA names"), ('{"a": 1}', "must map LoRA names"),
         ('{"a": ""}', "must map LoRA names"), ('{"": "/a"}', "must map LoRA names")],
    )  # fmt: skip
    def test_a_bad_file_is_explained(
        self, tmp_path: Path, content: str | None, fragment: str
    ) -> None:
        if content is not None:
            (tmp_path / "multi_lora.json").write_text(content)
        with pytest.raises(LoraFileError, match=fragment):
            read_multi_lora(tmp_path / "multi_lora.json")


class TestDiff:
    @pytest.mark.parametrize(
        ("before", "after", "changes"),
        [
            ({}, {}, Changes()),
            ({"a": "/a"}, {"a": "/a"}, Changes()),
            ({}, {"a": "/a"}, Changes(load={"a": "/a"})),
            ({"a": "/a", "b": "/b"}, {"b": "/b"}, Changes(drop=["a"])),
            ({"a": "/a"}, {"a": "/a2"}, Changes(load={"a": "/a2"})),
            ({"a": "/a"}, {"b": "/a"}, Changes(load={"b": "/a"}, drop=["a"])),
        ],
        ids=["nothing", "same", "added", "removed", "new-path", "renamed"],
    )
    def test_changes(self, before: dict[str, str], after: dict[str, str], changes: Changes) -> None:
        assert diff_adapters(before, after) == changes
        assert bool(changes) == (before != after)


class TestFollowTheFile:
    def test_the_file_is_loaded_into_the_engine(self, version_dir: Path) -> None:
        swap_file(version_dir, {"pirate": "/p"})
        adapters, engine, _ = make(version_dir)
        run(adapters.load(engine))
        assert served(adapters) == {"pirate": "/p"}
        assert engine.loaded == {1: "pirate"}
        assert adapters.request_for("pirate").lora_int_id == 1

    def test_an_unknown_name_is_refused_naming_those_served(self, version_dir: Path) -> None:
        swap_file(version_dir, {"pirate": "/p", "parrot": "/q"})
        adapters, engine, _ = make(version_dir)
        run(adapters.load(engine))
        with pytest.raises(RequestError) as err:
            adapters.request_for("ghost")
        assert str(err.value) == (
            "LoRA ghost is not supported, we currently support ['pirate', 'parrot']"
        )

    def test_added_removed_and_moved_adapters_follow_a_symlink_swap(
        self, version_dir: Path
    ) -> None:
        swap_file(version_dir, {"pirate": "/p", "parrot": "/q"})
        adapters, engine, _ = make(version_dir)

        async def scenario() -> None:
            await adapters.load(engine)
            await adapters.refresh(engine)  # unchanged: nothing happens
            assert engine.loaded == {1: "pirate", 2: "parrot"}
            swap_file(version_dir, {"parrot": "/q2", "gull": "/g"})
            await adapters.refresh(engine)

        run(scenario())
        assert served(adapters) == {"parrot": "/q2", "gull": "/g"}
        # A new path is a new adapter id (the old weights are not reused), the old one removed.
        assert engine.loaded == {3: "parrot", 4: "gull"}

    def test_a_malformed_file_is_logged_once_and_changes_nothing(self, version_dir: Path) -> None:
        swap_file(version_dir, {"pirate": "/p"})
        adapters, engine, log = make(version_dir)

        async def scenario() -> None:
            await adapters.load(engine)
            swap_file(version_dir, "{not json")
            await adapters.refresh(engine)
            await adapters.refresh(engine)

        run(scenario())
        assert len(log.errors) == 1
        assert "is not valid JSON" in log.errors[0]
        assert log.errors[0].endswith("the adapters served are kept: ['pirate']")
        assert served(adapters) == {"pirate": "/p"} and engine.loaded == {1: "pirate"}

    def test_a_deleted_file_is_logged_and_changes_nothing(self, version_dir: Path) -> None:
        swap_file(version_dir, {"pirate": "/p"})
        adapters, engine, log = make(version_dir)
        run(adapters.load(engine))
        (version_dir / "multi_lora.json").unlink()
        run(adapters.refresh(engine))
        assert "cannot be read" in log.errors[0]
        assert served(adapters) == {"pirate": "/p"}

    def test_an_adapter_vllm_cannot_load_changes_nothing(self, version_dir: Path) -> None:
        swap_file(version_dir, {"pirate": "/p"})
        adapters, engine, log = make(version_dir)
        engine.broken.add("/broken")

        async def scenario() -> None:
            await adapters.load(engine)
            swap_file(version_dir, {"parrot": "/q", "ghost": "/broken"})
            await adapters.refresh(engine)  # parrot loads, ghost fails: parrot is taken back
            await adapters.refresh(engine)

        run(scenario())
        assert served(adapters) == {"pirate": "/p"}
        assert engine.loaded == {1: "pirate"}
        (error,) = log.errors
        assert "LoRA ghost cannot be loaded from /broken: Loading lora ghost failed: No" in error
        assert "\n" not in error

    def test_a_startup_file_vllm_cannot_load_fails(self, version_dir: Path) -> None:
        swap_file(version_dir, {"ghost": "/broken"})
        adapters, engine, _ = make(version_dir)
        engine.broken.add("/broken")
        with pytest.raises(LoraFileError, match="LoRA ghost cannot be loaded"):
            run(adapters.load(engine))


class TestInFlight:
    def test_a_removed_adapter_leaves_the_engine_once_its_requests_finished(
        self, version_dir: Path
    ) -> None:
        swap_file(version_dir, {"pirate": "/p"})
        adapters, engine, _ = make(version_dir)

        async def scenario() -> None:
            await adapters.load(engine)
            engine.start_request("r1", adapters.request_for("pirate"))
            swap_file(version_dir, {})
            await adapters.refresh(engine)
            with pytest.raises(RequestError):  # refused to new requests at once
                adapters.request_for("pirate")
            assert engine.loaded == {1: "pirate"}  # still used by r1
            await adapters.refresh(engine)
            assert engine.loaded == {1: "pirate"}
            engine.finish_request("r1")
            await adapters.refresh(engine)
            assert engine.loaded == {}

        run(scenario())

    def test_a_removal_the_engine_refuses_is_logged_once(self, version_dir: Path) -> None:
        swap_file(version_dir, {"pirate": "/p"})
        adapters, engine, log = make(version_dir)

        async def refuse(lora_id: int) -> bool:
            raise RuntimeError("engine busy")

        async def scenario() -> None:
            await adapters.load(engine)
            engine.remove_lora = refuse  # type: ignore[method-assign]
            swap_file(version_dir, {})
            await adapters.refresh(engine)
            await adapters.refresh(engine)

        run(scenario())
        (error,) = log.errors
        assert "LoRA pirate (/p) not removed from the engine: RuntimeError('engine busy')" in error
        assert served(adapters) == {}

    def test_in_use_reads_the_engines_requests_in_flight(self) -> None:
        engine = FakeEngine()
        engine.start_request("a", FakeLoRARequest("x", 7, "/x"))
        engine.output_processor.request_states["b"] = SimpleNamespace(lora_request=None)
        assert adapters_in_use(engine) == {7}
        assert adapters_in_use(object()) is None


class TestSharedWithTheOpenAIServer:
    def test_the_openai_servers_dict_and_counter_are_used(self, version_dir: Path) -> None:
        swap_file(version_dir, {"pirate": "/p"})
        adapters, engine, _ = make(version_dir)
        counter = Counter()
        counter.inc(1)  # the OpenAI server loaded one of its own lora_modules: id 1
        static = FakeLoRARequest("own", 1, "/own")
        models = SimpleNamespace(lora_requests={"own": static}, lora_id_counter=counter)
        adapters.share_with(models)
        run(adapters.load(engine))
        assert models.lora_requests == adapters.requests
        assert served(adapters) == {"own": "/own", "pirate": "/p"}
        assert adapters.request_for("pirate").lora_int_id == 2
