"""Print vLLM's AsyncEngineArgs fields and their kinds as JSON, for the operator's validation.

Run with the serving environment's python (`make engine-args` writes the result to
operator/triton_vllm_operator/data/engine_args.json):
    {"vllm_version": "...", "fields": {"<field>": "bool|int|float|str|list|dict|any", ...}}
The kind of ``X | None`` is the kind of X; "any" where the type is not one of these.
"""

from __future__ import annotations

import dataclasses
import json
import locale
import sys
import typing
from pathlib import Path

locale.setlocale(locale.LC_CTYPE, "C.UTF-8")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "backend" / "tritonvllm"))

from tritonvllm_backend.typekinds import kind_of  # noqa: E402


def main() -> None:
    import vllm
    from vllm.engine.arg_utils import AsyncEngineArgs

    try:
        hints = typing.get_type_hints(AsyncEngineArgs, include_extras=False)
    except Exception:
        hints = {}
    fields = {
        field.name: kind_of(hints.get(field.name, field.type))
        for field in dataclasses.fields(AsyncEngineArgs)
        if not field.name.startswith("_")
    }
    snapshot = {"vllm_version": vllm.__version__, "fields": dict(sorted(fields.items()))}
    json.dump(snapshot, sys.stdout, indent=2, sort_keys=True)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
