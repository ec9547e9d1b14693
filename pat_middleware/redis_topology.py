"""Where the Redis cache connects: one server, the primary Sentinel names, or a Cluster.

URLs (``RedisCache(url)``, ``PATAuth.from_url(cache_url=...)``, ``PAT_CACHE_URL``)::

    redis://[[user]:password@]host[:port][/db]        one server (redis-py's syntax:
                                                      rediss:// for TLS, unix://, ?options)
    redis+sentinel://[[user]:password@]host[:port][,host[:port]...]/service[/db][?options]
    redis+cluster://[[user]:password@]host[:port][,host[:port]...][/][?options]

``rediss+sentinel://`` and ``rediss+cluster://`` use TLS (to the sentinels
too). Sentinel ports default to 26379, cluster ports to 6379; IPv6
addresses go in brackets. The user and password are the data nodes'; give
sentinels that require their own with ``?sentinel_password=...`` (and
``sentinel_username=...``). Percent-encode reserved characters in them.

* **Sentinel**: every new connection asks the sentinels for the current
  primary (redis-py's ``Sentinel.master_for``), and so does the
  invalidation channel on every reconnect, so after a failover the cache
  and the channel move to the new primary by themselves.
* **Cluster**: redis-py's ``RedisCluster`` routes each command by its keys'
  slot (all of one token id's keys share a slot: they are hash-tagged).
  Invalidations use classic ``PUBLISH``/``SUBSCRIBE``, which the cluster
  propagates to every node: the channel connects to any one node (the
  nodes are tried in turn, from a random one, whenever it reconnects) and
  keeps working while the cluster refuses keyed commands (``CLUSTERDOWN``).
"""

from __future__ import annotations

import secrets
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import redis
import redis.asyncio
import redis.asyncio.cluster
import redis.asyncio.sentinel
import redis.cluster
import redis.sentinel
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import NoBackoff
from redis.connection import AbstractConnection, Connection, SSLConnection
from redis.retry import Retry

from pat_middleware.redis_clients import Clients, ConnectionMaker, SingleServer, Topology, connection_options

__all__ = ["ClusterTopology", "SentinelTopology", "topology_from_url"]

Address = tuple[str, int]

# redis-py leaves these untyped.
_Sentinel: Any = redis.sentinel.Sentinel
_AsyncSentinel: Any = redis.asyncio.sentinel.Sentinel
_ClusterNode: Any = redis.cluster.ClusterNode
_AsyncClusterNode: Any = redis.asyncio.cluster.ClusterNode

SENTINEL_SCHEMES = {"redis+sentinel": False, "rediss+sentinel": True}
CLUSTER_SCHEMES = {"redis+cluster": False, "rediss+cluster": True}


@dataclass(frozen=True)
class _Credentials:
    username: str | None = None
    password: str | None = None
    ssl: bool = False

    def options(self) -> dict[str, Any]:
        options: dict[str, Any] = {"username": self.username, "password": self.password}
        if self.ssl:
            options["ssl"] = True
        return options


def _connection(address: Address, credentials: _Credentials, socket_timeout: float) -> ConnectionMaker:
    """A maker of plain connections to ``address`` (no retries, RESP2)."""
    connection_class: type[AbstractConnection] = SSLConnection if credentials.ssl else Connection
    kwargs = {
        "host": address[0],
        "port": address[1],
        "username": credentials.username,
        "password": credentials.password,
        "retry": Retry(NoBackoff(), 0),
        **connection_options(socket_timeout),
    }
    return lambda: connection_class(**kwargs)


class SentinelTopology:
    """The primary that Redis Sentinel names for ``service``.

    ``sentinels`` are (host, port) pairs; ``username``/``password`` are the
    data nodes', ``sentinel_username``/``sentinel_password`` the sentinels'
    own (when they require one); ``ssl`` uses TLS everywhere.
    """

    cluster = False

    def __init__(
        self,
        sentinels: Sequence[Address],
        service: str,
        *,
        db: int = 0,
        username: str | None = None,
        password: str | None = None,
        sentinel_username: str | None = None,
        sentinel_password: str | None = None,
        ssl: bool = False,
    ) -> None:
        if not sentinels:
            raise ValueError("at least one sentinel address is needed")
        if not service:
            raise ValueError("the Sentinel service (master group) name is needed")
        self.sentinels = [(str(host), int(port)) for host, port in sentinels]
        self.service = service
        self.db = db
        self.credentials = _Credentials(username, password, ssl)
        self.sentinel_credentials = _Credentials(sentinel_username, sentinel_password, ssl)
        self._managers: list[Any] = []  # one redis.sentinel.Sentinel, once made
        self._async_managers: dict[int, Any] = {}  # per asyncio client: its Sentinel
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        hosts = ",".join(f"{host}:{port}" for host, port in self.sentinels)
        return f"SentinelTopology({hosts}/{self.service}/{self.db})"

    def _manager(self, socket_timeout: float) -> Any:
        with self._lock:
            if not self._managers:
                options = {**connection_options(socket_timeout), "retry": Retry(NoBackoff(), 0)}
                self._managers.append(
                    _Sentinel(self.sentinels, sentinel_kwargs={**options, **self.sentinel_credentials.options()})
                )
            return self._managers[0]

    def sync_client(self, socket_timeout: float) -> redis.Redis:
        client: redis.Redis = self._manager(socket_timeout).master_for(
            self.service,
            db=self.db,
            retry=Retry(NoBackoff(), 0),
            **connection_options(socket_timeout),
            **self.credentials.options(),
        )
        return client

    def async_client(self, socket_timeout: float) -> redis.asyncio.Redis:
        options = {**connection_options(socket_timeout), "retry": AsyncRetry(NoBackoff(), 0)}
        manager = _AsyncSentinel(self.sentinels, sentinel_kwargs={**options, **self.sentinel_credentials.options()})
        client: redis.asyncio.Redis = manager.master_for(
            self.service, redis_class=redis.asyncio.Redis, db=self.db, **options, **self.credentials.options()
        )
        self._async_managers[id(client)] = manager
        return client

    def channel_server(self, clients: Clients) -> ConnectionMaker:
        # Asked on every reconnect of the channel: the sentinels name the primary now.
        address = self._manager(clients.socket_timeout).discover_master(self.service)
        return _connection((str(address[0]), int(address[1])), self.credentials, clients.socket_timeout)

    def close(self) -> None:
        with self._lock:
            managers, self._managers = self._managers, []
        for manager in managers:
            for sentinel in manager.sentinels:
                sentinel.close()

    async def aclose(self, client: Any) -> None:
        await client.aclose()
        manager = self._async_managers.pop(id(client), None)
        if manager is not None:
            for sentinel in manager.sentinels:
                await sentinel.aclose()


class ClusterTopology:
    """A Redis Cluster reached through any of ``nodes`` ((host, port) pairs)."""

    cluster = True

    def __init__(
        self,
        nodes: Sequence[Address],
        *,
        username: str | None = None,
        password: str | None = None,
        ssl: bool = False,
    ) -> None:
        if not nodes:
            raise ValueError("at least one cluster node address is needed")
        self.nodes = [(str(host), int(port)) for host, port in nodes]
        self.credentials = _Credentials(username, password, ssl)
        self._next = secrets.randbelow(len(self.nodes))  # processes spread their channels

    def __repr__(self) -> str:
        return "ClusterTopology(" + ",".join(f"{host}:{port}" for host, port in self.nodes) + ")"

    def _options(self, socket_timeout: float) -> dict[str, Any]:
        # require_full_coverage=False: the client still starts, and serves the
        # slots that have a master, while a master is down.
        options = {**connection_options(socket_timeout), **self.credentials.options()}
        options["require_full_coverage"] = False
        if int(redis.__version__.split(".")[0]) < 6:  # before 6.0, retries were set apart from ``retry``
            options["cluster_error_retry_attempts"] = 0
        return options

    def sync_client(self, socket_timeout: float) -> redis.cluster.RedisCluster:
        return redis.cluster.RedisCluster(
            startup_nodes=[_ClusterNode(host, port) for host, port in self.nodes],
            retry=Retry(NoBackoff(), 0),
            **self._options(socket_timeout),
        )

    def async_client(self, socket_timeout: float) -> redis.asyncio.cluster.RedisCluster:
        return redis.asyncio.cluster.RedisCluster(
            startup_nodes=[_AsyncClusterNode(host, port) for host, port in self.nodes],
            retry=AsyncRetry(NoBackoff(), 0),
            **self._options(socket_timeout),
        )

    def channel_server(self, clients: Clients) -> ConnectionMaker:
        # Each reconnect tries the next node: the configured ones and any the
        # client has discovered since.
        known = list(self.nodes)
        client = clients.made_sync
        if client is not None:
            try:
                discovered = [(str(node.host), int(node.port)) for node in client.get_nodes()]
            except Exception:  # a client between two layouts: the configured nodes will do
                discovered = []
            known += [address for address in discovered if address not in known]
        address = known[self._next % len(known)]
        self._next += 1
        return _connection(address, self.credentials, clients.socket_timeout)

    def close(self) -> None:
        pass

    async def aclose(self, client: Any) -> None:
        await client.aclose()


def _addresses(hosts: str, default_port: int) -> list[Address]:
    addresses = []
    for part in hosts.split(","):
        part = part.strip()
        if not part:
            continue
        if part.startswith("["):  # [IPv6]:port
            host, _, rest = part[1:].partition("]")
            port = rest[1:] if rest.startswith(":") else ""
        else:
            host, _, port = part.rpartition(":") if ":" in part else (part, "", "")
        if not host:
            raise ValueError(f"bad host in Redis URL: {part!r}")
        try:
            addresses.append((host, int(port) if port else default_port))
        except ValueError:
            raise ValueError(f"bad port in Redis URL: {part!r}") from None
    if not addresses:
        raise ValueError("the Redis URL names no host")
    return addresses


def _query(query: str, allowed: set[str]) -> dict[str, str]:
    values = {key: vals[-1] for key, vals in parse_qs(query, keep_blank_values=True).items()}
    unknown = sorted(set(values) - allowed)
    if unknown:
        raise ValueError(f"unsupported Redis URL option(s): {', '.join(unknown)}")
    return values


def topology_from_url(url: str) -> Topology:
    """The :class:`~pat_middleware.redis_exec.Topology` a cache URL names (see the module docstring).

    Raises ValueError for a malformed Sentinel or Cluster URL; other URLs
    are left to redis-py.
    """
    scheme = url.partition("://")[0].lower()
    if scheme not in SENTINEL_SCHEMES and scheme not in CLUSTER_SCHEMES:
        return SingleServer(url)
    parts = urlsplit(url)
    userinfo, _, hosts = parts.netloc.rpartition("@")
    username, colon, password = userinfo.partition(":")
    credentials = {
        "username": unquote(username) or None,
        "password": unquote(password) if colon else None,
    }
    path = [unquote(p) for p in parts.path.split("/") if p]
    if scheme in SENTINEL_SCHEMES:
        options = _query(parts.query, {"sentinel_username", "sentinel_password"})
        if not path or len(path) > 2:
            raise ValueError("a Sentinel URL needs the service name: redis+sentinel://host:port,.../service[/db]")
        try:
            db = int(path[1]) if len(path) == 2 else 0
        except ValueError:
            raise ValueError(f"bad database number in Redis URL: {path[1]!r}") from None
        return SentinelTopology(
            _addresses(hosts, 26379),
            path[0],
            db=db,
            sentinel_username=options.get("sentinel_username") or None,
            sentinel_password=options.get("sentinel_password") or None,
            ssl=SENTINEL_SCHEMES[scheme],
            **credentials,
        )
    _query(parts.query, set())
    if path not in ([], ["0"]):
        raise ValueError("a Redis Cluster has only database 0: redis+cluster://host:port,...[/]")
    return ClusterTopology(_addresses(hosts, 6379), ssl=CLUSTER_SCHEMES[scheme], **credentials)
