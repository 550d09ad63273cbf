"""Multi-node groups: the rank and leader address a pod gets, and the membership protocol
between the leader (rank 0, in tritonserver) and its workers, over real sockets on 127.0.0.1."""

from __future__ import annotations

import socket
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "backend" / "tritonvllm"))
import pytest
from tritonvllm_backend import multinode
from tritonvllm_backend.multinode import (
    GroupLeader,
    GroupMember,
    GroupSettings,
    MultiNodeError,
    join_timeout,
    multinode_args,
)

from tests.operator_process import free_ports

ENGINE = {"model": "/models/m", "nnodes": 2, "pipeline_parallel_size": 2, "master_port": 29501}


def test_a_one_node_engine_has_no_group() -> None:
    args, settings = multinode_args({"model": "m"}, {"TRITONVLLM_NODE_RANK": "1"})
    assert settings is None and args == {"model": "m"}


def test_the_pods_environment_gives_rank_and_leader_over_model_json() -> None:
    engine = {**ENGINE, "master_addr": "10.0.0.9", "node_rank": 0}
    env = {"TRITONVLLM_NODE_RANK": "1", "TRITONVLLM_MASTER_ADDR": "g-0.g.ns.svc"}
    args, settings = multinode_args(engine, env)
    assert settings == GroupSettings(
        nnodes=2, node_rank=1, master_addr="g-0.g.ns.svc", master_port=29501
    )
    assert settings.join_address == "g-0.g.ns.svc:29502"
    assert args["node_rank"] == 1 and args["master_addr"] == "g-0.g.ns.svc"
    assert args["distributed_executor_backend"] == "mp"


def test_without_environment_the_leader_is_rank_0_on_vllms_default_address() -> None:
    _, settings = multinode_args(ENGINE, {})
    assert settings is not None
    assert (settings.node_rank, settings.master_addr) == (0, "127.0.0.1")


@pytest.mark.parametrize(
    ("engine", "env", "message"),
    [
        (ENGINE, {"TRITONVLLM_NODE_RANK": "2"}, "node rank 2 is not in 0..1"),
        (ENGINE, {"TRITONVLLM_NODE_RANK": "one"}, "TRITONVLLM_NODE_RANK must be an integer"),
        ({**ENGINE, "distributed_executor_backend": "ray"}, {}, "'ray' cannot span nodes"),
        ({**ENGINE, "data_parallel_size": 2}, {}, "data_parallel_size > 1 with nnodes > 1"),
        ({**ENGINE, "master_port": 70000}, {}, "master_port 70000 is not a port number"),
    ],
)
def test_wrong_group_settings_say_what_is_wrong(
    engine: dict[str, object], env: dict[str, str], message: str
) -> None:
    with pytest.raises(MultiNodeError, match=message):
        multinode_args(engine, env)


def test_join_timeout_parameter() -> None:
    assert join_timeout(None) == multinode.DEFAULT_JOIN_TIMEOUT_S
    assert join_timeout("2.5") == 2.5
    for bad in ("0", "-1", "soon"):
        with pytest.raises(MultiNodeError, match="MULTINODE_JOIN_TIMEOUT_S must be a positive"):
            join_timeout(bad)


class Lost:
    """Records the leader's on_lost calls."""

    def __init__(self) -> None:
        self.messages: list[str] = []
        self.called = threading.Event()

    def __call__(self, message: str) -> None:
        self.messages.append(message)
        self.called.set()


def group_settings(nnodes: int, rank: int = 0) -> GroupSettings:
    while True:  # master_port + 1 (the membership port) must be free
        (port,) = free_ports(1)
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
        return GroupSettings(
            nnodes=nnodes, node_rank=rank, master_addr="127.0.0.1", master_port=port
        )


@pytest.fixture
def lost() -> Lost:
    return Lost()


@pytest.fixture
def leader(lost: Lost) -> Iterator[GroupLeader]:
    group = GroupLeader(group_settings(3), "127.0.0.1", lost)
    yield group
    group.close()


def member(leader: GroupLeader, rank: int, nnodes: int = 3) -> GroupMember:
    settings = GroupSettings(nnodes, rank, "127.0.0.1", leader.settings.master_port)
    return GroupMember.join(settings, timeout=5)


def test_ranks_that_never_join_are_named_when_the_wait_ends(leader: GroupLeader) -> None:
    joined = member(leader, 2)
    with pytest.raises(MultiNodeError) as err:
        leader.wait_for_members(0.3)
    assert str(err.value).startswith("rank 1 of the 3-node group did not join within 0.3 s")
    assert f"127.0.0.1:{leader.settings.join_port}" in str(err.value)
    joined.close()


def test_none_joined_names_every_rank(leader: GroupLeader) -> None:
    with pytest.raises(MultiNodeError, match="ranks 1, 2 of the 3-node group did not join"):
        leader.wait_for_members(0.1)


def test_a_worker_that_leaves_the_formed_group_is_reported_once(
    leader: GroupLeader, lost: Lost
) -> None:
    workers = [member(leader, 1), member(leader, 2)]
    leader.wait_for_members(5)
    workers[1].close()
    assert lost.called.wait(10)
    assert lost.messages[0].startswith("rank 2 of the 3-node group (127.0.0.1:")
    assert leader.lost == lost.messages[0]
    workers[0].close()
    assert leader.lost == lost.messages[0]


def _rejoin(leader: GroupLeader, rank: int) -> GroupMember:
    """A restarted worker's join: refused while the leader has not yet seen the old connection
    close ("already joined"), it comes back (its container restarts) until admitted."""
    deadline = time.monotonic() + 10
    while True:
        try:
            return member(leader, rank)
        except MultiNodeError as err:
            if "already joined" not in str(err) or time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def test_a_worker_that_leaves_before_the_group_formed_may_join_again(
    leader: GroupLeader, lost: Lost
) -> None:
    member(leader, 1).close()
    workers = [_rejoin(leader, 1), member(leader, 2)]
    leader.wait_for_members(5)
    assert leader.lost is None and not lost.called.is_set()
    for worker in workers:
        worker.close()


def test_a_silent_worker_counts_as_gone(
    monkeypatch: pytest.MonkeyPatch, leader: GroupLeader, lost: Lost
) -> None:
    monkeypatch.setattr(multinode, "HEARTBEAT_TIMEOUT_S", 0.5)
    monkeypatch.setattr(multinode, "HEARTBEAT_S", 0.05)  # rank 2 beats well within it
    with socket.create_connection(("127.0.0.1", leader.settings.join_port)) as sock:
        sock.sendall(b"join 1 3\n")
        worker = member(leader, 2)
        leader.wait_for_members(5)
        assert lost.called.wait(10)  # rank 1 sent no heartbeat
    assert lost.messages[0].startswith("rank 1 of the 3-node group")
    worker.close()


@pytest.mark.parametrize(
    ("rank", "nnodes", "reason"),
    [
        (1, 2, "rank 1 of 2 nodes does not fit a 3-node group"),
        (0, 3, "rank 0 of 3 nodes does not fit a 3-node group"),
    ],
)
def test_a_worker_of_another_shape_is_refused(
    leader: GroupLeader, rank: int, nnodes: int, reason: str
) -> None:
    with pytest.raises(MultiNodeError, match=f"refused rank {rank}: {reason}"):
        member(leader, rank, nnodes)


def test_a_second_worker_for_a_rank_is_refused(leader: GroupLeader) -> None:
    first = member(leader, 1)
    with pytest.raises(MultiNodeError, match="refused rank 1: rank 1 already joined from"):
        member(leader, 1)
    first.close()


def test_a_worker_cannot_rejoin_a_running_engine(leader: GroupLeader) -> None:
    workers = [member(leader, 1), member(leader, 2)]
    leader.wait_for_members(5)
    workers[0].close()
    with pytest.raises(MultiNodeError, match="the group's engine already runs"):
        member(leader, 1)
    workers[1].close()


def test_workers_learn_that_their_leader_is_gone(leader: GroupLeader) -> None:
    worker = member(leader, 1)
    assert not worker.leader_gone.is_set()
    leader.close()
    assert worker.leader_gone.wait(10)


def test_a_worker_gives_up_on_a_leader_that_never_listens() -> None:
    settings = group_settings(2, rank=1)
    with pytest.raises(MultiNodeError, match=r"did not answer within 0\.2 s"):
        GroupMember.join(settings, timeout=0.2)


def test_a_busy_membership_port_fails_with_its_address(lost: Lost) -> None:
    settings = group_settings(2)
    with (
        socket.create_server(("127.0.0.1", settings.join_port)),
        pytest.raises(
            MultiNodeError, match=r"cannot listen on 127\.0\.0\.1:\d+ \(master_port \+ 1\)"
        ),
    ):
        GroupLeader(settings, "127.0.0.1", lost)


def test_the_worker_takes_only_engine_arguments_from_model_json(tmp_path: Path) -> None:
    from tritonvllm_backend.worker import engine_arguments

    model_json = tmp_path / "model.json"
    model_json.write_text(
        '{"model": "m", "nnodes": 2, "chat_template": "t", "openai": {"api_key": "k"}}'
    )
    accepted = {"model", "nnodes", "openai"}  # "openai" is never an engine argument
    assert engine_arguments(model_json, accepted) == {"model": "m", "nnodes": 2}
