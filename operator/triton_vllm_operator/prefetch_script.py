"""The prefetch Job's program: download a model snapshot into the shared cache, once.

Runs in the serving image as `python3 -c <this file> REPO REVISION`, with only huggingface_hub
(and the standard library): HF_HOME names the cache, HF_ENDPOINT a mirror, HF_TOKEN the model's
token (from a Secret). It downloads what vLLM loads (config, tokenizer, and the safetensors
shards the index names, else the other weight files), and prints one JSON line per step:
`{"event": "progress", "done": bytes, "total": bytes}` every few seconds, then `done` or `failed`
with a reason (for a LoRA adapter's repo, `done` carries its adapter_config.json's rank, base
model and target modules). The last line also goes to the termination message, where the
operator reads it.
An interrupted download resumes mid-file within an attempt (huggingface_hub retries with a byte
range); a new attempt keeps every file already complete.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import sys
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

ADAPTER_CONFIG = "adapter_config.json"
SMALL_FILES = (".json", ".txt", ".model", ".tiktoken", ".jinja", ".py")
OTHER_WEIGHTS = (".bin", ".pt")
PROGRESS_SECONDS = float(os.environ.get("PREFETCH_PROGRESS_SECONDS", "5"))
# A partial file untouched this long belongs to an attempt that died: huggingface_hub names
# partial files per process and never reuses them, so they only take space.
STALE_SECONDS = float(os.environ.get("PREFETCH_STALE_SECONDS", "600"))
TERMINATION_LOG = Path(os.environ.get("PREFETCH_TERMINATION_LOG", "/dev/termination-log"))


def say(event: str, **fields: Any) -> None:
    line = json.dumps({"event": event, **fields})
    print(line, flush=True)
    if event in ("done", "failed"):
        with contextlib.suppress(OSError):  # absent outside a pod
            TERMINATION_LOG.write_text(line)


def wanted(files: dict[str, int], index: dict[str, Any] | None) -> list[str]:
    """The files vLLM loads: small config files plus one set of weights, never `original/`."""
    names = [n for n in files if not n.startswith("original/")]
    small = [n for n in names if n.endswith(SMALL_FILES)]
    if index is not None:
        weights = sorted(set(index.get("weight_map", {}).values()))
    elif any(n.endswith(".safetensors") for n in names):
        weights = [n for n in names if n.endswith(".safetensors") and "/" not in n]
    else:
        weights = [n for n in names if n.endswith(OTHER_WEIGHTS)]
    return sorted(set(small) | set(weights))


def blobs_dir(cache_dir: Path, repo: str) -> Path:
    return cache_dir / f"models--{repo.replace('/', '--')}" / "blobs"


def remove_stale_partials(cache_dir: Path, repo: str, now: float) -> tuple[int, int]:
    """Delete partial downloads of dead attempts; returns how many, and the bytes freed."""
    removed = freed = 0
    for partial in blobs_dir(cache_dir, repo).glob("*.incomplete"):
        try:
            stat = partial.stat()
            if now - stat.st_mtime >= STALE_SECONDS:
                partial.unlink()
                removed += 1
                freed += stat.st_size
        except OSError:
            continue
    return removed, freed


def cached_bytes(cache_dir: Path, repo: str) -> int:
    """Bytes of the repo's blobs in the cache, partial downloads included."""
    blobs = blobs_dir(cache_dir, repo)
    total = 0
    for blob in blobs.glob("*") if blobs.is_dir() else ():
        try:
            total += blob.stat().st_size
        except OSError:
            continue
    return total


def failure(err: BaseException) -> tuple[str, str]:
    """A reason and message for a failed download."""
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    if isinstance(err, GatedRepoError) and os.environ.get("HF_TOKEN"):
        return "HubAccessDenied", (
            "the token may not read this gated repo: accept the model's license with the "
            "token's account, or use a token that has access"
        )
    if isinstance(err, GatedRepoError):
        return "HubTokenRequired", "the repo is gated: its token must have accepted the license"
    if isinstance(err, RevisionNotFoundError):
        return "ModelNotFound", "no such revision"
    if isinstance(err, RepositoryNotFoundError):
        return "ModelNotFound", "no such repo, or it is private and needs a token"
    if isinstance(err, OSError) and err.errno == errno.ENOSPC:
        return "DiskFull", "the cache volume is full: give storage a larger claim"
    if isinstance(err, HfHubHTTPError):
        status = getattr(err.response, "status_code", None)
        if status in (401, 403):
            return "HubAccessDenied", f"the Hub refused the token ({status})"
        return "HubUnreachable", f"the Hub answered {status}"
    return "DownloadFailed", f"{type(err).__name__}: {err}"


def run(repo: str, revision: str, cache_dir: Path) -> int:
    from huggingface_hub import HfApi, hf_hub_download, snapshot_download
    from huggingface_hub.errors import EntryNotFoundError

    api = HfApi()
    removed, freed = remove_stale_partials(cache_dir, repo, time.time())
    if removed:
        say("cleaned", files=removed, freed=freed)
    try:
        tree: Iterable[Any] = api.list_repo_tree(repo, revision=revision, recursive=True)
        files = {f.path: int(f.size or 0) for f in tree if hasattr(f, "size")}
        try:
            index_path = hf_hub_download(
                repo, "model.safetensors.index.json", revision=revision, cache_dir=cache_dir
            )
            index: dict[str, Any] | None = json.loads(Path(index_path).read_text())
        except EntryNotFoundError:  # one file, or not safetensors
            index = None
        patterns = wanted(files, index)
        total = sum(files[n] for n in patterns if n in files)
        say("start", repo=repo, revision=revision, files=len(patterns), total=total)
        finished = threading.Event()

        def report() -> None:
            while not finished.wait(PROGRESS_SECONDS):
                say("progress", done=min(cached_bytes(cache_dir, repo), total), total=total)

        reporter = threading.Thread(target=report, daemon=True)
        reporter.start()
        try:
            path = snapshot_download(
                repo, revision=revision, cache_dir=cache_dir, allow_patterns=patterns
            )
        finally:
            finished.set()
    except Exception as err:  # every failure is reported with a reason, then the Job retries
        reason, message = failure(err)
        say("failed", reason=reason, message=message)
        return 1
    say("done", done=total, total=total, commit=Path(path).name, **adapter_facts(Path(path)))
    return 0


def adapter_facts(snapshot: Path) -> dict[str, Any]:
    """For a LoRA adapter's repo: what the operator checks in its adapter_config.json."""
    try:
        config = json.loads((snapshot / ADAPTER_CONFIG).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as err:
        return {"adapter": {"error": f"{ADAPTER_CONFIG} is not readable JSON: {err}"[:300]}}
    if not isinstance(config, dict):
        return {"adapter": {"error": f"{ADAPTER_CONFIG} is not a JSON object"}}
    targets = config.get("target_modules")
    return {
        "adapter": {
            "peft_type": str(config.get("peft_type") or "")[:40],
            "r": config.get("r"),
            "base_model": str(config.get("base_model_name_or_path") or "")[:200],
            "target_modules": sorted(map(str, targets))[:40]
            if isinstance(targets, list)
            else str(targets or "")[:200],
        }
    }


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: prefetch REPO REVISION", file=sys.stderr)
        return 2
    home = Path(os.environ.get("HF_HOME", str(Path.home() / ".cache" / "huggingface")))
    return run(argv[0], argv[1], Path(os.environ.get("HF_HUB_CACHE", str(home / "hub"))))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
