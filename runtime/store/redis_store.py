"""`redis://host:port/db?prefix=pushrules&orphan_ttl=SECONDS`: the store several nodes share.

Keys of one user (all hash-tagged ``{user}`` so they stay on one Redis Cluster slot):
  PREFIX:{user}:meta       hash: version (bumped by every commit), seq (enable order),
                           regno (last position in regs)
  PREFIX:{user}:sessions   hash: session full JID -> JSON row
  PREFIX:{user}:regs       sorted set of registration ids (JSON ``[jid, node]``) in
                           the order first enabled: the fan-out order of rules b, c
  PREFIX:{user}:reg:ID     string: the registration's JSON row (may carry the orphan TTL)
  PREFIX:{user}:pushed:ID  list: stanza ids pushed to it (dedup), oldest first; appended and
                           trimmed per event, never rewritten; expires 1 s after its reg key
  PREFIX:{user}:audit      list of JSON audit entries, oldest first
  PREFIX:{user}:commits    list of the last commit tokens (a repeated commit is a no-op)

Loads and commits are Lua scripts, each atomic on the server: a commit applies only if the
user's version is still the one loaded (optimistic concurrency), else the caller runs the event
again on fresh state. With ``orphan_ttl`` a registration's key expires that many seconds after
it became orphaned (pushes to it do not extend it; re-enabling removes the TTL). An expired
registration is gone as if never enabled: rules (b) and (c) no longer push to it, it no longer
counts towards max_devices, a push-result for it is an impossible event; the next commit for
that user drops it from the index and records an ``expire`` audit entry.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from pushrules.model.world import AuditEntry

from .base import (
    RegId,
    StoreError,
    StoreUnavailable,
    UserChanges,
    UserSnapshot,
    audit_dict,
    audit_from_dict,
)

RECENT_TOKENS = 64

# ARGV: the registration key prefix, then the version and token the caller already holds:
# if they are current (and no registration expired since), only {version, token} comes back.
LOAD = """
local meta = redis.call('HMGET', KEYS[1], 'version', 'seq')
local version = meta[1] or '0'
local token = redis.call('LINDEX', KEYS[4], 0) or ''
local ids = redis.call('ZRANGE', KEYS[3], 0, -1)
if version == ARGV[2] and token == ARGV[3] then
  local current = true
  for _, id in ipairs(ids) do
    if redis.call('EXISTS', ARGV[1] .. id) == 0 then current = false break end
  end
  if current then return {version, token} end
end
local regs = {}
for _, id in ipairs(ids) do
  regs[#regs + 1] = id
  regs[#regs + 1] = redis.call('GET', ARGV[1] .. id)
  local pushed = redis.call('LRANGE', ARGV[4] .. id, 0, -1)
  regs[#regs + 1] = #pushed == 0 and '' or '\\0' .. table.concat(pushed, '\\0')
end
return {version, meta[2] or '0', redis.call('HGETALL', KEYS[2]), regs, token}
"""

# Checks everything before the first write: Redis does not roll a script back.
COMMIT = """
local c = cjson.decode(ARGV[1])
if redis.call('LPOS', KEYS[5], c.token) then return 1 end
local current = tonumber(redis.call('HGET', KEYS[1], 'version') or '0')
if current ~= c.base then return 0 end
for _, id in ipairs(c.must_exist) do
  if redis.call('EXISTS', ARGV[2] .. id) == 0 then return 0 end
end
for _, s in ipairs(c.s_put) do redis.call('HSET', KEYS[2], s[1], s[2]) end
for _, sid in ipairs(c.s_del) do redis.call('HDEL', KEYS[2], sid) end
for _, id in ipairs(c.fresh) do redis.call('DEL', ARGV[4] .. id) end
for _, p in ipairs(c.p_ops) do
  local key = ARGV[4] .. p[1]
  if p[2] > 0 then redis.call('LTRIM', key, p[2], -1) end
  local ids = p[3]
  for i = 1, #ids, 1000 do
    redis.call('RPUSH', key, unpack(ids, i, math.min(i + 999, #ids)))
  end
end
for _, r in ipairs(c.r_put) do
  local key, pushed = ARGV[2] .. r[1], ARGV[4] .. r[1]
  if r[3] == 'ttl' then
    redis.call('SET', key, r[2], 'EX', c.ttl)
    redis.call('EXPIRE', pushed, c.ttl + 1)
  elseif r[3] == 'keep' then
    redis.call('SET', key, r[2], 'KEEPTTL')
    if redis.call('PTTL', pushed) == -1 then
      redis.call('PEXPIRE', pushed, redis.call('PTTL', key) + 1000)
    end
  else
    redis.call('SET', key, r[2])
    redis.call('PERSIST', pushed)
  end
  if not redis.call('ZSCORE', KEYS[3], r[1]) then
    redis.call('ZADD', KEYS[3], redis.call('HINCRBY', KEYS[1], 'regno', 1), r[1])
  end
end
for _, id in ipairs(c.r_del) do
  redis.call('DEL', ARGV[2] .. id, ARGV[4] .. id)
  redis.call('ZREM', KEYS[3], id)
end
for _, a in ipairs(c.audit) do redis.call('RPUSH', KEYS[4], a) end
redis.call('HSET', KEYS[1], 'version', current + 1, 'seq', c.seq)
redis.call('LPUSH', KEYS[5], c.token)
redis.call('LTRIM', KEYS[5], 0, tonumber(ARGV[3]) - 1)
return 1
"""

OUR_PARAMS = ("prefix", "orphan_ttl")


class RedisStore:
    UNAVAILABLE: tuple[type[Exception], ...] = (redis.ConnectionError, redis.TimeoutError)
    """Errors that mean the server cannot be reached now (StoreUnavailable: retry)."""

    def __init__(self, url: str, *, prefix: str = "pushrules", orphan_ttl: int | None = None,
                 timeout: float = 2.0) -> None:
        parts = urlsplit(url)
        query = dict(parse_qsl(parts.query))
        prefix = query.pop("prefix", prefix)
        if "orphan_ttl" in query:
            raw = query.pop("orphan_ttl")
            if not raw.isdigit() or int(raw) < 1:
                raise StoreError(f"redis store {_mask(url)}: orphan_ttl={raw!r} is not a "
                                 "positive number of seconds")
            orphan_ttl = int(raw)
        if not prefix or any(c in prefix for c in "{}"):
            raise StoreError(f"redis store {_mask(url)}: prefix {prefix!r} must be non-empty "
                             "and without braces")
        self.prefix = prefix
        self.orphan_ttl = orphan_ttl
        self.url = _mask(url)
        plain = urlunsplit(parts._replace(query=urlencode(query)))
        self._redis = self._connect(plain, timeout)
        self._load = self._redis.register_script(LOAD)
        self._commit = self._redis.register_script(COMMIT)

    def _connect(self, url: str, timeout: float) -> Any:
        """The client for ``url`` (our own parameters removed); subclasses pick another."""
        try:
            # Retries only reconnect; a commit sent twice is harmless (its token).
            return redis.Redis.from_url(
                url, socket_timeout=timeout, socket_connect_timeout=timeout,
                retry=Retry(ExponentialBackoff(cap=0.2, base=0.02), 2))
        except ValueError as exc:
            raise StoreError(f"redis store {self.url}: {exc}") from None

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url!r}, prefix={self.prefix!r})"

    def _keys(self, user: str) -> tuple[str, ...]:
        base = f"{self.prefix}:{{{user}}}:"
        return tuple(base + name for name in ("meta", "sessions", "regs", "audit", "commits"))

    def _reg_prefix(self, user: str) -> str:
        return f"{self.prefix}:{{{user}}}:reg:"

    def _pushed_prefix(self, user: str) -> str:
        return f"{self.prefix}:{{{user}}}:pushed:"

    @contextmanager
    def _errors(self, what: str, user: str) -> Iterator[None]:
        try:
            yield
        except self.UNAVAILABLE as exc:
            raise StoreUnavailable(f"redis store {self.url} is unavailable: cannot {what} user "
                                   f"{user} ({type(exc).__name__}: {exc})") from None
        except redis.RedisError as exc:
            raise StoreError(f"redis store {self.url}: cannot {what} user {user} "
                             f"({type(exc).__name__}: {exc})") from None

    def load(self, user: str, known: tuple[int, str] | None = None) -> UserSnapshot | None:
        keys = self._keys(user)
        version, token = known or (-1, "")
        with self._errors("load", user):
            reply = self._load(keys=(*keys[:3], keys[4]),
                               args=[self._reg_prefix(user), version, token,
                                     self._pushed_prefix(user)])
        if len(reply) == 2:
            return None
        version, seq, sessions, regs, token = reply
        snapshot = UserSnapshot(user, int(version), int(seq), token=token.decode())
        for i in range(0, len(sessions), 2):
            snapshot.sessions[sessions[i].decode()] = json.loads(sessions[i + 1])
        expired: list[RegId] = []
        for i in range(0, len(regs), 3):
            jid, node = json.loads(regs[i])
            if regs[i + 1] is None:
                expired.append((jid, node))
            else:
                row = json.loads(regs[i + 1])
                # Each id after a NUL (NUL cannot occur in XML, so in no stanza id).
                pushed = regs[i + 2].decode()
                row["pushed"] = pushed[1:].split("\0") if pushed else []
                snapshot.registrations[(jid, node)] = row
        snapshot.expired = tuple(expired)
        return snapshot

    def commit(self, changes: UserChanges) -> bool:
        ttl = self.orphan_ttl
        r_put = []
        for reg, row in changes.registrations_put.items():
            mode = "plain"
            if ttl is not None and row["state"] == "orphaned":
                mode = "keep" if changes.previous_states.get(reg) == "orphaned" else "ttl"
            stored = {name: value for name, value in row.items() if name != "pushed"}
            r_put.append([_reg_id(reg), json.dumps(stored), mode])
        payload = {
            "token": changes.token, "base": changes.base_version, "seq": changes.seq,
            "ttl": ttl or 0,
            "must_exist": [_reg_id(r) for r in changes.previous_states],
            # New registrations start with no dedup ids, whatever an expired one left.
            "fresh": [_reg_id(r) for r in changes.registrations_put
                      if r not in changes.previous_states],
            "s_put": [[sid, json.dumps(row)] for sid, row in changes.sessions_put.items()],
            "s_del": changes.sessions_del,
            "r_put": r_put,
            "r_del": [_reg_id(r) for r in changes.registrations_del],
            "p_ops": [[_reg_id(r), drop, added]
                      for r, (drop, added) in changes.pushed_ops.items()],
            "audit": [json.dumps(audit_dict(a)) for a in changes.audit],
        }
        user = changes.user
        with self._errors("commit", user):
            done = self._commit(keys=self._keys(user),
                                args=[json.dumps(payload), self._reg_prefix(user),
                                      RECENT_TOKENS, self._pushed_prefix(user)])
        return bool(done)

    def audit_trail(self, user: str) -> list[AuditEntry]:
        with self._errors("read the audit trail of", user):
            rows = self._redis.lrange(self._keys(user)[3], 0, -1)
        return [audit_from_dict(json.loads(row)) for row in rows]

    def ttl_ms(self, user: str, reg: RegId) -> int:
        """Milliseconds before the registration's key expires (-1: never, -2: no such key)."""
        with self._errors("read a TTL of", user):
            return int(self._redis.pttl(self._reg_prefix(user) + _reg_id(reg)))

    def close(self) -> None:
        self._redis.close()


def _reg_id(reg: RegId) -> str:
    return json.dumps(list(reg))


def _mask(url: str) -> str:
    """The URL with its password masked."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))
