"""`redis+cluster://host:port[,host:port...]?prefix=pushrules&wait=1`: the Redis
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

Replication in Redis is asynchronous: a master may acknowledge a commit and die before its
replica has it. So with ``wait=N`` (default 1) a landed commit is confirmed before the engine
returns its pushes: a small script on the user's master checks the commit's token is in that
master's history and writes a marker, then WAIT (same connection) blocks until the master's
online replicas (up to N) have everything up to the marker. Not
confirmed within the store's timeout, or the token missing (the commit was lost in a failover),
is StoreUnavailable: handle the event again and the commit is resent (a no-op if it is there,
applied if it was lost, refused whole if the user moved on). ``wait=0`` skips the confirmation:
faster, and a failover may then lose the last acknowledged commits of that master.

A commit is one round trip: the commit script, a marker write and WAIT pipelined on the user's
master's connection (the marker makes WAIT cover a resent commit that wrote nothing). On a
redirect (MOVED, ASK, TRYAGAIN), a script that node lacks, or a lost connection, the commit
goes the cluster client's way instead (it follows the redirect or refreshes the map) and is
confirmed apart, with its token checked on the master that then serves the user.

Resharding: a script declaring only the user's meta key may still touch the user's other keys,
and while the slot is migrating a missing one fails the script mid-way ("non local key"),
after its first writes. So the load and commit scripts also declare a key that never exists
(``PREFIX:{user}:guard``): while the user's slot migrates, Redis then refuses them whole
before they start (TRYAGAIN, or ASK and TRYAGAIN on the importing node), the client waits and
sends them again, and once the slot has moved they run whole on its new master.
"""

from __future__ import annotations

import math
import time
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from redis.backoff import ExponentialBackoff
from redis.cluster import ClusterNode, RedisCluster
from redis.exceptions import (
    AskError,
    ClusterDownError,
    ClusterError,
    NoScriptError,
    RedisClusterException,
    ResponseError,
    TryAgainError,
)
from redis.retry import Retry

from .base import StoreError, StoreUnavailable, UserChanges
from .redis_due import slot_tag, slot_tags
from .redis_store import RedisStore

# KEYS: meta, commits; ARGV: the commit's token. A write only when the commit is in this
# master's history, so that WAIT after it covers the commit.
CONFIRM = """
if redis.call('LPOS', KEYS[2], ARGV[1]) then
  redis.call('HSET', KEYS[1], 'confirmed', ARGV[1])
  return 1
end
return 0
"""

# ARGV: the latest due time, how many, then the due sets of the slots this master serves (a
# read across this node's slots: allowed by the flag).
DUE_READ = """#!lua flags=allow-cross-slot-keys,no-writes
local out = {}
for i = 3, #ARGV do
  local r = redis.call('ZRANGEBYSCORE', ARGV[i], '-inf', ARGV[1], 'WITHSCORES', 'LIMIT', 0,
                       tonumber(ARGV[2]))
  for j = 1, #r do out[#out + 1] = r[j] end
end
return out
"""

SCHEMES = {"redis+cluster": False, "rediss+cluster": True}
"""URL scheme -> TLS."""
COMMAND_RETRIES = 1
"""Sends after the first when a node cannot be reached or the cluster is down: once."""
REPLICAS_TTL = 1.0
"""Seconds a master's count of online replicas is reused before it is asked again."""
GUARD = "guard"
"""The per-user key no one writes, declared by the load and commit scripts (see above)."""
ANOTHER_WAY: tuple[type[Exception], ...] = (
    AskError, TryAgainError, ClusterDownError, NoScriptError, *RedisStore.UNAVAILABLE)
"""Errors of the direct commit after which it goes the cluster client's way (AskError
covers MOVED)."""

DUE_READ_FALLBACK: tuple[type[Exception], ...] = (*ANOTHER_WAY, ResponseError)
"""A per-master read of the due index that failed (a slot moving): read set by set instead."""


class _SlotGuarded:
    """A registered script called with the user's guard key declared after its own keys."""

    def __init__(self, script: Any) -> None:
        self.script = script
        self.sha: str = script.sha

    def __call__(self, keys: list[str], args: list[Any], client: Any = None) -> Any:
        return self.script(keys=[*keys, _guard_key(keys[0])], args=args, client=client)


def _guard_key(meta: str) -> str:
    return meta.rpartition(":")[0] + ":" + GUARD


class RedisClusterStore(RedisStore):
    UNAVAILABLE = (*RedisStore.UNAVAILABLE, ClusterError, AskError, TryAgainError,
                   RedisClusterException)
    # ClusterError covers CLUSTERDOWN and an exhausted redirect budget; AskError covers MOVED;
    # RedisClusterException (not a RedisError) is raised when no listed node answers or a slot
    # has no master: all mean "not now", none means the request was wrong.

    wait = 1
    """Replicas (at most) every commit is confirmed on; ``?wait=N`` in the URL."""

    def __init__(self, url: str, **options: Any) -> None:
        super().__init__(url, **options)
        self._load_script = _SlotGuarded(self._load)
        self._load = self._load_on_master
        self._commit_script = _SlotGuarded(self._commit)
        self._commit = self._commit_on_master
        self._inline = False
        self.redirected = 0
        """Commits that went the cluster client's way (a redirect, a failover, NOSCRIPT)."""

    def _connect(self, url: str, timeout: float) -> Any:
        parts = urlsplit(url)
        query = dict(parse_qsl(parts.query))
        raw = query.pop("wait", str(self.wait))
        if not raw.isdigit():
            raise StoreError(f"redis store {self.url}: wait={raw!r} is not a number "
                             "of replicas (0 or more)")
        self.wait = int(raw)
        self._wait_ms = max(1, int(timeout * 500))  # WAIT answers before the socket times out
        self._replicas: dict[str, tuple[float, int]] = {}
        nodes = _startup_nodes(self.url, parts.netloc.rpartition("@")[2])
        if parts.path not in ("", "/", "/0"):
            raise StoreError(f"redis store {self.url}: a cluster has only database 0, "
                             f"not {parts.path.lstrip('/')!r}")
        unknown = sorted(query)
        if unknown:
            raise StoreError(f"redis store {self.url}: unknown parameter(s) "
                             f"{', '.join(unknown)} (known: prefix, wait, node, lease)")
        try:
            client = RedisCluster(
                startup_nodes=nodes, ssl=SCHEMES[parts.scheme],
                username=unquote(parts.username) if parts.username else None,
                password=unquote(parts.password) if parts.password else None,
                socket_timeout=timeout, socket_connect_timeout=timeout,
                retry=Retry(ExponentialBackoff(cap=0.2, base=0.02), COMMAND_RETRIES))
        except self.UNAVAILABLE as exc:
            raise StoreUnavailable(f"redis store {self.url} is unavailable: no listed "
                                   f"node answered ({type(exc).__name__}: {exc})") from None
        self._confirm = client.register_script(CONFIRM)
        return client

    def commit(self, changes: UserChanges) -> bool:
        self._inline = False
        done = super().commit(changes)
        if done and self.wait and not self._inline:
            self._confirmed(changes.user, changes.token)
        return done

    def _load_on_master(self, keys: list[str], args: list[Any], client: Any = None) -> Any:
        """The load script sent straight to the user's master (no per-call routing by the
        cluster client: most events of a cached user cost only this); on any redirect, a
        missing script or a lost connection, the cluster client's way."""
        cluster = self._redis
        try:
            direct = cluster.get_redis_connection(cluster.get_node_from_key(keys[0]))
            return direct.execute_command("EVALSHA", self._load_script.sha, len(keys) + 1,
                                          *keys, _guard_key(keys[0]), *args)
        except ANOTHER_WAY:
            return self._load_script(keys=keys, args=args)

    def _commit_on_master(self, keys: list[str], args: list[Any], client: Any = None) -> int:
        """The commit script, then (wait > 0) a marker write and WAIT, in one pipeline on the
        connection to the master the client's map names for the user: one round trip. Any
        redirect, a missing script or a lost connection: the cluster client's way (the
        commit is resent whole; its token makes a send that did land a no-op)."""
        cluster = self._redis
        meta = keys[0]
        try:
            node = cluster.get_node_from_key(meta)
            direct = cluster.get_redis_connection(node)
            replicas = min(self.wait, self._online_replicas(node.name, direct))
            pipe = direct.pipeline(transaction=False)
            pipe.execute_command("EVALSHA", self._commit_script.sha, len(keys) + 1, *keys,
                                 _guard_key(meta), *args)
            if replicas:
                pipe.execute_command("HINCRBY", meta, "marks", 1)
                pipe.execute_command("WAIT", replicas, self._wait_ms)
            replies = pipe.execute()
        except ANOTHER_WAY:
            self.redirected += 1
            return int(self._commit_script(keys=keys, args=args))
        done = int(replies[0])
        if done and replicas:
            user = meta.partition("{")[2].rpartition("}")[0]
            self._require_acked(user, int(replies[2]), replicas, node.name)
        self._inline = True
        return done

    def due_key(self, user: str) -> str:
        """The due index's set on the user's slot (redis_due.py: one per slot)."""
        return f"{self.prefix}:{{{slot_tag(user)}}}:due"

    def due_keys(self) -> list[str]:
        return [f"{self.prefix}:{{{tag}}}:due" for tag in slot_tags()]

    def due_users(self, until: float, limit: int) -> list[tuple[float, str]]:
        """One script per master over the due sets of the slots it serves (one round trip
        each); while the slot map is changing, every set through the cluster client."""
        bound = "+inf" if until == math.inf else repr(until)
        found: list[tuple[float, str]] = []
        try:
            for client, keys in self._due_keys_by_master():
                reply = client.execute_command("EVAL", DUE_READ, 0, bound, limit, *keys)
                found += [(float(reply[i + 1]), reply[i].decode())
                          for i in range(0, len(reply), 2)]
        except DUE_READ_FALLBACK:
            return super().due_users(until, limit)
        return sorted(found)[:limit]

    def due_next(self) -> float | None:
        first = self.due_users(math.inf, 1)
        return first[0][0] if first else None

    def _due_keys_by_master(self) -> list[tuple[Any, list[str]]]:
        cluster = self._redis
        by_master: dict[str, tuple[Any, list[str]]] = {}
        tags = slot_tags()
        for slot, nodes in cluster.nodes_manager.slots_cache.items():
            master = nodes[0]
            entry = by_master.get(master.name)
            if entry is None:
                entry = by_master[master.name] = (cluster.get_redis_connection(master), [])
            entry[1].append(f"{self.prefix}:{{{tags[slot]}}}:due")
        return list(by_master.values())

    def _confirmed(self, user: str, token: str) -> None:
        """Return once the user's master has the commit and its replicas have it too; else
        StoreUnavailable (the engine resends the same commit when the event comes again)."""
        cluster = self._redis
        meta, commits = self._keys(user)[0], self._keys(user)[4]
        with self._errors("confirm a commit of", user):
            node = cluster.get_node_from_key(meta)
            client = cluster.get_redis_connection(node)
            replicas = min(self.wait, self._online_replicas(node.name, client))
            pipe = client.pipeline(transaction=False)
            self._confirm(keys=[meta, commits], args=[token], client=pipe)
            pipe.execute_command("WAIT", replicas, self._wait_ms)
            found, acked = pipe.execute()
        if not found:
            raise StoreUnavailable(f"redis store {self.url} is unavailable: a commit of "
                                   f"user {user} was lost in a failover; not applied")
        self._require_acked(user, acked, replicas, node.name)

    def _require_acked(self, user: str, acked: int, replicas: int, name: str) -> None:
        if acked < replicas:
            self._replicas.pop(name, None)
            raise StoreUnavailable(f"redis store {self.url} is unavailable: a commit of "
                                   f"user {user} reached {acked} of {replicas} replica(s) in "
                                   f"{self._wait_ms} ms (wait={self.wait}); outcome unknown")

    def _online_replicas(self, name: str, client: Any) -> int:
        """How many replicas the master ``name`` streams to now (its INFO, kept a second): a
        master without one (just promoted, its old master lost) is not waited on."""
        now = time.monotonic()
        known = self._replicas.get(name)
        if known is None or now - known[0] > REPLICAS_TTL:
            info = client.info("replication")
            online = sum(1 for key, value in info.items() if key.startswith("slave")
                         and isinstance(value, dict) and value.get("state") == "online")
            known = self._replicas[name] = (now, online)
        return known[1]


def _startup_nodes(url: str, hosts: str) -> list[ClusterNode]:
    """``host:port,host:port``; each a node to learn the cluster from (one that answers will
    do, so list several)."""
    nodes = []
    for item in hosts.split(","):
        host, _, port = item.strip().rpartition(":")
        host = host.strip("[]")  # [::1]:7000
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise StoreError(f"redis store {url}: {item!r} is not host:port "
                             "(list the nodes as host:port,host:port)")
        nodes.append(_cluster_node(host, int(port)))
    return nodes


def _cluster_node(host: str, port: int) -> ClusterNode:
    make: Any = ClusterNode  # redis-py leaves its __init__ unannotated
    node: ClusterNode = make(host, port)
    return node
