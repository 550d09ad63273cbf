"""Multi-node engines: one vLLM engine spread over the pods (nodes) of a group.

Rank 0 runs tritonserver with this backend, whose engine is the group's rank 0; ranks 1..N-1 run
``python3 -m tritonvllm_backend.worker`` (vLLM's headless workers, worker.py). vLLM joins them
itself (torch.distributed on ``master_addr:master_port``). Beside that, each worker holds a
membership connection to the leader on ``master_port + 1``, with heartbeats both ways, because
vLLM's leader cannot say which rank it is waiting for (torch only counts clients, for 30 minutes)
and notices a lost worker only on its next step, or never while idle. With it the leader fails a
load naming the ranks that did not join in time, and stops the engine as soon as a worker goes;
a worker exits as soon as its leader goes, so that the whole group is restarted.

Protocol, one line each: the worker sends ``join <rank> <nnodes>``, the leader answers ``ok`` or
``refused <reason>``; then both send ``beat`` every HEARTBEAT_S. A connection that closes or stays
silent for HEARTBEAT_TIMEOUT_S is a member gone.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

NODE_RANK_ENV = "TRITONVLLM_NODE_RANK"
MASTER_ADDR_ENV = "TRITONVLLM_MASTER_ADDR"
DEFAULT_MASTER_ADDR = "127.0.0.1"  # vLLM's defaults
DEFAULT_MASTER_PORT = 29501
HEARTBEAT_S = 1.0
HEARTBEAT_TIMEOUT_S = 10.0
DEFAULT_JOIN_TIMEOUT_S = 600.0


class MultiNodeError(Exception):
    """A multi-node setting is wrong, or the group did not form or fell apart."""


@dataclass(frozen=True)
class GroupSettings:
    """Where this process stands in its group."""

    nnodes: int
    node_rank: int
    master_addr: str
    master_port: int

    @property
    def join_port(self) -> int:
        """The leader's membership port."""
        return self.master_port + 1

    @property
    def join_address(self) -> str:
        return f"{self.master_addr}:{self.join_port}"


def multinode_args(
    engine: Mapping[str, Any], environ: Mapping[str, str]
) -> tuple[dict[str, Any], GroupSettings | None]:
    """model.json's engine arguments with this pod's rank and leader address, and the group.

    One model.json serves every pod of every group (one ConfigMap), so the rank and the
    leader's address come from the environment (NODE_RANK_ENV, MASTER_ADDR_ENV) when set there,
    else from model.json (``node_rank``, ``master_addr``). None for a one-node engine.
    """
    args = dict(engine)
    nnodes = _integer(args.get("nnodes", 1), "nnodes")
    if nnodes <= 1:
        return args, None
    rank_text = environ.get(NODE_RANK_ENV)
    rank = _integer(
        args.get("node_rank", 0) if rank_text is None else rank_text,
        NODE_RANK_ENV if rank_text is not None else "node_rank",
    )
    if not 0 <= rank < nnodes:
        raise MultiNodeError(f"node rank {rank} is not in 0..{nnodes - 1} (nnodes is {nnodes})")
    backend = args.get("distributed_executor_backend") or "mp"
    if backend != "mp":
        raise MultiNodeError(
            f"distributed_executor_backend {backend!r} cannot span nodes here: a multi-node "
            "engine runs on vLLM's multiprocessing executor ('mp', the default)"
        )
    if _integer(args.get("data_parallel_size", 1), "data_parallel_size") > 1:
        raise MultiNodeError(
            "data_parallel_size > 1 with nnodes > 1 is not served: one model.json is one engine "
            "(tensor x pipeline parallel) over its group; scale with replicas instead"
        )
    settings = GroupSettings(
        nnodes=nnodes,
        node_rank=rank,
        master_addr=environ.get(MASTER_ADDR_ENV) or args.get("master_addr") or DEFAULT_MASTER_ADDR,
        master_port=_integer(args.get("master_port", DEFAULT_MASTER_PORT), "master_port"),
    )
    if not 0 < settings.master_port < 65535:
        raise MultiNodeError(f"master_port {settings.master_port} is not a port number")
    args.update(
        node_rank=rank,
        master_addr=settings.master_addr,
        master_port=settings.master_port,
        distributed_executor_backend="mp",
    )
    return args, settings


def join_timeout(value: str | None) -> float:
    """The MULTINODE_JOIN_TIMEOUT_S parameter: seconds, positive; unset is the default."""
    if value is None or not str(value).strip():
        return DEFAULT_JOIN_TIMEOUT_S
    try:
        seconds = float(value)
    except ValueError:
        seconds = 0.0
    if not seconds > 0:
        raise MultiNodeError(f"MULTINODE_JOIN_TIMEOUT_S must be a positive number, not {value!r}")
    return seconds


def ranks_text(ranks: list[int]) -> str:
    return ("rank " if len(ranks) == 1 else "ranks ") + ", ".join(str(r) for r in ranks)


class _Peer:
    """One membership connection: lines in, heartbeats out."""

    def __init__(self, sock: socket.socket, name: str) -> None:
        sock.settimeout(HEARTBEAT_TIMEOUT_S)
        self.sock = sock
        self.name = name
        self._reader = sock.makefile("r", encoding="utf-8", newline="\n")
        self._send_lock = threading.Lock()

    def send(self, line: str) -> bool:
        try:
            with self._send_lock:
                self.sock.sendall(f"{line}\n".encode())
            return True
        except OSError:
            return False

    def read(self) -> str | None:
        """The next line; None when the connection closed or stayed silent too long."""
        try:
            line = self._reader.readline()
        except (OSError, ValueError):
            return None
        return line.strip() if line else None

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(OSError):
            self.sock.close()


class GroupLeader:
    """Rank 0's side: who joined, who left.

    ``on_lost`` is called once, on a thread of this class, with a message naming the first rank
    that left after the group was complete (``wait_for_members`` returned).
    """

    def __init__(self, settings: GroupSettings, host: str, on_lost: Callable[[str], None]) -> None:
        self.settings = settings
        self._on_lost = on_lost
        self._lock = threading.Condition()
        self._members: dict[int, _Peer] = {}
        self._complete = False
        self._lost: str | None = None
        self._closed = threading.Event()
        try:
            self._server = socket.create_server((host, settings.join_port), reuse_port=False)
        except OSError as err:
            raise MultiNodeError(
                f"the group's membership port cannot listen on {host}:{settings.join_port} "
                f"(master_port + 1): {err.strerror or err}"
            ) from None
        self._threads = [
            threading.Thread(target=self._accept, name="tritonvllm-group-accept", daemon=True),
            threading.Thread(target=self._beat, name="tritonvllm-group-beat", daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    @property
    def lost(self) -> str | None:
        return self._lost

    def wait_for_members(self, timeout: float) -> None:
        """Return once ranks 1..N-1 all joined; raise MultiNodeError naming the missing ones."""
        expected = set(range(1, self.settings.nnodes))
        deadline = time.monotonic() + timeout
        with self._lock:
            while not expected <= self._members.keys():
                left = deadline - time.monotonic()
                if left <= 0 or self._closed.is_set():
                    missing = sorted(expected - self._members.keys())
                    raise MultiNodeError(
                        f"{ranks_text(missing)} of the {self.settings.nnodes}-node group did "
                        f"not join within {timeout:g} s (a worker joins at "
                        f"{self.settings.join_address}, then at vLLM's rendezvous on "
                        f"{self.settings.master_addr}:{self.settings.master_port})"
                    )
                self._lock.wait(min(left, 1.0))
            self._complete = True

    def close(self) -> None:
        """Stop listening and drop every member (their workers then exit)."""
        self._closed.set()
        with contextlib.suppress(OSError):
            self._server.close()
        with self._lock:
            members = list(self._members.values())
            self._members.clear()
        for peer in members:
            peer.close()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                sock, address = self._server.accept()
            except OSError:
                return
            peer = _Peer(sock, f"{address[0]}:{address[1]}")
            threading.Thread(
                target=self._serve, args=(peer,), name="tritonvllm-group-member", daemon=True
            ).start()

    def _serve(self, peer: _Peer) -> None:
        rank = self._admit(peer)
        if rank is None:
            peer.close()
            return
        while peer.read() is not None and not self._closed.is_set():
            pass
        peer.close()
        with self._lock:
            if self._members.get(rank) is not peer:
                return  # dropped by close()
            del self._members[rank]
            if not self._complete or self._lost is not None:
                return  # not yet part of a running engine: it may join again
            self._lost = (
                f"rank {rank} of the {self.settings.nnodes}-node group ({peer.name}) left: its "
                f"connection closed or sent nothing for {HEARTBEAT_TIMEOUT_S:g} s"
            )
        self._on_lost(self._lost)

    def _admit(self, peer: _Peer) -> int | None:
        """The rank a new connection joins as, or None (refused, with the reason sent)."""
        words = (peer.read() or "").split()
        try:
            rank, nnodes = int(words[1]), int(words[2])
            if words[0] != "join":
                raise ValueError(words[0])
        except (IndexError, ValueError):
            peer.send("refused expected 'join <rank> <nnodes>'")
            return None
        with self._lock:
            if nnodes != self.settings.nnodes or not 0 < rank < nnodes:
                size = self.settings.nnodes
                reason = f"rank {rank} of {nnodes} nodes does not fit a {size}-node group"
            elif self._complete:
                reason = "the group's engine already runs; it is restarted as a whole"
            elif rank in self._members:
                reason = f"rank {rank} already joined from {self._members[rank].name}"
            else:
                self._members[rank] = peer
                self._lock.notify_all()
                reason = ""
        if reason:
            peer.send(f"refused {reason}")
            return None
        peer.send("ok")
        return rank

    def _beat(self) -> None:
        while not self._closed.wait(HEARTBEAT_S):
            with self._lock:
                members = list(self._members.values())
            for peer in members:
                peer.send("beat")


class GroupMember:
    """A worker's side: joined at the leader, and told when the leader is gone."""

    def __init__(self, peer: _Peer) -> None:
        self._peer = peer
        self.leader_gone = threading.Event()
        for target in (self._read, self._beat):
            threading.Thread(target=target, name="tritonvllm-group", daemon=True).start()

    @classmethod
    def join(cls, settings: GroupSettings, timeout: float) -> GroupMember:
        """Connect to the leader (retrying until ``timeout``: it may start later) and join."""
        deadline = time.monotonic() + timeout
        address = (settings.master_addr, settings.join_port)
        while True:
            try:
                sock = socket.create_connection(address, timeout=HEARTBEAT_TIMEOUT_S)
                break
            except OSError as err:
                if time.monotonic() > deadline:
                    raise MultiNodeError(
                        f"the leader at {settings.join_address} did not answer within "
                        f"{timeout:g} s: {err}"
                    ) from None
                time.sleep(HEARTBEAT_S)
        peer = _Peer(sock, settings.join_address)
        peer.send(f"join {settings.node_rank} {settings.nnodes}")
        answer = peer.read()
        if answer != "ok":
            peer.close()
            reason = "no answer" if answer is None else answer.removeprefix("refused ")
            raise MultiNodeError(
                f"the leader at {settings.join_address} refused rank {settings.node_rank}: {reason}"
            )
        return cls(peer)

    def close(self) -> None:
        self._peer.close()

    def _read(self) -> None:
        while self._peer.read() is not None:
            pass
        self.leader_gone.set()

    def _beat(self) -> None:
        while not self.leader_gone.wait(HEARTBEAT_S):
            if not self._peer.send("beat"):
                self.leader_gone.set()


def _integer(value: Any, name: str) -> int:
    try:
        if isinstance(value, bool):
            raise ValueError(value)
        return int(value)
    except (TypeError, ValueError):
        raise MultiNodeError(f"{name} must be an integer, not {value!r}") from None


def kill_engine_processes() -> list[int]:
    """SIGKILL this process's descendants, the engine's (EngineCore and its workers).

    A group that lost a member cannot step any more (a pipeline stage or a tensor shard is
    gone) and vLLM's own leader would wait for it: killing its processes makes vLLM's engine
    dead at once (its ``errored`` flag, or a failed start), and the backend's dead-engine path
    takes it from there.
    """
    import psutil

    killed = []
    for child in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.Error):
            child.kill()
            killed.append(child.pid)
    return killed
