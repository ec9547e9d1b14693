"""Invalidation channel over Redis Cluster: classic pub/sub or sharded pub/sub?

Run: ``python bench/cluster_channel.py`` (needs ``redis-server`` and
``redis-cli`` on PATH: it starts a throwaway three-master cluster on
loopback, see ``tests/redis_topologies.py``, and kills it afterwards).

Times one message at a time (publish, then wait until the subscriber has
it; raw RESP2 connections, both ends in this process), ``--messages`` per
case, interleaved in rounds:

* ``PUBLISH`` to the subscriber's own node;
* ``PUBLISH`` to another node: the message crosses the cluster bus (what
  ``RedisCache`` does: its channel is on any node, a publisher on any other);
* ``SPUBLISH`` to the node that owns the channel's slot, the subscriber
  ``SSUBSCRIBE``\\ d there.

Prints the median and p99 of each, in microseconds.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from typing import Any

# bench/redis.py would shadow the redis package: drop this directory from sys.path,
# and reach the topology helpers in tests/.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _HERE]
sys.path.insert(0, os.path.join(os.path.dirname(_HERE), "tests"))

from redis.connection import Connection  # noqa: E402
from redis_topologies import ClusterSet  # noqa: E402

CHANNEL = "pat:invalidate"


def _connect(port: int) -> Any:
    conn = Connection(host="127.0.0.1", port=port, protocol=2, socket_timeout=5)
    conn.connect()
    return conn


def _subscribe(port: int, command: str) -> Any:
    conn = _connect(port)
    conn.send_command(command, CHANNEL)
    conn.read_response()
    return conn


def _one(publisher: Any, subscriber: Any, command: str) -> float:
    started = time.perf_counter()
    publisher.send_command(command, CHANNEL, "K00000000001")
    publisher.read_response()
    reply = subscriber.read_response()
    elapsed = time.perf_counter() - started
    assert reply[0] in (b"message", b"smessage"), reply
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=3000, help="messages per case (default 3000)")
    parser.add_argument("--rounds", type=int, default=6, help="interleaved rounds (default 6)")
    args = parser.parse_args()

    cluster = ClusterSet()
    try:
        cluster.start()
        owner = cluster.node_of_key(CHANNEL)  # a shard channel lives on its slot's master
        other = next(n for n in cluster.nodes if n is not owner)
        cases = {
            "PUBLISH, same node": (_connect(owner.port), _subscribe(owner.port, "SUBSCRIBE"), "PUBLISH"),
            "PUBLISH, across the bus": (_connect(other.port), _subscribe(owner.port, "SUBSCRIBE"), "PUBLISH"),
            "SPUBLISH, slot owner": (_connect(owner.port), _subscribe(owner.port, "SSUBSCRIBE"), "SPUBLISH"),
        }
        times: dict[str, list[float]] = {name: [] for name in cases}
        per_round = max(1, args.messages // args.rounds)
        for _ in range(args.rounds):
            for name, (publisher, subscriber, command) in cases.items():
                times[name] += [_one(publisher, subscriber, command) for _ in range(per_round)]
        print(f"{len(cluster.nodes)}-master cluster on loopback, {per_round * args.rounds} messages per case")
        for name, values in times.items():
            values.sort()
            p99 = values[min(len(values) - 1, round(0.99 * (len(values) - 1)))]
            print(f"  {name:<26} median {statistics.median(values) * 1e6:7.0f} µs   p99 {p99 * 1e6:7.0f} µs")
    finally:
        cluster.close()


if __name__ == "__main__":
    main()
