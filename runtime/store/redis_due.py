"""The due index of the Redis stores (contract v2 time-based rules).

A sorted set of users scored by when their next timer (held push, expiry, retry) comes due. The
commit script writes it with the user's rows, atomically. On a single Redis there is one,
``PREFIX:due``. On a Redis Cluster a script may only touch keys of the slot it runs on, so there
is one set per slot, ``PREFIX:{TAG}:due`` where TAG is a short string hashing to that slot
(``slot_tag``): the user's commit writes the set of the user's own slot, and the set moves with
the slot when it is resharded. Reading the index asks every slot's set (pipelined per master).
"""

from __future__ import annotations

import itertools
from functools import lru_cache
from typing import Any

from redis.crc import REDIS_CLUSTER_HASH_SLOTS, key_slot

from .base import UserChanges


def due_payload(key: str, changes: UserChanges) -> dict[str, Any]:
    """What the commit script needs to update the index (no ``due``: the user leaves it)."""
    payload: dict[str, Any] = {"due_key": key, "user": changes.user}
    if changes.due is not None:
        payload["due"] = changes.due
    return payload


def due_before(client: Any, keys: list[str], until: float, limit: int
               ) -> list[tuple[float, str]]:
    """Up to ``limit`` (when, user) due at or before ``until`` over the sets ``keys``."""
    pipe = client.pipeline(transaction=False)
    for key in keys:
        pipe.zrangebyscore(key, "-inf", until, start=0, num=limit, withscores=True)
    found = [(float(score), member.decode()) for reply in pipe.execute()
             for member, score in reply]
    return sorted(found)[:limit]


def due_first(client: Any, keys: list[str]) -> float | None:
    """The earliest score over the sets ``keys`` (None: all empty)."""
    pipe = client.pipeline(transaction=False)
    for key in keys:
        pipe.zrange(key, 0, 0, withscores=True)
    scores = [float(score) for reply in pipe.execute() for _, score in reply]
    return min(scores) if scores else None


@lru_cache(maxsize=1)
def slot_tags() -> tuple[str, ...]:
    """For each cluster slot, the shortest decimal string that hashes to it (computed once)."""
    tags: dict[int, str] = {}
    for n in itertools.count():
        tag = str(n)
        tags.setdefault(key_slot(tag.encode()), tag)
        if len(tags) == REDIS_CLUSTER_HASH_SLOTS:
            break
    return tuple(tags[slot] for slot in range(REDIS_CLUSTER_HASH_SLOTS))


def slot_tag(user: str) -> str:
    """The tag of the due set on ``user``'s slot (the user's keys are tagged ``{user}``)."""
    return slot_tags()[key_slot(user.encode())]
