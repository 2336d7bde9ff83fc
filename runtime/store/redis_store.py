"""`redis://host:port/db?prefix=pushrules`: the store several nodes share.

Keys of one user (all hash-tagged ``{user}`` so they stay on one Redis Cluster slot):
  PREFIX:{user}:meta       hash: version (bumped by every commit), seq (enable order),
                           regno (last position in regs)
  PREFIX:{user}:sessions   hash: session full JID -> JSON row (state, binding, csi; a row
                           without csi, written before contract v2: CSI-active)
  PREFIX:{user}:facts      string: the user's facts record (JSON ``WorldBase.user_facts``:
                           chat settings, calls); absent while the user has none
  PREFIX:{user}:regs       sorted set of registration ids (JSON ``[jid, node]``) in
                           the order first enabled: the fan-out order of rules b, c
  PREFIX:{user}:reg:ID     string: the registration's JSON row
  PREFIX:{user}:pushed:ID  list: stanza ids pushed to it (dedup), oldest first; appended and
                           trimmed per event, never rewritten
  PREFIX:{user}:ttl:ID     string: exists while an orphaned registration's orphan TTL runs
  PREFIX:{user}:timers     set of the registration ids whose orphan TTL was started
  PREFIX:{user}:audit      list of JSON audit entries, oldest first
  PREFIX:{user}:commits    list of the last commit tokens (a repeated commit is a no-op)
  PREFIX:{user}:outbox     hash: outbox key -> JSON push decided but not answered yet
  PREFIX:{user}:tries      hash: outbox key -> sends started so far (over all runs)
  PREFIX:{user}:lease      hash: outbox key -> "NODE EXPIRY_MS": the node sending it, until when

After a restart the pending outbox entries are found with SCAN on ``PREFIX:{*}:outbox`` (per
master on a cluster: no key ever spans users). Several nodes share one store, so each entry is
leased to the node that decided it (``?node=NAME``, default the host name) for ``?lease=SECONDS``
(default 60, renewed by every send attempt; server time). At start a node claims, in one
script on the user's slot, the entries that are its own (it restarted: its sends died with it)
or whose lease ran out (their node died): a live node's in-flight pushes are not sent again by
another node. Nodes on one host sharing a store need distinct ``node=`` names.

Loads and commits are Lua scripts, each atomic on the server: a commit applies only if the
user's version is still the one loaded (optimistic concurrency), else the caller runs the event
again on fresh state. The model's option ``orphan_ttl`` (model/config.py) says when an orphaned
registration expires, by the events' clock (the due index, runtime/store/due.py); the engine
asks this store for no key TTL (``UserChanges.orphan_ttl`` 0). Before, this store kept the
clock, and a key set that way still runs: the ``ttl:ID`` key is set with that
TTL when the registration becomes orphaned (pushes to it do not extend it; re-enabling deletes
it). When the key has gone, the load reports the registration as expired and the engine fires
the model's ``expire`` transition on it (orphaned -> disabled, reason expired, an ``expire``
audit entry) before the event, in the same commit.
"""

from __future__ import annotations

import functools
import json
import logging
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from pushrules.model.world import AuditEntry

from .base import (
    BatchCheck,
    RegId,
    StoreCorrupt,
    StoredPush,
    StoreError,
    StoreUnavailable,
    UserChanges,
    UserSnapshot,
    audit_dict,
    audit_from_dict,
    facts_from_json,
    facts_json,
)
from .redis_due import due_before, due_first, due_payload

RECENT_TOKENS = 64
BatchReply = bool | UserSnapshot | None | StoreError
"""What ``run_batch`` answers per op (see there)."""
LEASE_SECONDS = 60
"""How long a node's claim on an outbox entry lasts without a send attempt renewing it."""

# ARGV: the registration key prefix, then the version and token the caller already holds:
# if they are current (and no registration expired since), only {version, token} comes back,
# and the outbox entries named by the remaining ARGV (if any) are removed (a settle).
LOAD = """
local P = ARGV[1]
local SESSIONS, REGS, COMMITS = P .. 'sessions', P .. 'regs', P .. 'commits'
local REG, PUSHED = P .. 'reg:', P .. 'pushed:'
local meta = redis.call('HMGET', KEYS[1], 'version', 'seq')
local version = meta[1] or '0'
local token = redis.call('LINDEX', COMMITS, 0) or ''
local ids = redis.call('ZRANGE', REGS, 0, -1)
if version == ARGV[2] and token == ARGV[3] then
  local current = true
  for _, id in ipairs(ids) do
    if redis.call('EXISTS', REG .. id) == 0 then current = false break end
  end
  for _, id in ipairs(redis.call('SMEMBERS', P .. 'timers')) do
    if redis.call('EXISTS', P .. 'ttl:' .. id) == 0 then current = false break end
  end
  if current then
    for i = 4, #ARGV do
      redis.call('HDEL', P .. 'outbox', ARGV[i])
      redis.call('HDEL', P .. 'tries', ARGV[i])
      redis.call('HDEL', P .. 'lease', ARGV[i])
    end
    return {version, token}
  end
end
local regs = {}
for _, id in ipairs(ids) do
  regs[#regs + 1] = id
  regs[#regs + 1] = redis.call('GET', REG .. id)
  local pushed = redis.call('LRANGE', PUSHED .. id, 0, -1)
  regs[#regs + 1] = #pushed == 0 and '' or '\\0' .. table.concat(pushed, '\\0')
  local timer = 0  -- no orphan TTL; 1: running; 2: fired
  if redis.call('SISMEMBER', P .. 'timers', id) == 1 then
    timer = 2 - redis.call('EXISTS', P .. 'ttl:' .. id)
  end
  regs[#regs + 1] = timer
end
return {version, meta[2] or '0', redis.call('HGETALL', SESSIONS), regs, token,
        redis.call('GET', P .. 'facts') or ''}
"""

# Checks everything before the first write: Redis does not roll a script back.
COMMIT = """
local P = ARGV[2]
local SESSIONS, REGS, AUDIT, COMMITS = P .. 'sessions', P .. 'regs', P .. 'audit', P .. 'commits'
local OUTBOX, TRIES, LEASE = P .. 'outbox', P .. 'tries', P .. 'lease'
local REG, PUSHED = P .. 'reg:', P .. 'pushed:'
local c = cjson.decode(ARGV[1])
-- Lists the caller left out are empty (fewer bytes to encode, send and decode per commit).
for _, name in ipairs({'must_exist', 'must_live', 'fresh', 's_put', 's_del', 'r_put', 'r_del',
                       'p_ops', 'audit', 'o_put', 'o_del'}) do
  if c[name] == nil then c[name] = {} end
end
if redis.call('LPOS', COMMITS, c.token) then return 1 end
local current = tonumber(redis.call('HGET', KEYS[1], 'version') or '0')
if current ~= c.base then return 0 end
-- In a batch, a commit that follows another of the same user: only on top of that one.
if c.after and (redis.call('LINDEX', COMMITS, 0) or '') ~= c.after then return 0 end
for _, id in ipairs(c.must_exist) do
  if redis.call('EXISTS', REG .. id) == 0 then return 0 end
end
-- An orphan TTL that fired since the load: run the event again, expiring it first.
for _, id in ipairs(c.must_live) do
  if redis.call('EXISTS', P .. 'ttl:' .. id) == 0 then return 0 end
end
for _, s in ipairs(c.s_put) do redis.call('HSET', SESSIONS, s[1], s[2]) end
for _, sid in ipairs(c.s_del) do redis.call('HDEL', SESSIONS, sid) end
for _, id in ipairs(c.fresh) do redis.call('DEL', PUSHED .. id) end
for _, p in ipairs(c.p_ops) do
  local key = PUSHED .. p[1]
  if p[2] > 0 then redis.call('LTRIM', key, p[2], -1) end
  local ids = p[3]
  for i = 1, #ids, 1000 do
    redis.call('RPUSH', key, unpack(ids, i, math.min(i + 999, #ids)))
  end
end
for _, r in ipairs(c.r_put) do
  redis.call('SET', REG .. r[1], r[2])
  if r[3] == 'ttl' then
    redis.call('SET', P .. 'ttl:' .. r[1], '1', 'EX', c.ttl)
    redis.call('SADD', P .. 'timers', r[1])
  elseif r[3] ~= 'keep' then
    redis.call('DEL', P .. 'ttl:' .. r[1])
    redis.call('SREM', P .. 'timers', r[1])
  end
  if not redis.call('ZSCORE', REGS, r[1]) then
    redis.call('ZADD', REGS, redis.call('HINCRBY', KEYS[1], 'regno', 1), r[1])
  end
end
for _, id in ipairs(c.r_del) do
  redis.call('DEL', REG .. id, PUSHED .. id, P .. 'ttl:' .. id)
  redis.call('SREM', P .. 'timers', id)
  redis.call('ZREM', REGS, id)
end
-- The facts record: absent from the payload when unchanged; '' when the user has none now.
if c.facts == '' then redis.call('DEL', P .. 'facts')
elseif c.facts then redis.call('SET', P .. 'facts', c.facts) end
for _, a in ipairs(c.audit) do redis.call('RPUSH', AUDIT, a) end
if #c.o_put > 0 then
  local t = redis.call('TIME')
  local lease = c.node .. ' ' .. (t[1] * 1000 + math.floor(t[2] / 1000) + c.lease_ms)
  for _, o in ipairs(c.o_put) do
    redis.call('HSET', OUTBOX, o[1], o[2])
    redis.call('HSET', LEASE, o[1], lease)
  end
end
for _, key in ipairs(c.o_del) do
  redis.call('HDEL', OUTBOX, key)
  redis.call('HDEL', TRIES, key)
  redis.call('HDEL', LEASE, key)
end
-- The due index (time-based rules): the user's next due time, with the rows it indexes.
if c.due_key then
  if c.due then redis.call('ZADD', c.due_key, c.due, c.user)
  else redis.call('ZREM', c.due_key, c.user) end
end
redis.call('HSET', KEYS[1], 'version', current + 1, 'seq', c.seq)
redis.call('LPUSH', COMMITS, c.token)
redis.call('LTRIM', COMMITS, 0, tonumber(ARGV[3]) - 1)
return 1
"""

# KEYS: outbox, tries, lease. ARGV: key, attempts, node, lease ms. Only for an entry still
# there (no stray count); the sending node's lease is renewed.
OUTBOX_ATTEMPT = """
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then
  local t = redis.call('TIME')
  redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
  redis.call('HSET', KEYS[3], ARGV[1],
             ARGV[3] .. ' ' .. (t[1] * 1000 + math.floor(t[2] / 1000) + tonumber(ARGV[4])))
end
return 1
"""

# KEYS: outbox, tries, lease. ARGV: node, lease ms. The entries this node may send again (its
# own, unleased, or whose lease ran out), claimed for it; with their send counts.
OUTBOX_CLAIM = """
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local entries = redis.call('HGETALL', KEYS[1])
local claimed = {}
for i = 1, #entries, 2 do
  local lease = redis.call('HGET', KEYS[3], entries[i])
  local owner, expiry = '', 0
  if lease then owner, expiry = string.match(lease, '^(.*) (%d+)$') end
  if owner == ARGV[1] or tonumber(expiry or 0) <= now then
    redis.call('HSET', KEYS[3], entries[i], ARGV[1] .. ' ' .. (now + tonumber(ARGV[2])))
    claimed[#claimed + 1] = entries[i]
    claimed[#claimed + 1] = entries[i + 1]
  end
end
return {claimed, redis.call('HGETALL', KEYS[2])}
"""

# KEYS: outbox, tries, lease. ARGV: the keys of the entries to forget.
OUTBOX_REMOVE = """
for _, key in ipairs(ARGV) do
  redis.call('HDEL', KEYS[1], key)
  redis.call('HDEL', KEYS[2], key)
  redis.call('HDEL', KEYS[3], key)
end
return 1
"""

OUR_PARAMS = ("prefix",)
log = logging.getLogger("pushrules.store")


class RedisStore:
    expires_orphans = True
    """Keeps the clock of the model's orphan_ttl (see StoredEngine)."""
    UNAVAILABLE: tuple[type[Exception], ...] = (redis.ConnectionError, redis.TimeoutError)
    """Errors that mean the server cannot be reached now (StoreUnavailable: retry)."""

    def __init__(self, url: str, *, prefix: str = "pushrules", timeout: float = 2.0) -> None:
        parts = urlsplit(url)
        query = dict(parse_qsl(parts.query))
        prefix = query.pop("prefix", prefix)
        self.node = query.pop("node", "") or socket.gethostname()
        """This node's name in the outbox leases (a restarted node reclaims its own)."""
        lease = query.pop("lease", str(LEASE_SECONDS))
        if not lease.isdigit() or int(lease) < 1:
            raise StoreError(f"redis store {_mask(url)}: lease={lease!r} is not a whole number "
                             "of seconds (1 or more)")
        self.lease_ms = int(lease) * 1000
        if "orphan_ttl" in query:
            raise StoreError(f"redis store {_mask(url)}: orphan_ttl is a rule option of the "
                             "model, not of the store: pass --set orphan_ttl=SECONDS (or "
                             "Config(orphan_ttl=...)) and drop it from the URL")
        if not prefix or any(c in prefix for c in "{}"):
            raise StoreError(f"redis store {_mask(url)}: prefix {prefix!r} must be non-empty "
                             "and without braces")
        self.prefix = prefix
        self.url = _mask(url)
        plain = urlunsplit(parts._replace(query=urlencode(query)))
        self._redis = self._connect(plain, timeout)
        self._load = self._redis.register_script(LOAD)
        self._commit = self._redis.register_script(COMMIT)
        self._outbox_attempt = self._redis.register_script(OUTBOX_ATTEMPT)
        self._outbox_claim = self._redis.register_script(OUTBOX_CLAIM)
        self._outbox_remove = self._redis.register_script(OUTBOX_REMOVE)
        self._schedule: Callable[[Callable[[], None]], object] | None = None
        self._counts: list[list[Any]] = []
        """Send counts deferred to the next ``flush`` (EVALSHA arguments of OUTBOX_ATTEMPT)."""

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
        return tuple(base + name for name in ("meta", "sessions", "regs", "audit", "commits",
                                              "outbox", "tries", "lease"))

    def _outbox_keys(self, user: str) -> list[str]:
        return list(self._keys(user)[5:])

    def _user_prefix(self, user: str) -> str:
        return f"{self.prefix}:{{{user}}}:"

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
        with self._errors("load", user):
            # One key (the user's slot); the script names the others after the user prefix:
            # fewer arguments to pack per event.
            reply = self._load(keys=[self._user_prefix(user) + "meta"],
                               args=self._load_args(user, known))
        return self._snapshot(user, reply)

    def _load_args(self, user: str, known: tuple[int, str] | None) -> list[Any]:
        version, token = known or (-1, "")
        return [self._user_prefix(user), version, token]

    def _snapshot(self, user: str, reply: Any) -> UserSnapshot | None:
        """The load script's reply as a snapshot (None: the caller's copy is current)."""
        if len(reply) == 2:
            return None
        version, seq, sessions, regs, token, facts = reply
        snapshot = UserSnapshot(user, int(version), int(seq), token=token.decode(),
                                facts=facts_from_json(f"redis store {self.url}", user, facts))
        for i in range(0, len(sessions), 2):
            snapshot.sessions[sessions[i].decode()] = json.loads(sessions[i + 1])
        expired: list[RegId] = []
        for i in range(0, len(regs), 4):
            jid, node = json.loads(regs[i])
            if regs[i + 1] is None:
                snapshot.vanished += ((jid, node),)  # e.g. a key TTL of an older version
                continue
            row = json.loads(regs[i + 1])
            # Each id after a NUL (NUL cannot occur in XML, so in no stanza id).
            pushed = regs[i + 2].decode()
            row["pushed"] = pushed[1:].split("\0") if pushed else []
            timer = int(regs[i + 3])
            if timer == 1:
                snapshot.timers += ((jid, node),)
            elif timer == 2 and row["state"] == "orphaned":
                expired.append((jid, node))
            snapshot.registrations[(jid, node)] = row
        snapshot.expired = tuple(expired)
        return snapshot

    def _commit_args(self, changes: UserChanges) -> list[Any]:
        """The commit script's arguments (after its one key, the user's meta)."""
        ttl = changes.orphan_ttl
        r_put = []
        for reg, row in changes.registrations_put.items():
            mode = "plain"
            stored = {name: value for name, value in row.items() if name != "pushed"}
            if row["state"] == "orphaned" and reg in changes.live_timers:
                mode = "keep"  # a key TTL started by an earlier version runs on
            elif ttl > 0 and row["state"] == "orphaned":
                mode = "ttl"
            r_put.append([_reg_id(reg), json.dumps(stored), mode])
        lists = {
            "must_exist": [_reg_id(r) for r in {**changes.previous_states,
                                                **dict.fromkeys(changes.known_registrations)}],
            "must_live": [_reg_id(r) for r in dict.fromkeys(
                [*changes.live_timers, *changes.known_timers])],
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
            "o_put": [[key, json.dumps(row)] for key, row in changes.outbox_put.items()],
            "o_del": changes.outbox_del,
        }
        # Only the lists with something in them: the script takes a missing one as empty.
        payload = {name: value for name, value in lists.items() if value}
        payload.update(token=changes.token, base=changes.base_version, seq=changes.seq,
                       ttl=ttl, node=self.node, lease_ms=self.lease_ms)
        if changes.facts is not None:
            payload["facts"] = facts_json(changes.facts)
        if changes.due_set:
            payload.update(due_payload(self.due_key(changes.user), changes))
        if changes.after is not None:
            payload["after"] = changes.after
        return [json.dumps(payload), self._user_prefix(changes.user), RECENT_TOKENS]

    def commit(self, changes: UserChanges) -> bool:
        user = changes.user
        with self._errors("commit", user):
            done = self._commit(keys=[self._user_prefix(user) + "meta"],
                                args=self._commit_args(changes))
        return bool(done)

    # --- several users' commits and checks in one round trip ----------------------------------
    @property
    def batches(self) -> bool:
        """Whether ``run_batch`` sends one pipeline (a single Redis; a cluster client routes
        pipelines per slot differently: the engine handles events one by one there)."""
        return isinstance(self._redis, redis.Redis)

    def run_batch(self, ops: list[UserChanges | BatchCheck]) -> list[BatchReply]:
        """Each op in order, in one pipeline: a commit (True: landed, False: refused, nothing
        written) or a check (None: the copy it names is current, and its settle is done;
        else the user's state, nothing removed); a StoreError for an op the server refused
        (that op did nothing). StoreUnavailable when the pipeline failed: each commit may or
        may not have landed (sending the same ops again is safe: their tokens make a landed
        commit a no-op, and a settle removes what is already gone). The send counts waiting
        for ``flush`` go first in the same pipeline (one round trip less before a send)."""
        counts, self._counts = self._counts, []
        calls: list[list[Any]] = list(counts)
        for op in ops:
            meta = self._user_prefix(op.user) + "meta"
            if isinstance(op, BatchCheck):
                calls.append([self._load.sha, 1, meta, *self._load_args(op.user, op.known),
                              *op.settle])
            else:
                calls.append([self._commit.sha, 1, meta, *self._commit_args(op)])
        try:
            with self._errors("commit the events of",
                              f"{len({op.user for op in ops})} user(s)"):
                replies = self._pipeline(calls, raise_on_error=False)
                if any(isinstance(r, redis.exceptions.NoScriptError) for r in replies):
                    # The server lost its scripts (a restart); a count sent twice sets the
                    # same value.
                    for script in (LOAD, COMMIT, OUTBOX_ATTEMPT):
                        self._redis.script_load(script)
                    replies = self._pipeline(calls, raise_on_error=False)
        except StoreUnavailable as exc:
            if counts:  # as when a flush fails: the sends go ahead, their counts are lost
                log.warning("%d send count(s) not recorded in the outbox: %s", len(counts), exc)
            raise
        for reply in replies[:len(counts)]:
            if isinstance(reply, redis.RedisError):
                log.warning("a send count not recorded in the outbox: %s", reply)
        return [self._batch_reply(op, reply)
                for op, reply in zip(ops, replies[len(counts):], strict=True)]

    def _batch_reply(self, op: UserChanges | BatchCheck, reply: Any) -> BatchReply:
        if isinstance(reply, self.UNAVAILABLE):
            raise StoreUnavailable(f"redis store {self.url} is unavailable: cannot commit "
                                   f"user {op.user} ({type(reply).__name__}: {reply})")
        if isinstance(reply, redis.RedisError):
            return StoreError(f"redis store {self.url}: cannot "
                              f"{'load' if isinstance(op, BatchCheck) else 'commit'} user "
                              f"{op.user} ({type(reply).__name__}: {reply})")
        if not isinstance(op, BatchCheck):
            return bool(reply)
        try:  # (never raised: the other ops' commits landed, their outcome must come back)
            return self._snapshot(op.user, reply)
        except StoreError as exc:
            return exc
        except (ValueError, KeyError, TypeError, IndexError) as exc:
            return StoreCorrupt(f"redis store {self.url}: a stored record of user {op.user} "
                                f"is not readable ({type(exc).__name__}: {exc})")

    def audit_trail(self, user: str) -> list[AuditEntry]:
        with self._errors("read the audit trail of", user):
            rows = self._redis.lrange(self._keys(user)[3], 0, -1)
        return [audit_from_dict(json.loads(row)) for row in rows]

    def outbox_pending(self) -> list[StoredPush]:
        # SCAN, not an index key: an index of all users would span cluster slots.
        pattern = f"{_glob_escape(self.prefix)}:{{*}}:outbox"
        head, tail = f"{self.prefix}:{{", "}:outbox"
        out: list[StoredPush] = []
        with self._errors("read the outbox of", "*"):
            for raw in self._redis.scan_iter(match=pattern, count=1000, _type="hash"):
                name = raw.decode()
                user = name[len(head):-len(tail)]
                entries, tries = self._outbox_claim(keys=self._outbox_keys(user),
                                                    args=[self.node, self.lease_ms])
                counts = {tries[i].decode(): int(tries[i + 1]) for i in range(0, len(tries), 2)}
                rows = {entries[i].decode(): entries[i + 1] for i in range(0, len(entries), 2)}
                out += [StoredPush(user, key, json.loads(rows[key]), counts.get(key, 0))
                        for key in sorted(rows)]
        return out

    def outbox_attempt(self, user: str, key: str, attempts: int) -> None:
        if self._schedule is not None:
            if not self._counts:
                self._schedule(self._flush_scheduled)
            self._counts.append([self._outbox_attempt.sha, 3, *self._outbox_keys(user), key,
                                 attempts, self.node, self.lease_ms])
            return
        with self._errors("record a send in the outbox of", user):
            self._outbox_attempt(keys=self._outbox_keys(user),
                                 args=[key, attempts, self.node, self.lease_ms])

    def outbox_remove(self, user: str, keys: list[str]) -> None:
        if not keys:
            return
        with self._errors("remove outbox entries of", user):
            # A script, not MULTI: atomic on the user's slot on a cluster too.
            self._outbox_remove(keys=self._outbox_keys(user), args=keys)

    # --- send counts in one pipeline per loop iteration ---------------------------------------
    def defer_commits(self, schedule: Callable[[Callable[[], None]], object]) -> None:
        """From now on, outbox send counts wait for ``flush()`` and go in one pipeline (one
        round trip for all the sends of a loop iteration; the dispatcher flushes before it
        sends, so each count is in Redis before its send). ``schedule(flush)`` is called when
        the first one waits. Commits stay one script each, answered at once: their version
        check decides whether the pushes they carry exist at all. A cluster client keeps
        one call per count (its pipelines route per slot differently)."""
        if isinstance(self._redis, redis.Redis):
            self._schedule = schedule

    def flush_waiting(self) -> bool:
        """Whether ``flush`` has anything to send (no send count waits after a batch carried
        them)."""
        return bool(self._counts)

    def flush(self) -> None:
        """Send the waiting send counts (StoreUnavailable if that fails: those counts are
        lost, the sends go ahead, as when a count fails on its own)."""
        counts, self._counts = self._counts, []
        if not counts:
            return
        with self._errors("record sends in the outbox of", "any"):
            try:
                self._pipeline(counts)
            except redis.exceptions.NoScriptError:  # the server lost its scripts (a restart)
                self._redis.script_load(OUTBOX_ATTEMPT)
                self._pipeline(counts)  # (a count sent twice sets the same value)

    def _pipeline(self, calls: list[list[Any]], raise_on_error: bool = True) -> list[Any]:
        pipe = self._redis.pipeline(transaction=False)
        for args in calls:
            pipe.execute_command("EVALSHA", *args)
        return list(pipe.execute(raise_on_error=raise_on_error))

    def _flush_scheduled(self) -> None:
        try:
            self.flush()
        except StoreError as exc:  # nobody to raise to: say what was lost
            log.warning("%s", exc)

    def ttl_ms(self, user: str, reg: RegId) -> int:
        """Milliseconds before the registration's orphan TTL fires (-2: no TTL running)."""
        with self._errors("read a TTL of", user):
            return int(self._redis.pttl(self._user_prefix(user) + "ttl:" + _reg_id(reg)))

    def due_key(self, user: str) -> str:
        """The sorted set of the due index holding ``user`` (redis_due.py)."""
        return f"{self.prefix}:due"

    def due_keys(self) -> list[str]:
        """Every set of the due index."""
        return [self.due_key("")]

    def due_users(self, until: float, limit: int) -> list[tuple[float, str]]:
        with self._errors("read the due index of", "any"):
            return due_before(self._redis, self.due_keys(), until, limit)

    def due_next(self) -> float | None:
        with self._errors("read the due index of", "any"):
            return due_first(self._redis, self.due_keys())

    def close(self) -> None:
        try:
            self.flush()
        except StoreError as exc:
            log.warning("%s", exc)
        self._redis.close()


def _glob_escape(text: str) -> str:
    """``text`` matched literally in a SCAN MATCH pattern."""
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


@functools.lru_cache(maxsize=65536)
def _reg_id(reg: RegId) -> str:
    """The registration's id in the user's keys (cached: every commit names several)."""
    return json.dumps(list(reg))


def _mask(url: str) -> str:
    """The URL with its password masked."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))
