"""The `Cached` condition: how far the prefetch Job got, read from the Job and its pods.

Pure: takes the Job and its pods as the API returns them, and optionally the last line of the
running pod's log (the prefetch program prints one JSON line per step).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from .api import TritonVLLMModel
from .conditions import Verdict
from .model_facts import GIB
from .render.prefetch import BACKOFF_LIMIT, prefetch_job_name, prefetch_revision

CACHED = "Cached"
MIB = 1024**2


def parse_report(text: str | None) -> dict[str, Any] | None:
    """The last JSON report in `text` (a termination message or a log tail), if any."""
    for line in reversed((text or "").strip().splitlines()):
        try:
            report = json.loads(line)
        except ValueError:
            continue
        if isinstance(report, dict) and "event" in report:
            return report
    return None


def termination_message(pod: Mapping[str, Any]) -> str | None:
    for status in (pod.get("status") or {}).get("containerStatuses") or []:
        for state in (status.get("state"), status.get("lastState")):
            terminated = (state or {}).get("terminated")
            if terminated and terminated.get("message"):
                return str(terminated["message"])
    return None


def _created(pod: Mapping[str, Any]) -> str:
    return str((pod.get("metadata") or {}).get("creationTimestamp") or "")


def _condition(job: Mapping[str, Any], kind: str) -> bool:
    conditions = (job.get("status") or {}).get("conditions") or []
    return any(c.get("type") == kind and c.get("status") == "True" for c in conditions)


def _int(value: Any) -> int:
    """A byte count from a report; anything else (a log line's garbage) is 0."""
    try:
        return int(value or 0)
    except (TypeError, ValueError):
        return 0


def size(n: int, like: int | None = None) -> str:
    """Bytes in GiB, or in MiB below 1 GiB (`like`: the amount whose unit to use)."""
    if (like if like is not None else n) >= GIB:
        return f"{n / GIB:.1f} GiB"
    return f"{n / MIB:.1f} MiB"


def progress(done: int, total: int) -> str:
    """`1.2 GiB of 15.0 GiB (8%)`; only the bytes done while the total is not known."""
    if total <= 0:
        return size(max(done, 0))
    done = min(max(done, 0), total)  # partial files of a dead attempt can count past the total
    return f"{size(done, total)} of {size(total)} ({100 * done // total}%)"


def cached_verdict(
    model: TritonVLLMModel,
    job: Mapping[str, Any] | None,
    pods: Sequence[Mapping[str, Any]] = (),
    log_tail: str | None = None,
) -> Verdict:
    """Cached=True once the snapshot is in the volume; else what the download is doing, or why
    it failed (with the reason the prefetch program gave: HubTokenRequired, DiskFull, ...)."""
    where = f"{model.spec.model}@{prefetch_revision(model)}"
    claim = model.spec.storage.existing_claim
    name = prefetch_job_name(model)
    if job is None:
        return Verdict(
            CACHED, "False", "Pending", f"Creating Job {name} to download {where} into {claim}."
        )
    ordered = sorted(pods, key=_created)
    failed = [p for p in ordered if (p.get("status") or {}).get("phase") == "Failed"]
    last_failure = parse_report(termination_message(failed[-1])) if failed else None
    if _condition(job, "Complete") or (job.get("status") or {}).get("succeeded"):
        done = next(
            (
                r
                for p in reversed(ordered)
                if (r := parse_report(termination_message(p))) and r.get("event") == "done"
            ),
            {},
        )
        commit = str(done.get("commit") or "")[:12]
        at = f"{model.spec.model}@{commit}" if commit else where
        total = _int(done.get("total"))
        what = f"{size(total)} of {at} are" if total else f"{at} is"
        return Verdict(
            CACHED, "True", "Downloaded", f"{what} in {claim}; the serving pods load from it."
        )
    if _condition(job, "Failed"):
        reason = str((last_failure or {}).get("reason") or "DownloadFailed")
        why = (last_failure or {}).get("message") or "see the Job's pods"
        return Verdict(
            CACHED,
            "False",
            reason,
            f"Downloading {where} failed {len(failed)} times, last: {why}. Fix that, then delete "
            f"Job {name} to download again.",
        )
    attempt = f"attempt {len(failed) + 1} of {BACKOFF_LIMIT + 1}"
    report = parse_report(log_tail)
    if report and report.get("event") in ("start", "progress"):
        done_bytes, total = _int(report.get("done")), _int(report.get("total"))
        return Verdict(
            CACHED,
            "False",
            "Downloading",
            f"Downloading: {progress(done_bytes, total)} of {where} into {claim}"
            + (f" ({attempt})." if failed else "."),
        )
    if last_failure:
        return Verdict(
            CACHED,
            "False",
            str(last_failure.get("reason") or "DownloadFailed"),
            f"Downloading {where} failed: {last_failure.get('message')}. The Job retries with "
            f"backoff ({attempt}).",
        )
    return Verdict(
        CACHED, "False", "Downloading", f"Job {name} is downloading {where} into {claim}."
    )
