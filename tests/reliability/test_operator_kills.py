"""The operator SIGKILLed at random moments while models are created, updated and deleted: after
a final restart every remaining model converges, with exactly one ConfigMap, Deployment and
Service each, owned by it, and nothing left of the deleted ones.

CI: 40 models, 3 kills. RELIABILITY_LONG=1 (make chaos): 200 models, 8 kills. The plan of
operations and kill points comes from a seeded RNG: the seed is printed (CHAOS_SEED=N repeats a
run's plan; the kill moments also depend on timing).
"""

from __future__ import annotations

import os
import random
import time
from pathlib import Path
from typing import Any

from kubernetes import client

from tests.operator_process import OperatorProcess
from tests.reliability.conftest import LONG
from tests.reliability.helpers import (
    GROUP,
    PLURAL,
    VERSION,
    Namespace,
    body,
    gpu_nodes,
    wait_empty,
    wait_for,
)

MODELS, KILLS = (200, 8) if LONG else (40, 3)
MAX_MODEL_LENS = [1024, 2048, 4096, 8192]


def _spec(rng: random.Random, product: str) -> dict[str, Any]:
    return {
        "model": "meta-llama/Llama-3.1-8B-Instruct",
        "tensorParallelSize": 1,
        "gpu": {"product": product},
        # Mostly scaled to zero: the pods are not what is tested, and the machine has 2 cores.
        "replicas": rng.choice([0, 0, 0, 1]),
        "engineArgs": {"max_model_len": rng.choice(MAX_MODEL_LENS)},
    }


class Chaos:
    """Carries out the plan and keeps the expected state: name -> spec of every live model."""

    def __init__(self, ns: Namespace, operator: OperatorProcess, rng: random.Random, product: str):
        self.ns, self.operator, self.rng, self.product = ns, operator, rng, product
        self.expected: dict[str, dict[str, Any]] = {}
        self.deleted_while_down: list[str] = []
        self.counts = {"create": 0, "engine": 0, "replicas": 0, "delete": 0, "recreate": 0}
        self.next_index = 0

    def create(self, name: str | None = None) -> None:
        if name is None:
            name, self.next_index = f"m{self.next_index:03d}", self.next_index + 1
        spec = _spec(self.rng, self.product)
        self.ns.custom.create_namespaced_custom_object(
            GROUP, VERSION, self.ns.name, PLURAL, body(name, spec)
        )
        self.expected[name] = spec

    def patch(self, name: str, **change: Any) -> None:
        self.ns.custom.patch_namespaced_custom_object(
            GROUP, VERSION, self.ns.name, PLURAL, name, {"spec": change}
        )
        self.expected[name].update(change)

    def delete(self, name: str) -> None:
        self.ns.custom.delete_namespaced_custom_object(GROUP, VERSION, self.ns.name, PLURAL, name)
        del self.expected[name]
        if not self.operator.alive:
            self.deleted_while_down.append(name)

    def step(self, total: int, force_delete: bool = False) -> None:
        """One random operation."""
        live = sorted(self.expected)
        if force_delete and live:
            action = "delete"
        elif self.next_index < total and (len(live) < 3 or self.rng.random() < 0.55):
            action = "create"
        else:
            action = self.rng.choice(["engine", "engine", "replicas", "delete", "recreate"])
        if action == "create":
            self.create()
        else:
            name = self.rng.choice(live)
            if action == "recreate" and not self.operator.alive:
                action = "engine"  # its deletion would wait for the operator's finalizer
            if action == "engine":
                current = self.expected[name]["engineArgs"]["max_model_len"]
                new = self.rng.choice([v for v in MAX_MODEL_LENS if v != current])
                self.patch(name, engineArgs={"max_model_len": new})
            elif action == "replicas":
                self.patch(name, replicas=1 - self.expected[name]["replicas"])
            elif action == "delete":
                self.delete(name)
            else:  # the same name again: a new uid, children must follow the new owner
                self.delete(name)
                wait_for(lambda: name not in self.ns.models(), 30, f"{name} to go")
                self.create(name)
        self.counts[action] += 1


def test_sigkill_at_random_moments_converges_without_orphans_or_duplicates(
    api_client: client.ApiClient, namespace: str, operator: OperatorProcess
) -> None:
    seed = int(os.environ.get("CHAOS_SEED") or random.SystemRandom().randrange(2**32))
    print(f"\nchaos seed: {seed} (CHAOS_SEED={seed} repeats the plan)")
    rng = random.Random(seed)
    ns = Namespace(api_client, namespace)
    t0 = time.monotonic()
    # Enough GPUs for every model at replicas 1, on nodes no other test uses.
    with gpu_nodes(2 if LONG else 1, gpus=110 if LONG else 40) as product:
        chaos = Chaos(ns, operator, rng, product)
        total_steps = 2 * MODELS
        kill_at = set(rng.sample(range(total_steps // 8, total_steps), KILLS))
        restart_at: int | None = None
        kills = 0
        operator.start()
        for i in range(total_steps):
            chaos.step(MODELS, force_delete=restart_at is not None and i == restart_at - 1)
            if i in kill_at and operator.alive:
                time.sleep(rng.uniform(0, 3))  # let it get into some reconciles
                operator.kill()
                kills += 1
                restart_at = i + rng.randint(2, 10)
                print(f"  step {i}: SIGKILL; {len(chaos.expected)} models live")
            elif restart_at is not None and i >= restart_at:
                operator.start()
                restart_at = None
            time.sleep(rng.uniform(0, 0.05))
        ops_s = time.monotonic() - t0
        # The final restart: kill once more at a random moment while it converges.
        if not operator.alive:
            operator.start()
        time.sleep(rng.uniform(0, 3))
        operator.kill()
        kills += 1
        for name in rng.sample(sorted(chaos.expected), 3):
            chaos.delete(name)  # while it is down: they wait for its finalizer
        operator.start()
        t_final = time.monotonic()
        wait_empty(
            lambda: ns.problems(chaos.expected, ready=True),
            300 if LONG else 120,
            "every model to converge",
        )
        converge_s = time.monotonic() - t_final
        # Nothing the operator would still write: a converged pass is quiet (no new
        # resourceVersions on models or children for a while).
        before = _versions(ns)
        time.sleep(12)
        assert _versions(ns) == before
    print(
        f"  {MODELS} models, {kills} kills, ops {chaos.counts}, "
        f"{len(chaos.expected)} remain, {len(chaos.deleted_while_down)} deleted while down; "
        f"operations {ops_s:.0f} s, converged {converge_s:.0f} s after the last restart"
    )
    assert operator.alive
    _no_tracebacks(operator.log_path)


def _versions(ns: Namespace) -> dict[str, str]:
    versions = {f"model/{n}": m["metadata"]["resourceVersion"] for n, m in ns.models().items()}
    for kind, items in ns.children().items():
        if kind == "Deployment":
            continue  # kcm writes status (e.g. observedGeneration) on its own schedule
        versions.update({f"{kind}/{i.metadata.name}": i.metadata.resource_version for i in items})
    return versions


def _no_tracebacks(log: Path) -> None:
    text = log.read_text(errors="replace")
    assert "Traceback" not in text, f"tracebacks in {log}"
