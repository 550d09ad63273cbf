"""The OpenAI server's settings: the port parameter, and its arguments in model.json."""

import json
import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "backend" / "tritonvllm"))
from tritonvllm_backend.engine_config import EngineConfigError, load_model_json
from tritonvllm_backend.openai_config import (
    ListenAddress,
    OpenAIConfigError,
    check_not_reserved,
    listen_address,
    served_names,
)

ENGINE = {"model", "dtype", "max_model_len", "served_model_name"}
FRONTEND = {"chat_template", "tool_call_parser", "enable_auto_tool_choice", "response_role", "port"}


def parameters(**values: str) -> dict[str, Any]:
    return {key: {"string_value": value} for key, value in values.items()}


@pytest.mark.parametrize(
    "params", [{}, parameters(OPENAI_API_PORT="0"), parameters(OPENAI_API_PORT=" ")]
)
def test_no_port_or_port_0_leaves_the_server_off(params: dict[str, Any]) -> None:
    assert listen_address(params) is None


def test_a_port_turns_it_on_on_every_interface_by_default() -> None:
    assert listen_address(parameters(OPENAI_API_PORT=" 9000 ")) == ListenAddress("0.0.0.0", 9000)


def test_the_host_parameter_picks_the_interface() -> None:
    address = listen_address(parameters(OPENAI_API_PORT="9000", OPENAI_API_HOST="127.0.0.1"))
    assert address == ListenAddress("127.0.0.1", 9000)
    assert str(ListenAddress("::1", 9000)) == "[::1]:9000"


@pytest.mark.parametrize("port", ["http", "-1", "65536", "9000.0", "80 81"])
def test_an_invalid_port_is_refused_saying_what_is_expected(port: str) -> None:
    with pytest.raises(
        OpenAIConfigError, match=r"OPENAI_API_PORT must be a port number \(1-65535\)"
    ):
        listen_address(parameters(OPENAI_API_PORT=port))


def test_an_invalid_host_is_refused() -> None:
    with pytest.raises(OpenAIConfigError, match="OPENAI_API_HOST"):
        listen_address(parameters(OPENAI_API_PORT="9000", OPENAI_API_HOST="a b"))


def test_host_and_port_cannot_come_from_model_json() -> None:
    with pytest.raises(OpenAIConfigError) as err:
        check_not_reserved({"port": 1, "ssl_keyfile": "k", "chat_template": "t"})
    assert "'port' cannot be set in model.json: set by the OPENAI_API_PORT" in str(err.value)
    assert "'ssl_keyfile'" in str(err.value) and "chat_template" not in str(err.value)


def test_the_triton_name_is_served_first_then_model_json_names() -> None:
    assert served_names("tiny", None) == ["tiny"]
    assert served_names("tiny", "alias") == ["tiny", "alias"]
    assert served_names("tiny", ["tiny", "alias"]) == ["tiny", "alias"]


def write(tmp_path: Path, content: dict[str, Any]) -> Path:
    (tmp_path / "model.json").write_text(json.dumps(content))
    return tmp_path


def test_the_openai_section_is_split_from_the_engine_args(tmp_path: Path) -> None:
    config = {"model": "m", "dtype": "float32", "openai": {"response_role": "bot"}}
    loaded = load_model_json(write(tmp_path, config), ENGINE, FRONTEND)
    assert loaded.engine == {"model": "m", "dtype": "float32"}
    assert loaded.openai == {"response_role": "bot"}


def test_top_level_frontend_args_go_to_the_openai_server(tmp_path: Path) -> None:
    config = {"model": "m", "chat_template": "{{ x }}", "tool_call_parser": "hermes"}
    loaded = load_model_json(write(tmp_path, config), ENGINE, FRONTEND)
    assert loaded.engine == {"model": "m"}
    assert loaded.openai == {"chat_template": "{{ x }}", "tool_call_parser": "hermes"}


def test_an_unknown_openai_key_is_named_with_a_close_match(tmp_path: Path) -> None:
    config = {"model": "m", "openai": {"chat_templat": "x", "zzz": 1}}
    with pytest.raises(EngineConfigError) as err:
        load_model_json(write(tmp_path, config), ENGINE, FRONTEND)
    message = str(err.value)
    assert "'openai': unknown key 'chat_templat' (did you mean 'chat_template'?)" in message
    assert "unknown key 'zzz'" in message and "OpenAI-compatible server" in message


def test_an_unknown_top_level_key_suggests_frontend_names_too(tmp_path: Path) -> None:
    with pytest.raises(EngineConfigError) as err:
        load_model_json(write(tmp_path, {"model": "m", "tool_call_parsr": "x"}), ENGINE, FRONTEND)
    assert "did you mean 'tool_call_parser'" in str(err.value)
    assert "also under 'openai'" in str(err.value)


@pytest.mark.parametrize(
    ("config", "fragment"),
    [
        ({"model": "m", "openai": ["chat_template"]}, "'openai' must be a JSON object"),
        (
            {"model": "m", "response_role": "a", "openai": {"response_role": "b"}},
            "'response_role' is set both at the top level and under 'openai'",
        ),
    ],
)
def test_malformed_openai_settings_are_explained(
    tmp_path: Path, config: dict[str, Any], fragment: str
) -> None:
    with pytest.raises(EngineConfigError, match=fragment):
        load_model_json(write(tmp_path, config), ENGINE, FRONTEND)


def test_without_frontend_names_the_openai_key_is_unknown(tmp_path: Path) -> None:
    with pytest.raises(EngineConfigError, match="unknown key 'openai'"):
        load_model_json(write(tmp_path, {"model": "m", "openai": {}}), ENGINE)


def test_with_the_port_off_the_openai_section_is_set_aside_unchecked(tmp_path: Path) -> None:
    config = {"model": "m", "dtype": "float32", "openai": {"chat_templat": "x"}}
    loaded = load_model_json(write(tmp_path, config), ENGINE, None)
    assert loaded.engine == {"model": "m", "dtype": "float32"}
    assert loaded.openai == {"chat_templat": "x"}


def test_with_the_port_off_a_top_level_frontend_key_is_unknown(tmp_path: Path) -> None:
    with pytest.raises(EngineConfigError, match="unknown key 'chat_template'"):
        load_model_json(write(tmp_path, {"model": "m", "chat_template": "x"}), ENGINE, None)
