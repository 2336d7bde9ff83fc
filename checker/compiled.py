"""Breadth-first exploration with the successor function compiled from the model.

explore.py runs the real tables, guards and actions once per (model part, event); that is
exact but costs tens of microseconds a step, and a bounded world has millions of them. Here a
state is a few uint64 words with a fixed-width field per *component*: each field of each
session (state, binding), of each registration (state, owner, errors, pushed stanzas), the
enabling order, each tracked smacks queue, each registration's ghost fields (delivered,
counted errors, a push pending) and the checker's recency. The successor function is compiled
by memoization:

- One transition (environment, model step on a TableWorld, properties, queue and ghost
  updates) is computed in Python on a world whose records read their fields from the state
  lazily, so the computation *records which fields it read*, in order.
- Its outcome (the fields written, the properties violated) depends on nothing else, so it is
  stored at the end of a path in a decision trie per event: each node reads one field and
  branches on its value. Every state matching a path takes the same transition, and most steps
  read few fields (a routine ack reads its session's state only).
- The BFS runs level by level over whole frontiers with numpy: descend the tries (one gather
  per trie level), apply the leaf's writes (mask and or), deduplicate. Python runs only where a
  trie has no path yet.

The packed state and the visited set are in packed.py, the lazily read world in lazyworld.py.
No rule is written here: every leaf comes from running the generated tables (or a mutant's)
with the model's guards and actions, and the properties are properties.py's. Both explorers
find the same states, transitions and verdicts (tests/test_compiled.py).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from functools import partial
from typing import Any

import networkx as nx
import numpy as np

from pushrules.model.records import RegistrationRecord, SessionRecord
from pushrules.model.world import ImpossibleEvent, UndeclaredRejection

from .bounded import APP, USER, BoundedWorld, Bounds, take, zero_clock
from .environment import (
    DELIVERED_ADD,
    QUEUE_EVENTS,
    TIMERS,
    clock_raised,
    ghost_touched,
    ghost_writes,
    is_session_event,
    mark_writes,
    queue_after,
    raised,
    recency_after,
    result_outcome,
    result_raised,
    session_ghost_writes,
    setting_after,
    time_ghost_writes,
    timer_raised,
)
from .explore import Result, Violation, coverage, record, timed_run
from .lazyworld import LazyRegistration, LazySession, LazyState, LazyWorld
from .packed import (
    BoundExceeded,
    GhostFields,
    Layout,
    Records,
    RegistrationFields,
    SessionFields,
    SessionGhostFields,
    View,
    Visited,
)
from .parts import (
    ABSENT_REGISTRATION,
    ABSENT_SESSION,
    ENABLED,
    NO_GHOST,
    NO_SESSION_GHOST,
    GhostPart,
    RegistrationPart,
    SessionPart,
)
from .progress import Progress
from .properties import PROPERTIES, Step, check_state, check_transition
from .tableworld import TableWorld

_U64 = np.uint64
_SKIP, _REJECTED, _ERROR, _OK = 0, 1, 2, 3
_UNKNOWN = -1
_CHUNK = 1 << 15  # frontier states per vectorized batch: bounds the working memory
_SCALAR_REGISTRATION_FIELDS = tuple((k, name) for k, name in enumerate(RegistrationPart._fields)
                                    if name not in ("pushed", "calls"))
"""Fields a lazy registration writes as values (pushed: a dedup set; calls: call_writes)."""
_GHOST_FIELD = {name: k for k, name in enumerate(GhostPart._fields)}
_DELIVERED = _GHOST_FIELD["delivered"]


class Leaf:
    """What a transition does from every state matching its trie path."""

    __slots__ = ("kind", "writes", "bad", "event", "key", "code", "pushes")

    def __init__(self, kind: int, key: tuple[Any, ...], event: Any = None) -> None:
        self.code: tuple[int, ...] = ()  # the state it was computed from
        self.kind = kind
        self.key = key
        self.event = event
        self.writes: dict[int, Any] = {}
        self.bad: list[tuple[list[str], str]] = []
        self.pushes: list[Any] = []


class CompiledExplorer:
    """Explore one bounded world with one world class (TableWorld over some tables)."""

    def __init__(self, bounds: Bounds, world_cls: type[TableWorld] = TableWorld, *,
                 word_bits: int = 64) -> None:
        """``word_bits`` below 64 packs fewer fields per word (tests use it to run the
        several-word path, which larger bounds need, on small worlds)."""
        self.world = BoundedWorld(bounds)
        self.bounds = bounds
        self.world_cls = world_cls
        self.keys = self.world.alphabet()
        w = self.world
        self.stanza_ids = [s.id for s in w.stanzas]
        self._stanza_bit = {s.id: 1 << k for k, s in enumerate(w.stanzas) if s.id is not None}
        if len(self._stanza_bit) > w.config.dedup_window:  # lazyworld.LazyPushed's len()
            raise ValueError("the bounded world has more stanza ids than dedup_window")
        self.tracked = [i for i in range(bounds.sessions) if w.node_of(i) is not None]
        self.layout = Layout(w, world_cls.tables, self.tracked, word_bits)
        self.lazy_cls = type("Lazy" + world_cls.__name__, (LazyWorld, world_cls), {})
        self.taken: set[tuple[str, str, str, int]] = set()
        self.leaves: list[Leaf] = []
        self.computed = 0
        self.progress: Progress | None = None  # set to report progress (checker/progress.py)
        words = self.layout.words
        # the tries: node -> field read, first slot; a slot holds a node, ~leaf or _UNKNOWN
        self._node_field = np.zeros(1024, dtype=np.int64)
        self._node_base = np.zeros(1024, dtype=np.int64)
        self._nodes = 0
        self._slots = np.full(1 << 16, _UNKNOWN, dtype=np.int64)
        self._used = 0
        # one trie per event key, and one more for the state invariants
        self.invariants = len(self.keys)
        self._roots = [_UNKNOWN] * (len(self.keys) + 1)
        self._leaf_kind = np.zeros(1024, dtype=np.int8)
        self._leaf_clear = np.zeros((1024, words), dtype=_U64)
        self._leaf_set = np.zeros((1024, words), dtype=_U64)
        self._leaf_bad = np.zeros(1024, dtype=bool)

    # --- states --------------------------------------------------------------------------
    def initial(self) -> tuple[int, ...]:
        world = self.world_cls(self.world.config, clock=zero_clock)
        for event in self.world.prefix():
            world.handle(event)
        lay, wd = self.layout, self.world
        values: dict[int, Any] = {}
        for i, sid in enumerate(wd.sids):
            values.update(zip(lay.s[i], _session_value(wd, world.sessions.get(sid)),
                              strict=True))
        table = world.users.get(USER, {})
        enabled = []
        for j, node in enumerate(wd.nodes):
            reg = table.get((APP, node))
            values.update(zip(lay.r[j], self._reg_value(reg), strict=True))
            if reg is not None and reg.state in ENABLED:
                enabled.append((reg.seq, j))
            values.update(zip(lay.g[j], NO_GHOST, strict=True))
        for fields in lay.sg:
            values.update(zip(fields, NO_SESSION_GHOST, strict=True))
        values[lay.setting] = 0
        order = tuple(j for _, j in sorted(enabled))
        values[lay.order] = order
        values[lay.recency] = order
        values[lay.chat] = None
        for field in lay.q.values():
            values[field] = ()
        return lay.pack(values)

    def _reg_value(self, reg: RegistrationRecord | None) -> tuple[Any, ...]:
        if reg is None:
            return tuple(ABSENT_REGISTRATION)
        index = self.world.session_index
        owner = -1 if reg.session is None else index[reg.session]
        base = (reg.state, owner, reg.errors, self._mask(reg.pushed), 0)  # calls: below
        if not self.bounds.time:
            return base + tuple(ABSENT_REGISTRATION[len(base):])
        stanza = self.world.stanza_index
        return base + (reg.probe, -1 if reg.probe_session is None else index[reg.probe_session],
                       int(reg.last_sent is not None),
                       tuple((stanza[h.stanza.id], h.rule) for h in reg.held),
                       int(reg.hold_until is not None), int(reg.expire_at is not None),
                       int(reg.retry_at is not None))

    def _mask(self, pushed: dict[str, None]) -> int:
        """A registration's dedup set as its field: one bit per stanza."""
        mask = 0
        for sid in pushed:
            mask |= self._stanza_bit[sid]
        return mask

    def steps(self) -> list[tuple[tuple[Any, ...], Any]]:
        """(model part, event) of every distinct step computed through the model's tables
        (taken, rejected or failed): what conformance.py replays on the other engines."""
        return [(self.model(leaf.code), leaf.event) for leaf in self.leaves
                if leaf.event is not None and leaf.code]

    def model(self, code: tuple[int, ...]) -> tuple[Any, ...]:
        """The model part ``(sessions, registrations, order)`` of a packed state."""
        lay = self.layout
        return (tuple(SessionPart(*(lay.value(code, f) for f in fs)) for fs in lay.s),
                tuple(RegistrationPart(*(lay.value(code, f) for f in fs)) for fs in lay.r),
                lay.value(code, lay.order))

    def queue(self, code: tuple[int, ...], session: int) -> tuple[Any, ...]:
        field = self.layout.q.get(session)
        return () if field is None else self.layout.value(code, field)

    def event_at(self, code: tuple[int, ...], e: int) -> Any:
        key = self.keys[e]
        if key[0] in QUEUE_EVENTS:
            return self.world.event(key, self.queue(code, key[1]))
        return self.world.event(key)

    # --- one transition, computed on a lazily materialized world ---------------------------
    def compute(self, e: int, code: tuple[int, ...]) -> tuple[Leaf, list[tuple[int, int]]]:
        """The transition of event key ``e`` from ``code``, and the fields it read."""
        self.computed += 1
        st = LazyState(self, code)
        view = st.view
        if e == self.invariants:
            return self._invariants(view), view.reads
        key = self.keys[e]
        event = self._raised(key, view)
        if event is None:
            return Leaf(_SKIP, key), view.reads
        leaf = Leaf(_OK, key, event)
        leaf.code = code
        try:
            self._take(st, leaf)
        except BoundExceeded as out:
            self._outside(leaf, out)
        return leaf, view.reads

    def _invariants(self, view: View) -> Leaf:
        lay = self.layout
        leaf = Leaf(_SKIP, ("invariants",))
        model = (Records(view, lay.s, SessionFields), Records(view, lay.r, RegistrationFields),
                 None)
        bad = check_state(model, self.bounds.max_devices)
        if bad:
            leaf.bad.append((bad, ""))
        return leaf

    def _raised(self, key: tuple[Any, ...], view: View) -> Any:
        """The event the environment raises for ``key`` here (with its session's queue), or
        None when it is not raised (environment.py)."""
        lay, kind = self.layout, key[0]
        field = lay.q.get(key[1]) if is_session_event(kind) else None

        def queue() -> tuple[Any, ...]:
            return () if field is None else view(field)

        if kind == "result":
            j = key[1]
            if not result_raised(view(lay.r[j][0]), lambda: view(lay.g[j][2])):
                return None
        elif kind in TIMERS:
            if self.bounds.time:
                if not clock_raised(kind, Records(view, lay.r, RegistrationFields)[key[1]]):
                    return None
            elif not timer_raised(view(lay.r[key[1]][0])):
                return None
        elif not raised(key, queue, Records(view, lay.s, SessionFields)):
            return None
        return self.world.event(key, queue()) if kind in QUEUE_EVENTS else self.world.event(key)

    def _take(self, st: LazyState, leaf: Leaf) -> None:
        """Run the event on the lazy world; the leaf's outcome, writes and violations."""
        event, view = leaf.event, st.view
        world = st.world()
        try:
            pushes = take(world, event)
        except ImpossibleEvent as exc:
            writes, _, _ = self._writes(st)
            if isinstance(exc, UndeclaredRejection):
                leaf.kind = _ERROR
                leaf.bad.append((["every_event_handled"], f"undeclared rejection: {exc}"))
            elif any(view(f) != v for f, v in writes.items()):
                leaf.kind = _ERROR
                leaf.bad.append((["every_event_handled"],
                                 f"a rejected event changed the state: {exc}"))
            else:
                leaf.kind = _REJECTED
            return
        except BoundExceeded:
            raise  # out of the bounded world: compute() reports it (fields_in_domain)
        except Exception as exc:  # a model defect: reported as a property violation
            leaf.kind = _ERROR
            leaf.bad.append((["every_event_handled"],
                             f"{event.EVENT} raised {type(exc).__name__}: {exc}"))
            return
        self.taken |= world.taken
        leaf.pushes = pushes
        writes, changed_s, changed_r = self._writes(st)
        self._properties(st, world, leaf, pushes, writes, changed_s, changed_r)
        leaf.writes = writes
        if st.stray is not None:
            raise BoundExceeded(st.stray)

    @staticmethod
    def _outside(leaf: Leaf, exc: BoundExceeded) -> Leaf:
        """A step out of the bounded world: reported, and not explored."""
        leaf.kind, leaf.writes = _ERROR, {}
        leaf.bad.append((["fields_in_domain"], f"{leaf.key}: {exc}"))
        return leaf

    def _writes(self, st: LazyState) -> tuple[dict[int, Any], list[int], list[int]]:
        """The model fields the step wrote ({field: value after}), and the sessions and
        registrations it may have changed."""
        writes: dict[int, Any] = {}
        changed_s = self._session_writes(st, writes)
        changed_r, reorder = self._registration_writes(st, writes)
        if reorder:
            self._order_write(st, writes)
        if st.chat_written and st.chat_value != st.view(self.layout.chat):
            writes[self.layout.chat] = st.chat_value
        return writes, changed_s, changed_r

    def _session_writes(self, st: LazyState, writes: dict[int, Any]) -> list[int]:
        lay, wd, view = self.layout, self.world, st.view
        if st.unknown_sessions:
            raise ValueError(f"unexpected sessions {sorted(st.unknown_sessions)}")
        changed = []
        for i in sorted(st.sessions):
            rec = st.sessions[i]
            fields = lay.s[i]
            if isinstance(rec, LazySession):
                new = {fields[k]: rec.vals[name] for k, name in enumerate(SessionPart._fields)
                       if name in rec.dirty}
            elif rec is None:
                existed = view(fields[0]) != "offline" or view(fields[1]) >= 0
                new = dict(zip(fields, ABSENT_SESSION, strict=True)) if existed else {}
            else:
                new = dict(zip(fields, _session_value(wd, rec), strict=True))
            if new:
                writes.update(new)
                changed.append(i)
        return changed

    def _registration_writes(self, st: LazyState, writes: dict[int, Any]
                             ) -> tuple[list[int], bool]:
        """The registrations changed, and whether the enabling order may have changed."""
        lay, wd, view = self.layout, self.world, st.view
        reorder = st._order is not None or st.enables > 0
        changed = []
        for j in sorted(st.regs):
            rec = st.regs[j]
            fields = lay.r[j]
            before = view(fields[0])
            if isinstance(rec, LazyRegistration):
                new = self._lazy_registration_writes(rec, fields, view)
                after = rec.vals["state"]
                reorder = reorder or "seq" in rec.dirty
            else:
                value = self._reg_value(rec)
                new = dict(zip(fields, value, strict=True)) if (
                    rec is not None or before != "absent") else {}
                after = value[0]
                reorder = reorder or rec is not None
            if rec is not None and after == "absent":
                raise BoundExceeded(f"registration {wd.nodes[j]} is stored in state absent, "
                                    "which the bounded world keeps for a registration not "
                                    "stored (a fan-out to it would raise ModelError)")
            if (before in ENABLED) != (after in ENABLED):
                reorder = True
            if new:
                writes.update(new)
                changed.append(j)
        for j, bit in st.call_writes.items():  # v2: the call's targets (world.calls)
            field = lay.r[j][4]
            if bit != view(field) or field in writes:
                writes[field] = bit
                if j not in changed:
                    changed.append(j)
        return sorted(changed), reorder

    def _lazy_registration_writes(self, rec: LazyRegistration, fields: list[int],
                                  view: View) -> dict[int, Any]:
        new = {fields[k]: rec.vals[name] for k, name in _SCALAR_REGISTRATION_FIELDS
               if name in rec.dirty}
        pushed = rec._pushed
        if pushed is not None:  # the dedup set's bits the step wrote (not read to compare)
            bits = self.layout.composite[fields[3]]
            new.update((bits[k], bit) for k, bit in pushed.written.items())
        return new

    def _order_write(self, st: LazyState, writes: dict[int, Any]) -> None:
        """The enabling order after the step, from the registrations' ranks."""
        lay, wd, regs = self.layout, self.world, st.regs
        order = st.order()
        enabled = []
        for j in range(len(wd.nodes)):
            if j in regs:
                reg = regs[j]
                if reg is not None and reg.state in ENABLED:
                    enabled.append((reg.seq, j))
            elif j in order:
                enabled.append((order.index(j) + 1, j))
        new_order = tuple(j for _, j in sorted(enabled))
        if new_order != order:
            writes[lay.order] = new_order

    def _properties(self, st: LazyState, world: TableWorld, leaf: Leaf, pushes: list[Any],
                    writes: dict[int, Any], changed_s: list[int], changed_r: list[int]) -> None:
        """The step's properties, then the environment's and the checker's updates (into
        ``writes``)."""
        lay, wd, view = self.layout, self.world, st.view
        key, event = leaf.key, leaf.event
        pre_r = Records(view, lay.r, RegistrationFields)
        post_r = Records(view, lay.r, RegistrationFields, writes)
        if world.nondeterministic:
            leaf.bad.append((["deterministic"],
                             f"several rows enabled: {world.nondeterministic[0]}"))
        left = sorted(wd.nodes[j] for j in changed_r
                      if pre_r[j].state in ENABLED and post_r[j].state not in ENABLED)
        entries = world.audit_log
        if entries and self.bounds.time:
            # a retried registration's own entries (a failed probe disables it again, its
            # probing ends, a successful probe enables it) are not disables of this event:
            # one each at most
            retried = [e.node for e in entries
                       if pre_r[wd.reg_index[(e.user, e.jid, e.node)]].state not in ENABLED]
            if len(set(retried)) != len(retried):
                left = ["(a retried registration recorded twice)"]
            entries = [e for e in entries if e.node not in retried]
        if left != sorted(entry.node for entry in entries):
            leaf.bad.append((["disable_recorded"], "the audit trail does not record each "
                             "registration disabled by this event exactly once"))
        step = Step(wd, Records(view, lay.s, SessionFields), pre_r,
                    Records(view, lay.s, SessionFields, writes), post_r, changed_s, changed_r,
                    Records(view, lay.g, GhostFields), lambda: view(lay.recency), key, event,
                    pushes, self.bounds.max_errors, self.bounds.max_devices,
                    Records(view, lay.sg, SessionGhostFields), lambda: view(lay.setting),
                    tuple(world.last_notes) if self.bounds.time else ())
        bad = check_transition(step)
        if bad:
            shown = "; ".join(json.dumps(p.to_json()) for p in pushes) or "no push"
            leaf.bad.append((bad, f"{event.EVENT} gave: {shown}"))
        self._queue_writes(view, key, changed_s, step.post_sessions, writes)
        self._ghost_writes(view, key, changed_r, wd.push_masks(pushes),
                           wd.rung(pushes, step.stanzas), pre_r, post_r, writes,
                           {j for j, _ in step.known_pushes()})
        if self.bounds.v2:
            self._v2_ghost_writes(key, changed_s, step.post_sessions, writes)

    def _v2_ghost_writes(self, key: tuple[Any, ...], changed_s: list[int], post_s: Any,
                         writes: dict[int, Any]) -> None:
        """The checker's record of the sessions' CSI and the room setting (environment.py)."""
        lay = self.layout
        for i, value in session_ghost_writes(key, changed_s, post_s).items():
            writes[lay.sg[i][0]] = value
        setting = setting_after(key)
        if setting is not None:
            writes[lay.setting] = setting

    def _queue_writes(self, view: View, key: tuple[Any, ...], changed_s: list[int],
                      post_s: Sequence[Any],
                      writes: dict[int, Any]) -> None:
        """The smacks queues after the step (environment.py): the event's session's, and
        none for a session that went offline."""
        lay = self.layout
        session_event = is_session_event(key[0])
        if session_event:
            field = lay.q.get(key[1])
            new = queue_after(key, field is not None,
                              lambda: () if field is None else view(field))
            if new is not None:
                writes[field] = new  # type: ignore[index]
        for i in {*changed_s, *((key[1],) if session_event else ())}:
            field = lay.q.get(i)
            if field is not None and post_s[i].state == "offline":
                writes[field] = ()

    def _ghost_writes(self, view: View, key: tuple[Any, ...], changed_r: list[int],
                      masks: list[int],
                      rung: list[bool], pre_r: Records, post_r: Records,
                      writes: dict[int, Any], pushed: set[int]) -> None:
        """The ghost fields and the recency after the step (environment.py); ``rung``: per
        registration, whether the step pushed it the call's proposal; ``pushed``: the
        registrations it pushed."""
        lay, wd = self.layout, self.world
        ghosts = Records(view, lay.g, GhostFields)
        same_enabled = True
        enabled_j = wd.reg_index[(USER, APP, key[2])] if key[0] == "enable" else None
        touched = ghost_touched(key, changed_r, masks, enabled_j if wd.marks_kept else None)
        probed_in = None  # time: the registration a successful probe enabled again
        for j in sorted({*touched, *pushed, *(x for x, r in enumerate(rung) if r)}):
            enabled = post_r[j].state in ENABLED
            before = pre_r[j].state in ENABLED
            if before != enabled:
                same_enabled = False
                if enabled and key[0] == "result":
                    probed_in = j
            fields = lay.g[j]
            marks = mark_writes(key, j, enabled_j, self.bounds, rung[j], enabled)
            kept = self.bounds.time and self._time_marks(key, j, ghosts[j], marks, j in pushed,
                                                         (before, enabled), enabled_j, rung[j])
            for name, value in ghost_writes(ghosts[j], enabled, masks[j], result_outcome(key, j),
                                            marks, kept).items():
                if name == DELIVERED_ADD:  # one bit per stanza added, the others not read
                    bits = lay.composite[fields[_DELIVERED]]
                    writes.update((bits[k], 1) for k in bits if (value >> k) & 1)
                else:
                    writes[fields[_GHOST_FIELD[name]]] = value
        recency = recency_after(key, lambda: view(lay.recency),
                                enabled_j if probed_in is None else probed_in,
                                lambda x: post_r[x].state in ENABLED, same_enabled)
        if recency is not None:
            writes[lay.recency] = recency

    def _time_marks(self, key: tuple[Any, ...], j: int, ghost: Any, marks: dict[str, int],
                    pushed: bool, enabled: tuple[bool, bool], enabled_j: int | None,
                    rung: bool) -> bool:
        """A time world: registration j's time ghosts into ``marks`` (environment.py
        time_ghost_writes), and whether it is retried after the step (its dedup memory and
        calls are kept for the probes: events.md "Retry")."""
        before, after = enabled
        node = key[2] if key[0] == "disable" else None
        matched = key[0] == "disable" and (node is None or self.world.nodes[j] == node)
        marks.update(time_ghost_writes(key, j, ghost, pushed, before, after, matched))
        if j == enabled_j and not before:  # enabled anew: no dedup memory, no calls
            marks.update(delivered=0, rang=0)
        elif after and not before:  # a successful probe: no calls, dedup kept
            marks["rang"] = 0
        if after or not marks.get("retried", ghost.retried):
            return False
        marks.pop("rang", None)
        if rung:
            marks["rang"] = 1
        return True

    # --- the tries -------------------------------------------------------------------------
    def _new_node(self, field: int) -> int:
        n = self._nodes
        if n == len(self._node_field):
            self._node_field = np.resize(self._node_field, 2 * n)
            self._node_base = np.resize(self._node_base, 2 * n)
        width = 1 << self.layout.bits[field]
        if self._used + width > len(self._slots):
            grown = np.full(2 * (self._used + width), _UNKNOWN, dtype=np.int64)
            grown[:len(self._slots)] = self._slots
            self._slots = grown
        self._node_field[n] = field
        self._node_base[n] = self._used
        self._used += width
        self._nodes += 1
        return n

    def _new_leaf(self, leaf: Leaf) -> int:
        n = len(self.leaves)
        self.leaves.append(leaf)
        if n == len(self._leaf_kind):
            self._leaf_kind = np.resize(self._leaf_kind, 2 * n)
            self._leaf_clear = np.resize(self._leaf_clear, (2 * n, self.layout.words))
            self._leaf_set = np.resize(self._leaf_set, (2 * n, self.layout.words))
            self._leaf_bad = np.resize(self._leaf_bad, 2 * n)
        try:
            clear, put = self.layout.masks(leaf.writes)
        except BoundExceeded as exc:
            self._outside(leaf, exc)
            clear = put = [0] * self.layout.words
        self._leaf_kind[n] = leaf.kind
        self._leaf_clear[n] = clear
        self._leaf_set[n] = put
        self._leaf_bad[n] = bool(leaf.bad)
        return n

    def _insert(self, e: int, leaf: Leaf, reads: list[tuple[int, int]]) -> None:
        """Add the path ``reads`` -> ``leaf`` to event ``e``'s trie."""
        target = ~self._new_leaf(leaf)
        if not reads:
            if self._roots[e] != _UNKNOWN:
                raise RuntimeError(f"trie {e}: a transition read nothing where "
                                   "another read the state")
            self._roots[e] = target
            return
        if self._roots[e] == _UNKNOWN:
            self._roots[e] = self._new_node(reads[0][0])
        node = self._roots[e]
        for k, (field, vid) in enumerate(reads):
            if node < 0 or self._node_field[node] != field:
                raise RuntimeError(f"trie {e}: the transition read the state in an "
                                   "order that depends on more than what it read (is the model "
                                   "deterministic?)")
            slot = self._node_base[node] + vid
            if k == len(reads) - 1:
                self._slots[slot] = target
            else:
                if self._slots[slot] == _UNKNOWN:
                    self._slots[slot] = self._new_node(reads[k + 1][0])
                node = int(self._slots[slot])

    def _descend(self, e: int, codes: np.ndarray) -> np.ndarray:
        """The leaf of event ``e`` for every state (row) of ``codes``, computing the paths
        the tries do not have yet."""
        if self._roots[e] == _UNKNOWN:
            self._insert(e, *self.compute(e, tuple(codes[0].tolist())))
        at = np.full(len(codes), self._roots[e], dtype=np.int64)
        rows = np.flatnonzero(at >= 0)
        lay = self.layout
        while rows.size:
            nodes = at[rows]
            fields = self._node_field[nodes]
            values = (codes[rows, lay.np_word[fields]] >> lay.np_shift[fields]) \
                & lay.np_mask[fields]
            slots = self._node_base[nodes] + values.astype(np.int64)
            found = self._slots[slots]
            missing = np.flatnonzero(found == _UNKNOWN)
            if missing.size:
                _, first = np.unique(slots[missing], return_index=True)
                for k in missing[first].tolist():
                    self._insert(e, *self.compute(e, tuple(codes[rows[k]].tolist())))
                found = self._slots[slots]
            at[rows] = found
            rows = rows[found >= 0]
        return ~at

    # --- exploration -----------------------------------------------------------------------
    def run(self, *, stop_at_first: bool = False, max_states: int | None = None,
            graph_checks: bool = True) -> Result:
        """Explore the bounded world breadth first."""
        result = timed_run(self.bounds, lambda result: self._bfs(
            result, stop_at_first, max_states, graph_checks))
        if self.bounds.time:  # counterexamples with `at` (checker/timing.py)
            from .timing import timed_trace

            for violation in result.violations.values():
                if violation.trace:
                    violation.timed = timed_trace(self, violation)
        return result

    def code(self, n: int) -> tuple[int, ...]:
        return tuple(self._codes[n].tolist())

    def path(self, n: int) -> list[Any]:
        """The events from the initial state to state number ``n`` (setup prefix first)."""
        out = []
        while n > 0:
            p = int(self._parent[n])
            out.append(self.event_at(self.code(p), int(self._via[n])))
            n = p
        return self.world.prefix() + out[::-1]

    def _live(self, codes: np.ndarray) -> np.ndarray:
        """The number of sessions not offline in each state."""
        lay = self.layout
        out = np.zeros(len(codes), dtype=np.int64)
        for fields in lay.s:
            f = fields[0]
            lut = np.array([v != "offline" for v in lay.values[f]], dtype=np.int64)
            out += lut[((codes[:, lay.word[f]] >> lay.np_shift[f]) & lay.np_mask[f])
                       .astype(np.int64)]
        return out

    def _fresh(self, post: np.ndarray, source: np.ndarray, key: np.ndarray,
               visited: Visited) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The states in ``post`` not visited yet, each once, with the source state and event
        of its first discovery (the least source, then the least event), in that order."""
        new = ~visited.contains(post)
        post, source, key = post[new], source[new], key[new]
        # one sort key for (source, event): the discovery order
        found = source.astype(np.int64) * len(self.keys) + key
        order = np.lexsort((found, *(post[:, w] for w in range(post.shape[1]))))
        post, found = post[order], found[order]
        first = np.ones(len(post), dtype=bool)
        first[1:] = (post[1:] != post[:-1]).any(axis=1)
        post, found = post[first], found[first]
        order = np.argsort(found, kind="stable")
        post, found = post[order], found[order]
        return post, found // len(self.keys), (found % len(self.keys)).astype(np.int16)

    def _bfs(self, result: Result, stop_at_first: bool, max_states: int | None,
             graph_checks: bool) -> None:
        lay = self.layout
        words = lay.words
        start = self.initial()
        size = 1 << 16
        self._codes = np.zeros((size, words), dtype=_U64)
        self._parent = np.zeros(size, dtype=np.int64)
        self._via = np.zeros(size, dtype=np.int16)
        self._codes[0], self._parent[0], self._via[0] = start, -1, -1
        moved = np.zeros(size, dtype=bool)
        lowers = np.zeros(size, dtype=bool)
        total = 1
        visited = Visited(words=words)
        visited.add(self._codes[:1])
        violations = result.violations
        transitions = 0
        events = len(self.keys)

        fail = partial(record, violations, self.path)

        def check_states(new: np.ndarray, first: int) -> None:
            leaves = self._descend(self.invariants, new)
            for k in np.flatnonzero(self._leaf_bad[leaves]).tolist():
                names = self.leaves[int(leaves[k])].bad[0][0]
                if any(name not in violations for name in names):
                    n = first + k
                    model = self.model(self.code(n))
                    after = self.event_at(self.code(int(self._parent[n])),
                                          int(self._via[n])).EVENT if n else None
                    fail(names, n, None, f"state after {after}: {model}" if after
                         else f"in the initial state: {model}")

        check_states(self._codes[:1], 0)
        level_start, level_end = 0, 1
        depth = 0
        limit = max_states if max_states is not None else -1
        while level_start < level_end and not result.stopped_early:
            for chunk in range(level_start, level_end, _CHUNK):
                stop = min(chunk + _CHUNK, level_end)
                frontier = self._codes[chunk:stop]
                live_now = self._live(frontier)
                posts, sources, keys_of = [], [], []
                for e in range(events):
                    leaves = self._descend(e, frontier)
                    for k in np.flatnonzero(self._leaf_bad[leaves]).tolist():
                        leaf = self.leaves[int(leaves[k])]
                        for names, detail in leaf.bad:
                            if any(name not in violations for name in names):
                                fail(names, chunk + k, leaf.event, detail, e)
                    ok = np.flatnonzero(self._leaf_kind[leaves] == _OK)
                    if not ok.size:
                        continue
                    chosen = leaves[ok]
                    before = frontier[ok]
                    post = (before & ~self._leaf_clear[chosen]) | self._leaf_set[chosen]
                    transitions += ok.size
                    moved[chunk + ok[(post != before).any(axis=1)]] = True
                    lowers[chunk + ok[self._live(post) < live_now[ok]]] = True
                    posts.append(post)
                    sources.append(ok + chunk)
                    keys_of.append(np.full(ok.size, e, dtype=np.int16))
                if not posts:
                    continue
                post, source, key = self._fresh(np.concatenate(posts),
                                                np.concatenate(sources),
                                                np.concatenate(keys_of), visited)
                if 0 <= limit <= total + len(post):
                    keep = max(limit - total, 0)
                    post, source, key = post[:keep], source[:keep], key[:keep]
                    result.stopped_early = True
                visited.add(post)
                need = total + len(post)
                if need > len(self._codes):
                    grow = max(need, 2 * len(self._codes))
                    self._codes = np.resize(self._codes, (grow, words))
                    self._parent = np.resize(self._parent, grow)
                    self._via = np.resize(self._via, grow)
                    moved = np.concatenate([moved, np.zeros(grow - len(moved), dtype=bool)])
                    lowers = np.concatenate([lowers, np.zeros(grow - len(lowers), dtype=bool)])
                self._codes[total:need] = post
                self._parent[total:need] = source
                self._via[total:need] = key
                check_states(post, total)
                total = need
                if self.progress is not None:
                    self.progress.update(total, max_states, f"{transitions:,} transitions, "
                                         f"depth {depth}")
                if (stop_at_first and violations) or result.stopped_early:
                    result.stopped_early = True
                    break
            level_start, level_end = level_end, total
            depth += 1
        result.states = total
        result.transitions = transitions
        self._codes = self._codes[:total]
        self._parent, self._via = self._parent[:total], self._via[:total]
        if result.stopped_early:
            return
        coverage(result, self.world_cls, self.taken, self.bounds.expiry,
                 set().union(*(lay.values[fs[0]] for fs in lay.s)),
                 set().union(*(lay.values[fs[0]] for fs in lay.r)), self.bounds.v2,
                 self.bounds.time)
        if graph_checks:
            self._dead_states(result, moved[:total], lowers[:total], self._live(self._codes))

    def _dead_states(self, result: Result, moved: np.ndarray, lowers: np.ndarray,
                     live: np.ndarray) -> None:
        """No dead state: every state has a successor other than itself, and a state with
        every session offline is reachable from every state. The second is proved by a
        witness: from every state with a session not offline, some event brings one of them
        offline (by induction on their number). Where the witness fails, reachability is
        decided exactly with networkx on the explored state graph (up to GRAPH_STATES states;
        beyond, the witness's failure is reported as it is)."""
        result.graph = "witness: some event lowers the number of sessions not offline"
        stuck = np.flatnonzero(~moved)
        if stuck.size:
            n = int(stuck[0])
            result.violations.setdefault("no_dead_state", Violation(
                "no_dead_state", self.path(n),
                f"no event leaves state {self.model(self.code(n))}"))
            return
        trapped = np.flatnonzero((live > 0) & ~lowers)
        if not trapped.size:
            return
        n = int(trapped[0])
        detail = f"no event brings a session offline from {self.model(self.code(n))}"
        if len(self._codes) <= GRAPH_STATES:
            result.graph = "state graph (networkx), where the witness failed"
            graph = self._state_graph()
            quiet = [m for m in np.flatnonzero(live == 0).tolist()]
            graph.add_edges_from((m, "quiet") for m in quiet)
            reach = nx.ancestors(graph, "quiet") | set(quiet)
            cut = [m for m in trapped.tolist() if m not in reach]
            if not cut:
                return  # every state still reaches a quiet one, through sessions coming up
            n = cut[0]
            detail = (f"no state with every session offline is reachable from "
                      f"{self.model(self.code(n))}")
        else:
            detail += f" (more than {GRAPH_STATES:,} states: reachability not decided exactly)"
        result.violations.setdefault("no_dead_state", Violation(
            "no_dead_state", self.path(n), detail))

    def _state_graph(self) -> nx.DiGraph:
        """The explored states (numbers) and every transition between them."""
        number = {tuple(row): m for m, row in enumerate(self._codes.tolist())}
        graph = nx.DiGraph()
        graph.add_nodes_from(range(len(self._codes)))
        for e in range(len(self.keys)):
            leaves = self._descend(e, self._codes)
            ok = np.flatnonzero(self._leaf_kind[leaves] == _OK)
            chosen = leaves[ok]
            post = (self._codes[ok] & ~self._leaf_clear[chosen]) | self._leaf_set[chosen]
            graph.add_edges_from(zip(ok.tolist(), (number[tuple(row)] for row in post.tolist()),
                                     strict=True))
        return graph


GRAPH_STATES = 200_000
"""The most states whose full graph the dead-state analysis builds in networkx."""


def _session_value(world: BoundedWorld, record: SessionRecord | None) -> tuple[str, int, str]:
    if record is None:
        return ABSENT_SESSION
    binding = -1 if record.binding is None else world.reg_index[record.binding]
    return (record.state, binding, getattr(record, "csi", ABSENT_SESSION.csi))



def check(bounds: Bounds | None = None, **kwargs: Any) -> Result:
    return CompiledExplorer(bounds or Bounds()).run(**kwargs)


__all__ = ["PROPERTIES", "BoundExceeded", "CompiledExplorer", "Layout", "check"]
