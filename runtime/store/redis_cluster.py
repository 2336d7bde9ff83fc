"""`redis+cluster://host:port[,host:port...]?prefix=pushrules&orphan_ttl=SECONDS`: the Redis
store on a Redis Cluster, for farms that outgrow one Redis or must survive losing a machine.

The keys and scripts are the single-Redis store's (redis_store.py): every key of one user is
hash-tagged ``{user}``, so each load and each commit is one Lua script on the one master that
serves that user's slot, atomic there; different users spread over all masters. Only the client
differs: redis-py's ``RedisCluster`` learns the slot map from any listed node, follows MOVED and
ASK, reloads a script a promoted replica lacks (NOSCRIPT), and after a lost connection refreshes
the map and sends the command once more. That second send is safe for a commit whose first may
have applied: the script finds the commit's token among the user's recent commits (replicated
with the data) and reports success without writing, and a commit whose version moved on is
refused whole (the engine runs the event again). When the second send fails too (a master is
down and its replica not yet promoted), the store raises StoreUnavailable: handle the same
event again once the cluster is healthy and it lands exactly once.

Replication in Redis is asynchronous: a commit a master acknowledged in the instant before it
was lost, and had not yet sent to its replica, is gone after the failover (see README.md).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from redis.backoff import ExponentialBackoff
from redis.cluster import ClusterNode, RedisCluster
from redis.exceptions import AskError, ClusterError, RedisClusterException, TryAgainError
from redis.retry import Retry

from .base import StoreError, StoreUnavailable
from .redis_store import RedisStore

SCHEMES = {"redis+cluster": False, "rediss+cluster": True}
"""URL scheme -> TLS."""
COMMAND_RETRIES = 1
"""Sends after the first when a node cannot be reached or the cluster is down: once."""


class RedisClusterStore(RedisStore):
    UNAVAILABLE = (*RedisStore.UNAVAILABLE, ClusterError, AskError, TryAgainError,
                   RedisClusterException)
    # ClusterError covers CLUSTERDOWN and an exhausted redirect budget; AskError covers MOVED;
    # RedisClusterException (not a RedisError) is raised when no listed node answers or a slot
    # has no master: all mean "not now", none means the request was wrong.

    def _connect(self, url: str, timeout: float) -> Any:
        parts = urlsplit(url)
        nodes = _startup_nodes(self.url, parts.netloc.rpartition("@")[2])
        if parts.path not in ("", "/", "/0"):
            raise StoreError(f"redis cluster store {self.url}: a cluster has only database 0, "
                             f"not {parts.path.lstrip('/')!r}")
        unknown = sorted(name for name, _ in parse_qsl(parts.query))
        if unknown:
            raise StoreError(f"redis cluster store {self.url}: unknown parameter(s) "
                             f"{', '.join(unknown)} (known: prefix, orphan_ttl)")
        try:
            return RedisCluster(
                startup_nodes=nodes, ssl=SCHEMES[parts.scheme],
                username=unquote(parts.username) if parts.username else None,
                password=unquote(parts.password) if parts.password else None,
                socket_timeout=timeout, socket_connect_timeout=timeout,
                retry=Retry(ExponentialBackoff(cap=0.2, base=0.02), COMMAND_RETRIES))
        except self.UNAVAILABLE as exc:
            raise StoreUnavailable(f"redis cluster store {self.url} is unavailable: no listed "
                                   f"node answered ({type(exc).__name__}: {exc})") from None


def _startup_nodes(url: str, hosts: str) -> list[ClusterNode]:
    """``host:port,host:port``; each a node to learn the cluster from (one that answers will
    do, so list several)."""
    nodes = []
    for item in hosts.split(","):
        host, _, port = item.strip().rpartition(":")
        host = host.strip("[]")  # [::1]:7000
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise StoreError(f"redis cluster store {url}: {item!r} is not host:port "
                             "(list the nodes as host:port,host:port)")
        nodes.append(ClusterNode(host, int(port)))
    return nodes
