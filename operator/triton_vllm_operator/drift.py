"""Whether a live object still holds every field the operator rendered for it (hand edits).

Pure. The live object has more than we rendered (defaults, status, other managers' fields):
only the fields we set are compared, so fields owned by others are left alone.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any

from kubernetes.utils import parse_quantity


def _same_scalar(live: Any, desired: Any) -> bool:
    if live == desired and type(live) is type(desired):
        return True
    if isinstance(live, bool) or isinstance(desired, bool):
        return False
    if str(live) == str(desired):
        return True  # e.g. a GPU count rendered as 2 and stored as "2"
    try:
        # Quantities come back canonical: "0.5" is stored as "500m".
        live_q: Decimal = parse_quantity(live)  # type: ignore[no-untyped-call]
        desired_q: Decimal = parse_quantity(desired)  # type: ignore[no-untyped-call]
    except (ValueError, TypeError):
        return False
    return live_q == desired_q


def _named(items: Sequence[Any]) -> bool:
    return all(isinstance(item, Mapping) and "name" in item for item in items)


def covers(live: Any, desired: Any) -> bool:
    """True when every field set in `desired` has the same value in `live`.

    Lists of named items (containers, env, ports, volumes) are matched by name, so an item
    another manager added is not drift; other lists by position.
    """
    if isinstance(desired, Mapping):
        if not isinstance(live, Mapping):
            return False
        return all(
            covers(live.get(key), value) for key, value in desired.items() if value is not None
        )
    if isinstance(desired, list):
        if not isinstance(live, list) or len(live) < len(desired):
            return False
        if desired and _named(desired) and _named(live):
            by_name = {item["name"]: item for item in live}
            return all(
                item["name"] in by_name and covers(by_name[item["name"]], item) for item in desired
            )
        return all(covers(have, want) for have, want in zip(live, desired, strict=False))
    if live is None:
        return desired in ({}, [], "")
    return _same_scalar(live, desired)
