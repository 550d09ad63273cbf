"""The prefetch Job: its manifest, its program run against the Hub stand-in, and `Cached`."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.unit.builders import model
from tests.unit.hub_standin import HubStandIn, serve
from tests.unit.safetensors_files import write_safetensors
from triton_vllm_operator.prefetch_script import failure
from triton_vllm_operator.prefetch_status import (
    CACHED,
    cached_verdict,
    parse_report,
    progress,
)
from triton_vllm_operator.render.manifests import render_service
from triton_vllm_operator.render.prefetch import (
    prefetch_job_name,
    prefetch_script,
    render_prefetch_job,
)
from triton_vllm_operator.settings import Settings
from triton_vllm_operator.validation import SpecError

REPO = "acme/tiny-llama"
TOKEN = "hf_test_token_of_the_gated_repo"
STORAGE = {
    "existingClaim": "models",
    "prefetch": True,
    "hfTokenSecret": {"name": "hf", "key": "token"},
}


def prefetching(**storage: Any) -> Any:
    return model(
        "llama", model=REPO, tensorParallelSize=1, storage={**STORAGE, **storage}
    ).model_copy(update={"metadata": model().metadata.model_copy(update={"uid": "u-1"})})


# --- the Job manifest --------------------------------------------------------------------------


def test_job_downloads_the_repo_at_its_revision_into_the_claim() -> None:
    job = render_prefetch_job(prefetching(revision="v1", endpoint="http://mirror:8090"), Settings())
    assert job["kind"] == "Job"
    assert job["metadata"]["ownerReferences"][0]["uid"] == "u-1"
    pod = job["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["command"][:2] == ["python3", "-c"]
    assert container["command"][3:] == [REPO, "v1"]
    env = {e["name"]: e for e in container["env"]}
    assert env["HF_HOME"]["value"] == "/cache/huggingface"
    assert env["HF_ENDPOINT"]["value"] == "http://mirror:8090"
    assert env["HF_TOKEN"] == {
        "name": "HF_TOKEN",
        "valueFrom": {"secretKeyRef": {"name": "hf", "key": "token"}},
    }
    assert pod["volumes"][0] == {"name": "cache", "persistentVolumeClaim": {"claimName": "models"}}
    assert pod["restartPolicy"] == "Never"
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert "nvidia.com/gpu" not in yaml.safe_dump(job)  # a download needs no GPU


def test_job_pods_are_not_selected_by_the_models_service() -> None:
    m = prefetching()
    selector = render_service(m)["spec"]["selector"]
    pod_labels = render_prefetch_job(m, Settings())["spec"]["template"]["metadata"]["labels"]
    assert not selector.items() <= pod_labels.items()


def test_a_new_revision_gets_a_new_job() -> None:
    main, v2 = prefetching(), prefetching(revision="v2")
    assert prefetch_job_name(main).startswith("llama-prefetch-")
    assert prefetch_job_name(main) != prefetch_job_name(v2)
    assert prefetch_job_name(main) == prefetch_job_name(prefetching())
    long_name = model("m" * 63, model=REPO, storage=STORAGE)
    assert len(prefetch_job_name(long_name)) <= 63


@pytest.mark.parametrize(
    ("spec", "reason"),
    [
        ({"model": REPO, "storage": {"size": "10Gi"}}, "PrefetchNeedsClaim"),
        ({"model": "/cache/models/llama", "storage": STORAGE}, "PrefetchNeedsRepo"),
    ],
)
def test_job_that_cannot_work_is_refused(spec: dict[str, Any], reason: str) -> None:
    with pytest.raises(SpecError) as err:
        render_prefetch_job(model(**spec), Settings())
    assert err.value.reason == reason


# --- the program, against the Hub stand-in -----------------------------------------------------


def make_repo(root: Path, repo: str) -> dict[str, bytes]:
    """A tiny model whose weights come in two safetensors shards, plus files vLLM never loads."""
    path = root / repo
    (path / "original").mkdir(parents=True)
    (path / "config.json").write_text(json.dumps({"num_hidden_layers": 2}))
    (path / "tokenizer.json").write_text("{}")
    shards = {
        "model-00001-of-00002.safetensors": {"a": ("F32", (512, 1024))},  # 2 MiB
        # Larger than huggingface_hub's 10 MiB download chunk, so a cut can resume mid-file.
        "model-00002-of-00002.safetensors": {"b": ("F32", (6144, 1024))},  # 24 MiB
    }
    weight_map = {}
    for name, tensors in shards.items():
        write_safetensors(path / name, tensors)
        weight_map |= dict.fromkeys(tensors, name)
    (path / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    (path / "consolidated.safetensors").write_bytes(b"x" * 1000)  # not in the index
    (path / "original" / "consolidated.00.pth").write_bytes(b"x" * 1000)
    return {f: (path / f).read_bytes() for f in ("config.json", *shards)}


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[HubStandIn]:
    root = tmp_path / "hub"
    make_repo(root, REPO)
    make_repo(root, "acme/gated")
    with serve(HubStandIn(root, gated={"acme/gated": {TOKEN}})) as running:
        yield running


def prefetch(
    hub: HubStandIn,
    tmp_path: Path,
    repo: str = REPO,
    token: str | None = None,
    stale_seconds: float = 600,
) -> subprocess.Popen[str]:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("HF_")},
        "HF_ENDPOINT": hub.url,
        "HF_HOME": str(tmp_path / "cache" / "huggingface"),
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "PREFETCH_PROGRESS_SECONDS": "0.1",
        "PREFETCH_TERMINATION_LOG": str(tmp_path / "termination-log"),
        "PREFETCH_STALE_SECONDS": str(stale_seconds),
    }
    if token:
        env["HF_TOKEN"] = token
    return subprocess.Popen(
        [sys.executable, "-c", prefetch_script(), repo, "main"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(process: subprocess.Popen[str]) -> tuple[int, list[dict[str, Any]]]:
    out, _ = process.communicate(timeout=120)
    reports = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    return process.returncode, reports


def snapshot_dir(tmp_path: Path, hub: HubStandIn, repo: str = REPO) -> Path:
    folder = "models--" + repo.replace("/", "--")
    return tmp_path / "cache" / "huggingface" / "hub" / folder / "snapshots" / hub.commit(repo)


def test_download_fetches_what_vllm_loads_and_reports_progress(
    hub: HubStandIn, tmp_path: Path
) -> None:
    code, reports = finish(prefetch(hub, tmp_path))
    assert code == 0, reports
    assert reports[0]["event"] == "start"
    assert reports[-1]["event"] == "done"
    assert reports[-1]["commit"] == hub.commit(REPO)
    files = sorted(p.name for p in snapshot_dir(tmp_path, hub).iterdir())
    assert files == [
        "config.json",
        "model-00001-of-00002.safetensors",
        "model-00002-of-00002.safetensors",
        "model.safetensors.index.json",
        "tokenizer.json",
    ]
    assert reports[-1]["total"] == sum(
        (snapshot_dir(tmp_path, hub) / f).stat().st_size for f in files
    )
    assert reports[-1]["total"] > 26 * 1024**2
    assert reports[0]["total"] == reports[-1]["total"]
    assert not [p for p in hub.paths("GET") if "consolidated" in p]
    termination = json.loads((tmp_path / "termination-log").read_text())
    assert termination == reports[-1]


def test_download_cut_midway_resumes_from_the_last_whole_chunk(
    hub: HubStandIn, tmp_path: Path
) -> None:
    shard = "model-00002-of-00002.safetensors"
    size = (hub.root / REPO / shard).stat().st_size
    hub.cut_after[shard] = 15 * 1024**2  # the connection drops after 15 of 24 MiB
    code, reports = finish(prefetch(hub, tmp_path))
    assert code == 0, reports
    gets = [r for r in hub.requests if r.method == "GET" and r.path.endswith(shard)]
    chunk = 10 * 1024**2  # huggingface_hub writes (and so resumes at) whole 10 MiB chunks
    assert [(g.range, g.bytes_sent) for g in gets] == [
        (None, 15 * 1024**2),
        (f"bytes={chunk}-", size - chunk),
    ]
    written = (snapshot_dir(tmp_path, hub) / shard).read_bytes()
    original = (hub.root / REPO / shard).read_bytes()
    assert hashlib.sha256(written).digest() == hashlib.sha256(original).digest()


def test_new_attempt_keeps_the_files_already_complete(hub: HubStandIn, tmp_path: Path) -> None:
    code, _ = finish(prefetch(hub, tmp_path))
    assert code == 0
    before = len(hub.paths("GET"))
    code, reports = finish(prefetch(hub, tmp_path))
    assert code == 0
    again = hub.paths("GET")[before:]
    assert not [p for p in again if p.endswith(".safetensors")]
    assert reports[-1]["event"] == "done"


def test_attempt_killed_mid_file_is_followed_by_one_that_completes(
    hub: HubStandIn, tmp_path: Path
) -> None:
    shard = "model-00002-of-00002.safetensors"
    hub.stall_after[shard] = 4096
    first = prefetch(hub, tmp_path)
    blobs = snapshot_dir(tmp_path, hub).parents[1] / "blobs"
    deadline = time.monotonic() + 60
    # Killed once the stalled file's partial file is there (its GET alone comes before it).
    while not (
        [r for r in hub.requests if r.path.endswith(shard) and r.method == "GET"]
        and list(blobs.glob("*.incomplete"))
    ):
        assert time.monotonic() < deadline, "the download never reached the stalled file"
        time.sleep(0.05)
    first.kill()  # the pod is gone: OOM-killed, node drained, ...
    first.communicate(timeout=30)
    hub.release.set()
    assert list(blobs.glob("*.incomplete"))  # the dead attempt's partial file
    code, reports = finish(prefetch(hub, tmp_path, stale_seconds=0))
    assert code == 0, reports
    assert reports[0]["event"] == "cleaned"
    assert not list(blobs.glob("*.incomplete"))
    written = (snapshot_dir(tmp_path, hub) / shard).read_bytes()
    assert written == (hub.root / REPO / shard).read_bytes()


def test_gated_repo_without_token_fails_with_a_reason(hub: HubStandIn, tmp_path: Path) -> None:
    code, reports = finish(prefetch(hub, tmp_path, "acme/gated"))
    assert code == 1
    assert reports[-1] == {
        "event": "failed",
        "reason": "HubTokenRequired",
        "message": "the repo is gated: its token must have accepted the license",
    }
    code, reports = finish(prefetch(hub, tmp_path, "acme/gated", token=TOKEN))
    assert code == 0, reports


def test_missing_repo_fails_as_not_found(hub: HubStandIn, tmp_path: Path) -> None:
    code, reports = finish(prefetch(hub, tmp_path, "acme/missing"))
    assert code == 1
    assert reports[-1]["reason"] == "ModelNotFound"


# --- the Cached condition ----------------------------------------------------------------------


def pod(phase: str, created: str, message: dict[str, Any] | None = None) -> dict[str, Any]:
    terminated = {"terminated": {"message": json.dumps(message)}} if message else {}
    return {
        "metadata": {"creationTimestamp": created},
        "status": {"phase": phase, "containerStatuses": [{"state": terminated}]},
    }


FAILED_TOKEN = {"event": "failed", "reason": "HubTokenRequired", "message": "the repo is gated"}
FAILED_DISK = {"event": "failed", "reason": "DiskFull", "message": "the cache volume is full"}
GIB = 1024**3


@pytest.mark.parametrize(
    ("job", "pods", "log", "status", "reason", "words"),
    [
        (None, [], None, "False", "Pending", "Creating Job llama-prefetch-"),
        (
            {"status": {"active": 1}},
            [pod("Running", "t1")],
            json.dumps({"event": "progress", "done": 3 * GIB, "total": 12 * GIB}),
            "False",
            "Downloading",
            "Downloading: 3.0 GiB of 12.0 GiB (25%) of acme/tiny-llama@main into models.",
        ),
        (
            {"status": {"active": 1}},
            [pod("Failed", "t1", FAILED_TOKEN), pod("Pending", "t2")],
            None,
            "False",
            "HubTokenRequired",
            "failed: the repo is gated. The Job retries with backoff (attempt 2 of 7).",
        ),
        (
            {"status": {"failed": 7, "conditions": [{"type": "Failed", "status": "True"}]}},
            [pod("Failed", f"t{i}", FAILED_DISK) for i in range(7)],
            None,
            "False",
            "DiskFull",
            "failed 7 times, last: the cache volume is full. Fix that, then delete Job",
        ),
        (
            {"status": {"succeeded": 1, "conditions": [{"type": "Complete", "status": "True"}]}},
            [
                pod(
                    "Succeeded",
                    "t1",
                    {"event": "done", "total": 12 * GIB, "commit": "0123456789abcdef" * 2},
                )
            ],
            None,
            "True",
            "Downloaded",
            "12.0 GiB of acme/tiny-llama@0123456789ab are in models",
        ),
    ],
    ids=["no-job", "progress", "retrying", "gave-up", "done"],
)
def test_cached_condition_tells_how_far_the_download_got(
    job: dict[str, Any] | None,
    pods: list[dict[str, Any]],
    log: str | None,
    status: str,
    reason: str,
    words: str,
) -> None:
    verdict = cached_verdict(prefetching(), job, pods, log)
    assert (verdict.type, verdict.status, verdict.reason) == (CACHED, status, reason)
    assert words in verdict.message


def test_report_is_the_last_json_line_of_a_log() -> None:
    log = 'noise\n{"event": "start", "total": 5}\nWarning: x\n{"event": "progress", "done": 1}\n'
    assert parse_report(log) == {"event": "progress", "done": 1}
    assert parse_report("no json here") is None


@pytest.mark.parametrize(
    ("done", "total", "text"),
    [
        (int(1.25 * GIB), 15 * GIB, "1.2 GiB of 15.0 GiB (8%)"),
        (0, 15 * GIB, "0.0 GiB of 15.0 GiB (0%)"),
        (15 * GIB, 15 * GIB, "15.0 GiB of 15.0 GiB (100%)"),
        (20 * GIB, 15 * GIB, "15.0 GiB of 15.0 GiB (100%)"),  # partial files of a dead attempt
        (300 * 1024**2, 0, "300.0 MiB"),  # the total is not known yet
        (12 * 1024**2, 26 * 1024**2, "12.0 MiB of 26.0 MiB (46%)"),  # a small model: in MiB
        (512 * 1024**2, 2 * GIB, "0.5 GiB of 2.0 GiB (25%)"),
    ],
)
def test_progress_is_bytes_done_of_the_total_and_a_share(done: int, total: int, text: str) -> None:
    assert progress(done, total) == text


def test_progress_reaches_cached_from_the_log_tail_of_the_running_attempt() -> None:
    lines = [
        "Fetching 5 files:   0%|          | 0/5",
        json.dumps({"event": "start", "total": 15 * GIB}),
        json.dumps({"event": "progress", "done": int(1.25 * GIB), "total": 15 * GIB}),
        "Fetching 5 files:  20%|##        | 1/5",  # huggingface_hub's own progress bar
    ]
    verdict = cached_verdict(prefetching(), {"status": {"active": 1}}, [], "\n".join(lines))
    assert verdict.reason == "Downloading"
    assert verdict.message.startswith("Downloading: 1.2 GiB of 15.0 GiB (8%) of acme/tiny-llama")
    failed = [pod("Failed", "t1", FAILED_DISK)]
    again = cached_verdict(prefetching(), {"status": {"active": 1}}, failed, lines[2])
    assert again.message.endswith("into models (attempt 2 of 7).")


def test_progress_reports_of_the_real_program_are_what_the_operator_parses(
    hub: HubStandIn, tmp_path: Path
) -> None:
    code, reports = finish(prefetch(hub, tmp_path))
    assert code == 0
    progress_reports = [r for r in reports if r["event"] == "progress"]
    assert progress_reports, reports  # every 0.1 s here (5 s in the Job)
    total = reports[-1]["total"]
    for report in progress_reports:
        verdict = cached_verdict(prefetching(), {"status": {"active": 1}}, [], json.dumps(report))
        assert f"of {total / 1024**2:.1f} MiB (" in verdict.message
        assert 0 <= report["done"] <= total


@pytest.mark.parametrize(
    ("error", "reason", "words"),
    [
        (OSError(28, "No space left on device"), "DiskFull", "give storage a larger claim"),
        (PermissionError(13, "Permission denied"), "DownloadFailed", "Permission denied"),
    ],
    ids=["disk-full", "other-os-error"],
)
def test_a_local_failure_is_named(error: BaseException, reason: str, words: str) -> None:
    """A fake error: a full volume cannot be provoked without mounting a small filesystem."""
    got_reason, message = failure(error)
    assert got_reason == reason and words in message


def test_a_token_without_access_to_the_gated_repo_is_denied(
    hub: HubStandIn, tmp_path: Path
) -> None:
    code, reports = finish(prefetch(hub, tmp_path, "acme/gated", token="hf_not_the_right_one"))
    assert code == 1
    assert reports[-1]["reason"] == "HubAccessDenied", reports[-1]
    assert "accept" in reports[-1]["message"]
    assert {r.status for r in hub.requests if "acme/gated" in r.path} == {403}
