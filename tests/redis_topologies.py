"""Throwaway Redis topologies on loopback for the Sentinel and Cluster tests.

* :class:`SentinelSet`: a primary, one replica and three sentinels (quorum 2)
  with a short ``down-after-milliseconds`` and ``failover-timeout``, so a
  killed primary is replaced within a few seconds.
* :class:`ClusterSet`: three masters (no replicas) joined with
  ``redis-cli --cluster create``.

Every process keeps nothing on disk and runs in a temporary directory; every
wait is bounded. Use them through :func:`running_sentinels` and
:func:`running_cluster` (fixture bodies that skip, or fail under CI, when
``redis-server`` is missing).
"""

from __future__ import annotations

import random
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import redis

__all__ = ["ClusterSet", "Node", "SentinelSet", "running_cluster", "running_sentinels", "wait_until"]

SERVICE = "mymaster"


def wait_until(condition: Callable[[], bool], timeout: float, what: str, step: float = 0.02) -> float:
    """Poll ``condition`` until true; return the seconds it took; raise on timeout."""
    started = time.monotonic()
    while True:
        try:
            if condition():
                return time.monotonic() - started
        except (redis.RedisError, OSError):
            pass
        if time.monotonic() - started > timeout:
            raise TimeoutError(f"{what}: not within {timeout} s")
        time.sleep(step)


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_ports(count: int, bus: bool = False) -> list[int]:
    """``count`` free loopback ports (with ``bus``: ``port + 10000`` free too, for Cluster)."""
    chosen: list[int] = []
    for _ in range(2000):
        port = random.randint(20000, 29999)
        if port in chosen or not _port_free(port) or (bus and not _port_free(port + 10000)):
            continue
        chosen.append(port)
        if len(chosen) == count:
            return chosen
    raise RuntimeError("no free ports")


class Node:
    """One ``redis-server`` process (a data node or, with ``sentinel``, a sentinel)."""

    def __init__(self, port: int, workdir: Path, args: list[str], *, sentinel_conf: str | None = None) -> None:
        self.port = port
        self.dir = workdir / str(port)
        self.dir.mkdir()
        self.args = args
        self.sentinel_conf = sentinel_conf
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def client(self, timeout: float = 2.0) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=timeout, socket_connect_timeout=timeout)

    def start(self) -> None:
        if self.sentinel_conf is not None:
            conf = self.dir / "sentinel.conf"
            conf.write_text(self.sentinel_conf)
            command = ["redis-server", str(conf), "--sentinel"]
        else:
            command = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", *self.args]
            command += ["--save", "", "--appendonly", "no", "--dir", str(self.dir)]
        log = (self.dir / "log").open("ab")
        self.proc = subprocess.Popen(command, cwd=self.dir, stdout=log, stderr=subprocess.STDOUT)
        log.close()

    def wait_ready(self, timeout: float = 10.0) -> None:
        def answers() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server on {self.port} exited: {self.log()[-500:]}")
            with self.client() as client:
                return bool(client.ping())

        wait_until(answers, timeout, f"redis-server on port {self.port}", step=0.01)

    def kill(self) -> float:
        """SIGKILL (a crash); returns the ``time.monotonic()`` just before the signal."""
        at = time.monotonic()
        if self.proc is not None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
            self.proc = None
        return at

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log(self) -> str:
        path = self.dir / "log"
        return path.read_text(errors="replace") if path.exists() else ""


class _Topology:
    def __init__(self, prefix: str) -> None:
        self._tmp = tempfile.TemporaryDirectory(prefix=prefix)
        self.workdir = Path(self._tmp.name)
        self.nodes: list[Node] = []

    def close(self) -> None:
        for node in self.nodes:
            node.kill()
        self._tmp.cleanup()


class SentinelSet(_Topology):
    """A primary, a replica and three sentinels watching ``mymaster`` (quorum 2)."""

    def __init__(self, down_after_ms: int = 500, failover_timeout_ms: int = 2000) -> None:
        super().__init__("pat-sentinel-")
        primary_port, replica_port, *sentinel_ports = free_ports(5)
        self.primary = Node(primary_port, self.workdir, [])
        self.replica = Node(replica_port, self.workdir, ["--replicaof", "127.0.0.1", str(primary_port)])
        self.sentinels = [
            Node(
                port,
                self.workdir,
                [],
                sentinel_conf=(
                    f"port {port}\nbind 127.0.0.1\ndir {self.workdir / str(port)}\n"
                    f"sentinel monitor {SERVICE} 127.0.0.1 {primary_port} 2\n"
                    f"sentinel down-after-milliseconds {SERVICE} {down_after_ms}\n"
                    f"sentinel failover-timeout {SERVICE} {failover_timeout_ms}\n"
                    f"sentinel parallel-syncs {SERVICE} 1\n"
                ),
            )
            for port in sentinel_ports
        ]
        self.nodes = [self.primary, self.replica, *self.sentinels]

    @property
    def url(self) -> str:
        hosts = ",".join(s.address for s in self.sentinels)
        return f"redis+sentinel://{hosts}/{SERVICE}/0"

    def start(self) -> None:
        for node in self.nodes:
            node.start()
        for node in self.nodes:
            node.wait_ready()

        def replicating() -> bool:
            with self.replica.client() as client:
                return client.info("replication").get("master_link_status") == "up"

        wait_until(replicating, 10, "replica linked to the primary")

        # Sentinels find the replica through the primary and each other through its
        # hello channel (every 2 s): a failover needs both.
        def sentinels_agree() -> bool:
            for sentinel in self.sentinels:
                with sentinel.client() as client:
                    state = client.sentinel_master(SERVICE)
                if int(state["num-slaves"]) < 1 or int(state["num-other-sentinels"]) < 2:
                    return False
            return True

        wait_until(sentinels_agree, 15, "sentinels see the replica and each other", step=0.1)

    def master_address(self) -> tuple[str, int] | None:
        """The primary as the first answering sentinel names it."""
        for sentinel in self.sentinels:
            if not sentinel.alive:
                continue
            try:
                with sentinel.client(0.5) as client:
                    host, port = client.sentinel_get_master_addr_by_name(SERVICE)
                return str(host.decode() if isinstance(host, bytes) else host), int(port)
            except (redis.RedisError, OSError, TypeError):
                continue
        return None

    def node_at(self, port: int) -> Node:
        return next(n for n in (self.primary, self.replica) if n.port == port)


class ClusterSet(_Topology):
    """Three masters, no replicas; ``node_timeout_ms`` is ``cluster-node-timeout``."""

    def __init__(self, node_timeout_ms: int = 1000) -> None:
        super().__init__("pat-cluster-")
        self.nodes = [
            Node(
                port,
                self.workdir,
                [
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    f"nodes-{port}.conf",
                    "--cluster-node-timeout",
                    str(node_timeout_ms),
                ],
            )
            for port in free_ports(3, bus=True)
        ]

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(n.address for n in self.nodes)

    def start(self) -> None:
        for node in self.nodes:
            node.start()
        for node in self.nodes:
            node.wait_ready()
        subprocess.run(
            [
                "redis-cli",
                "--cluster",
                "create",
                *(n.address for n in self.nodes),
                "--cluster-replicas",
                "0",
                "--cluster-yes",
            ],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
            timeout=30,
        )
        wait_until(lambda: all(self.state(n) == "ok" for n in self.nodes), 15, "cluster_state:ok on every node")

    def state(self, node: Node) -> str:
        with node.client(0.5) as client:
            info = client.execute_command("CLUSTER INFO")
        if isinstance(info, dict):
            return str(info["cluster_state"])
        return str(info.decode().split("cluster_state:")[1].split()[0])

    def node_of_key(self, key: str) -> Node:
        """The master that holds ``key`` (asked of the first live node)."""
        live = next(n for n in self.nodes if n.alive)
        with live.client() as client:
            slot = int(client.execute_command("CLUSTER KEYSLOT", key))
            for start, end, (host, port, *_), *_ in client.execute_command("CLUSTER SLOTS"):
                if start <= slot <= end:
                    return next(n for n in self.nodes if n.port == int(port))
        raise LookupError(key)

    def subscribers(self, channel: str) -> dict[int, int]:
        """Per live node's port: its local subscribers to ``channel`` (classic pub/sub)."""
        counts: dict[int, int] = {}
        for node in self.nodes:
            if node.alive:
                with node.client(0.5) as client:
                    counts[node.port] = int(client.execute_command("PUBSUB", "NUMSUB", channel)[1])
        return counts


def _require_redis_server() -> None:
    from conftest import skip_or_fail

    for tool in ("redis-server", "redis-cli"):
        if shutil.which(tool) is None:
            skip_or_fail(f"{tool} is not on PATH")


def running_sentinels(**options: int) -> Iterator[SentinelSet]:
    """Fixture body: a started :class:`SentinelSet`, killed afterwards."""
    _require_redis_server()
    topology = SentinelSet(**options)
    try:
        topology.start()
        yield topology
    finally:
        topology.close()


def running_cluster(**options: int) -> Iterator[ClusterSet]:
    """Fixture body: a started :class:`ClusterSet`, killed afterwards."""
    _require_redis_server()
    topology = ClusterSet(**options)
    try:
        topology.start()
        yield topology
    finally:
        topology.close()
