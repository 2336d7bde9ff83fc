"""Fixtures: a real redis-server and a real six-node Redis Cluster per test session, and one
store fixture parametrised over memory, SQLite, Redis and the cluster so that the same tests run
against every store."""

from __future__ import annotations

import itertools
import os
import sys
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NoReturn

import pytest

from pushrules.runtime.store import Store, open_store
from pushrules.runtime.store.local_redis import (
    LocalRedis,
    LocalRedisCluster,
    RedisServerMissing,
)

# The tests share helpers (traces.py) by plain import: pytest runs with import-mode=importlib.
sys.path.insert(0, str(Path(__file__).parent))

STORES = ("memory", "sqlite", "redis", "cluster")
_prefixes = itertools.count()


def start_redis(**kwargs: object) -> LocalRedis:
    """A started LocalRedis; fails under CI when redis-server is missing, skips elsewhere."""
    try:
        server = LocalRedis(**kwargs)  # type: ignore[arg-type]
    except RedisServerMissing as exc:
        _missing(exc)
    server.start()
    return server


def start_cluster(**kwargs: object) -> LocalRedisCluster:
    """A started six-node LocalRedisCluster (3 masters, 3 replicas), all slots served."""
    try:
        cluster = LocalRedisCluster(**kwargs)  # type: ignore[arg-type]
        cluster.start()
    except RedisServerMissing as exc:
        _missing(exc)
    return cluster


def _missing(exc: Exception) -> NoReturn:
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"{exc}: the Redis tests never skip in CI")
    pytest.skip(str(exc))


@pytest.fixture(scope="session")
def redis_server() -> Iterator[LocalRedis]:
    server = start_redis()
    yield server
    server.close()


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[LocalRedisCluster]:
    # Slow to declare a node failed: a busy CI machine must not fail over the shared cluster.
    cluster = start_cluster(node_timeout=5000)
    yield cluster
    cluster.close()


def meta_key(prefix: str, user: str) -> str:
    return f"{prefix}:{{{user}}}:meta"


def users_on_every_master(cluster: LocalRedisCluster, prefix: str, per_master: int) -> list[str]:
    """Users whose slots lie on each of the masters, ``per_master`` each."""
    by_master: dict[int, list[str]] = defaultdict(list)
    masters = cluster.masters()
    for i in range(1000):
        user = f"u{i}@example.org"
        port = cluster.master_of(meta_key(prefix, user)).port
        if len(by_master[port]) < per_master:
            by_master[port].append(user)
        if all(len(by_master[p]) == per_master for p in masters):
            break
    assert set(by_master) == set(masters)
    return [user for users in by_master.values() for user in users]


class StoreOpener:
    """Opens handles on one store: a second call is a restarted process's view of the same data
    (same SQLite file, same Redis prefix; the memory store is simply shared)."""

    def __init__(self, kind: str, url: str) -> None:
        self.kind = kind
        self.url = url
        self.opened: list[Store] = []
        self._memory: Store | None = None
        self._fresh: list[StoreOpener] = []

    def fresh(self) -> StoreOpener:
        """An opener on another store of the same kind, empty (its own file or prefix),
        closed with this one."""
        n = next(_prefixes)
        if self.kind == "sqlite":
            url = self.url.removesuffix(".db") + f"-{n}.db"
        elif self.kind in ("redis", "cluster"):
            url = f"{self.url.partition('?')[0]}?prefix=t{n}"
        else:
            url = self.url
        opener = StoreOpener(self.kind, url)
        self._fresh.append(opener)
        return opener

    def __call__(self) -> Store:
        if self.kind == "memory":
            self._memory = self._memory or open_store("memory:")
            return self._memory
        store = open_store(self.url)
        self.opened.append(store)
        return store

    def close(self) -> None:
        for store in self.opened:
            store.close()
        for opener in self._fresh:
            opener.close()


@pytest.fixture(params=STORES)
def opener(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[[], Store]]:
    kind = request.param
    if kind == "sqlite":
        url = f"sqlite:///{tmp_path / 'pushrules.db'}"
    elif kind == "redis":
        server = request.getfixturevalue("redis_server")
        url = f"{server.url}?prefix=t{next(_prefixes)}"
    elif kind == "cluster":
        url = f"{request.getfixturevalue('redis_cluster').url}?prefix=t{next(_prefixes)}"
    else:
        url = "memory:"
    result = StoreOpener(kind, url)
    yield result
    result.close()
