"""Hostile TritonVLLMModel specs through the real API server (hypothesis, derandomized): each is
rejected by the API server with a 4xx, or the operator gives it Accepted and Scheduled conditions
with a reason. The operator stays alive and healthy, and a valid model created before the storm
is still Ready and untouched after it.

CI: 120 examples; RELIABILITY_LONG=1 (make chaos): 500. Specs have hostile contents in shapes
the schema admits (so most reach the operator), and a third also carry one field drawn from the
any-JSON strategies of the pure-layer property test (tests/unit/test_hostile_specs.py).
"""

from __future__ import annotations

import json
import time
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kubernetes import client

from tests.operator_process import OperatorProcess
from tests.reliability.conftest import LONG
from tests.reliability.helpers import (
    GROUP,
    PLURAL,
    VERSION,
    Namespace,
    body,
    conditions,
    gpu_nodes,
    healthz,
    wait_empty,
    wait_for,
)
from tests.unit.test_hostile_specs import engine_keys, json_values, spec_fields

EXAMPLES = 500 if LONG else 120

text = st.text(max_size=80)
words = st.one_of(text, st.sampled_from(["", "a", "../../etc/passwd", "x" * 300, "${HF_TOKEN}"]))
quantities = st.one_of(
    st.sampled_from(["1", "500m", "2Gi", "-1", "1e400", "lots", "", "0.000001m"]),
    st.integers(-(2**40), 2**40),
    text,
)
# Shapes the schema lets through, with hostile contents: what reaches the operator.
plausible: dict[str, st.SearchStrategy[Any]] = {
    "model": st.one_of(st.sampled_from(["meta-llama/Llama-3.1-8B-Instruct", "/cache/m"]), words),
    "servedModelName": st.one_of(st.from_regex(r"\A[A-Za-z0-9][A-Za-z0-9_.-]{0,20}\Z"), words),
    "engineArgs": st.dictionaries(st.one_of(engine_keys, text), json_values, max_size=4),
    "tensorParallelSize": st.one_of(st.just("auto"), st.integers(-3, 40), words),
    "gpu": spec_fields["gpu"],
    "modelSizeGiB": st.one_of(st.floats(-10, 1e6), st.integers(-1, 10**6)),
    "triton": st.fixed_dictionaries(
        {},
        optional={
            "config": st.dictionaries(
                st.sampled_from(["parameters", "max_batch_size", "name", "backend", "bogus"]),
                json_values,
                max_size=3,
            ),
            "args": st.lists(words, max_size=3),
            "image": words,
        },
    ),
    "storage": st.fixed_dictionaries(
        {},
        optional={
            "existingClaim": words,
            "size": quantities,
            "hfTokenSecret": st.fixed_dictionaries({"name": words, "key": words}),
        },
    ),
    "resources": st.fixed_dictionaries(
        {},
        optional={
            k: st.dictionaries(
                st.one_of(st.sampled_from(["cpu", "memory", "nvidia.com/gpu"]), text),
                quantities,
                max_size=3,
            )
            for k in ("requests", "limits")
        },
    ),
    "nodeSelector": st.dictionaries(words, words, max_size=3),
    "tolerations": st.lists(
        st.fixed_dictionaries(
            {},
            optional={
                "key": words,
                "operator": st.sampled_from(["Exists", "Equal"]),
                "value": words,
                "effect": st.sampled_from(["NoSchedule", "NoExecute"]),
                "tolerationSeconds": st.integers(-(2**40), 2**40),
            },
        ),
        max_size=2,
    ),
    "env": st.lists(st.fixed_dictionaries({"name": words}, optional={"value": words}), max_size=3),
    "podAnnotations": st.dictionaries(words, words, max_size=3),
}


def _not_positive(value: Any) -> bool:
    return not (isinstance(value, int | float) and value > 0)


@st.composite
def hostile_specs(draw: st.DrawFn) -> dict[str, Any]:
    """A spec with hostile contents in plausible shapes; one in three also has one field of
    any JSON shape at all (mostly refused by the schema). replicas is always present and
    never positive: an accepted hostile model must not take GPUs from the shared pool."""
    spec = draw(
        st.fixed_dictionaries(
            {"model": plausible["model"]},
            optional={k: v for k, v in plausible.items() if k != "model"},
        )
    )
    spec["replicas"] = draw(st.integers(-2, 0))
    if draw(st.integers(0, 2)) == 0:
        field = draw(st.sampled_from(sorted(spec_fields)))
        value = draw(spec_fields[field])
        spec[field] = value if field != "replicas" or _not_positive(value) else 0
    return spec


def test_hostile_specs_are_rejected_or_get_reasoned_conditions(
    api_client: client.ApiClient, namespace: str, operator: OperatorProcess
) -> None:
    ns = Namespace(api_client, namespace)
    custom = ns.custom
    with gpu_nodes(1, gpus=2) as product:
        operator.start()
        valid = {
            "model": "meta-llama/Llama-3.1-8B-Instruct",
            "tensorParallelSize": 1,
            "gpu": {"product": product},
            "engineArgs": {"max_model_len": 4096},
        }
        custom.create_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, body("valid", valid)
        )
        wait_for(
            lambda: conditions(ns.models()["valid"]).get("Ready", {}).get("status") == "True",
            60,
            "the valid model to be Ready",
        )
        time.sleep(3)  # let kcm finish writing the Deployment's status
        before = _snapshot(ns)

        outcomes: dict[str, int] = {}
        created: list[str] = []
        t0 = time.monotonic()

        @settings(
            max_examples=EXAMPLES,
            derandomize=True,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        @given(spec=hostile_specs())
        def storm(spec: dict[str, Any]) -> None:
            name = f"h{len(created) + sum(outcomes.values()):04d}"
            try:
                custom.create_namespaced_custom_object(
                    GROUP, VERSION, namespace, PLURAL, body(name, spec)
                )
            except client.ApiException as err:
                assert 400 <= err.status < 500, (err.status, err.body, json.dumps(spec)[:500])
                outcomes[str(err.status)] = outcomes.get(str(err.status), 0) + 1
                return
            except ValueError:  # NaN/Infinity: not JSON, the client refuses to send it
                outcomes["unsendable"] = outcomes.get("unsendable", 0) + 1
                return
            created.append(name)

        storm()
        storm_s = time.monotonic() - t0
        assert operator.alive and healthz(operator.port)

        def unreasoned() -> list[str]:
            models = ns.models()
            missing = []
            for name in created:
                if name not in models:
                    missing.append(f"{name}: gone")
                    continue
                conds = conditions(models[name])
                for type_ in ("Accepted", "Scheduled", "Ready"):
                    cond = conds.get(type_, {})
                    if not (cond.get("status") and cond.get("reason") and cond.get("message")):
                        missing.append(f"{name} {type_}: {cond}; {json.dumps(models[name])}")
            return missing

        wait_empty(unreasoned, 120, "conditions on every accepted hostile model")
        settle_s = time.monotonic() - t0 - storm_s
        models = ns.models()
        reasons: dict[str, int] = {}
        for name in created:
            accepted = conditions(models[name])["Accepted"]
            key = f"Accepted={accepted['status']}/{accepted['reason']}"
            reasons[key] = reasons.get(key, 0) + 1
        print(
            f"\n{EXAMPLES} hostile specs in {storm_s:.0f} s: rejected by the API server "
            f"{outcomes}, created {len(created)}, conditions on all {settle_s:.0f} s later: "
            f"{reasons}"
        )
        assert operator.alive and healthz(operator.port)
        assert conditions(models["valid"])["Ready"]["status"] == "True"
        assert _snapshot(ns) == before
        log = operator.log_path.read_text(errors="replace")
        assert "Traceback" not in log, f"tracebacks in {operator.log_path}"


def _snapshot(ns: Namespace) -> dict[str, Any]:
    """What 'unchanged' means for the valid model: its spec, generation, configHash and
    conditions, its children's resourceVersions, and its pod."""
    model = ns.models()["valid"]
    status = model["status"]
    children = {
        f"{kind}/{i.metadata.name}": i.metadata.resource_version
        for kind, items in ns.children().items()
        for i in items
        if (i.metadata.labels or {}).get("tritonvllm.io/model") == "valid"
    }
    pods = ns.core.list_namespaced_pod(ns.name, label_selector="app.kubernetes.io/instance=valid")
    return {
        "generation": model["metadata"]["generation"],
        "configHash": status["configHash"],
        "conditions": status["conditions"],
        "children": children,
        "pods": sorted(p.metadata.name for p in pods.items),
    }
