"""Exhaustive breadth-first exploration of a bounded world over the generated tables.

A state is a canonical tuple (see properties.py); successors come from a TableWorld restored from
it, so every step runs the generated rows and the model's own guards and actions. BFS order
makes the first violation of each property found also a shortest one; its path is kept through
parent links and printed as a replayable contract trace.
"""

from __future__ import annotations

import gc
import json
import time
from array import array
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any, NamedTuple

import networkx as nx

from pushrules.model.extract import V2_MACHINE_EVENTS, v2_row
from pushrules.model.records import RegistrationRecord, SessionRecord
from pushrules.model.rules import TIME_RULES
from pushrules.model.world import ImpossibleEvent, UndeclaredRejection, WorldBase

from .bounded import APP, USER, BoundedWorld, Bounds, take, zero_clock
from .environment import (
    QUEUE_EVENTS,
    TIMERS,
    apply_delivered,
    ghost_touched,
    ghost_writes,
    is_session_event,
    mark_writes,
    queue_after,
    raised,
    recency_after,
    result_needs_pending,
    result_outcome,
    timer_raised,
)
from .parts import (
    ABSENT_REGISTRATION,
    ABSENT_SESSION,
    ENABLED,
    NO_GHOST,
    RegistrationPart,
    SessionPart,
)
from .progress import Progress
from .properties import PROPERTIES, Step, check_state, check_transition
from .tableworld import TableWorld


def _constant(value: tuple[Any, ...]) -> Callable[[], tuple[Any, ...]]:
    return lambda: value


class Taken(NamedTuple):
    """A model step that took the event, computed once per (model part, event)."""

    pushes: list[Any]
    post: int                      # the model part after (its id)
    masks: tuple[int, ...]         # per registration, the stanzas pushed to it (bits)
    nondeterministic: Any          # the first (machine, state, event, rows) with several rows
    audit_ok: bool                 # the audit trail records each registration disabled, once
    pushed_any: bool
    same_enabled: bool             # no registration entered or left the enabled states
    offline: tuple[int, ...]       # sessions offline after the step
    changed_sessions: tuple[int, ...]
    changed_regs: tuple[int, ...]


class Refused(NamedTuple):
    """A model step that did not take the event: ``outcome`` is "rejected" (a declared
    rejection, nothing changed) or "error" (a property violation, ``detail`` says which)."""

    outcome: str
    detail: str


@dataclass
class Violation:
    prop: str
    trace: list[Any]          # typed events from the initial state, setup prefix included
    detail: str
    state: int = -1
    """The explored state (its number) the violating event starts from, or the violating
    state for a state property (-1: not known)."""
    via: int = -1
    """The violating event's key index (-1: a state property, or not known)."""
    timed: str | None = None
    """With time: the counterexample as a trace with ``at`` (checker/timing.py), when one
    realizes its order of due times."""

    def as_trace(self, world: BoundedWorld, model: str = "model/ (generated/tables.py)") -> str:
        """The counterexample in the contract's JSON Lines format, with `# ` comments."""
        if self.timed is not None:
            return self.timed
        lines = [f"# property violated: {self.prop}: {PROPERTIES[self.prop]}",
                 f"# {self.detail}",
                 f"# model checked: {model}",
                 f"# bounds: {world.bounds.describe()}",
                 f"# replay: pushrules replay --strict --set max_errors={world.config.max_errors}"
                 f" --set max_devices={world.config.max_devices} TRACE"]
        if world.bounds.time:
            lines.append("# no values of burst_window, orphan_ttl and retry_after tried "
                         "realize this order of due times (checker/timing.py): the '# timer:' "
                         "lines are the clock's events, in an order the abstraction allows")
        elif world.bounds.expiry:
            lines.append("# '# timer:' lines are the model's timer events (orphan_ttl); replay "
                         "does not raise them, so a trace with one does not replay as it is")
        setup = len(world.prefix())
        for n, event in enumerate(self.trace):
            if n == 0 and setup:
                lines.append("# setup: leave the orphaned registration(s)")
            if n == setup:
                lines.append("# exploration")
            if n == len(self.trace) - 1:
                lines.append("# the violating step")
            lines.append(world.trace_line(event))
        return "\n".join(lines) + "\n"


@dataclass
class Result:
    bounds: Bounds
    states: int = 0
    transitions: int = 0
    seconds: float = 0.0
    violations: dict[str, Violation] = field(default_factory=dict)
    uncovered: list[str] = field(default_factory=list)
    left_to_v1: list[str] = field(default_factory=list)
    """At a v2 bound: the version-1 rows not taken there (the v1 default bound takes them)."""
    left_to_time: list[str] = field(default_factory=list)
    """Without ``Bounds.time``: rows tagged with a time-based rule (model/rules.py TIME_RULES:
    held pushes, retry probes), which only the time bound takes (``pushrules check --time``),
    so they are listed, not required."""
    left_to_other: list[str] = field(default_factory=list)
    """At the time bound: the rows of the other rules it does not take (it has one v1 stanza,
    no CSI or chat setting; the v1 and v2 default bounds take them, and the other time bound
    the time rows of its events: ``other_time_rows``)."""
    other_time_rows: list[str] = field(default_factory=list)
    unreached: list[str] = field(default_factory=list)
    stopped_early: bool = False
    models: int = 0
    graph: str = ""

    @property
    def properties(self) -> dict[str, str]:
        return {name: ("fail" if name in self.violations else "pass") for name in PROPERTIES}

    @property
    def ok(self) -> bool:
        return not self.violations

    def summary(self) -> dict[str, Any]:
        out = {"states": self.states, "transitions": self.transitions,
               "seconds": round(self.seconds, 3), "properties": self.properties}
        if self.left_to_v1:
            out["left_to_v1"] = self.left_to_v1
        if self.left_to_time:
            out["left_to_time"] = self.left_to_time
        if self.left_to_other:
            out["left_to_other"] = self.left_to_other
        return out


class Explorer:
    """Explore one bounded world with one world class (TableWorld over some tables).

    A state is ``(model_id, queues, ghosts, recency)``: the interned model part (what the
    machines hold: session states and bindings, registration states, owners, error counts,
    dedup sets, the enabling order), the smacks queue of every session (environment), the ghost
    state of every registration and the enabled registrations by recency of their enable as
    the checker saw it (properties.py). The model's step depends only on the model part and the
    event, so it is computed once per (model part, event) and reused; so are the property
    verdicts, which depend on the model part, the event and the ghost state.
    """

    def __init__(self, bounds: Bounds, world_cls: type[WorldBase] = TableWorld) -> None:
        if bounds.v2 or bounds.time:
            raise ValueError("the reference explorer does not explore the version-2 events "
                             "or the time-based rules yet: run that bound without --reference")
        self.world = BoundedWorld(bounds)
        self.bounds = bounds
        self.world_cls = world_cls
        self.keys = self.world.alphabet()
        w = self.world
        self._sid_index = w.session_index
        self._reg_index = w.reg_index
        self._stanza_ids = [s.id for s in w.stanzas]
        self._stanza_bit = {s.id: 1 << k for k, s in enumerate(w.stanzas)}
        # sessions whose smacks queue is tracked: those that enable push (nothing queued to a
        # session that never holds a registration can be pushed, so its queue is abstracted)
        self._tracked = {i for i in range(bounds.sessions) if w.node_of(i) is not None}
        self.models: list[tuple[Any, ...]] = []
        # shared queue/ghost tuples: states stay small
        self._intern: dict[tuple[Any, ...], tuple[Any, ...]] = {}
        self._queue_memo: dict[tuple[Any, ...], int] = {}
        self._model_ids: dict[tuple[Any, ...], int] = {}
        self._steps: dict[tuple[int, int], Taken | Refused] = {}
        self._uids: dict[tuple[int, int], int] = {}
        self._step_of: list[tuple[Any, ...]] = []  # step uid -> (model id, key, event, step)
        self._queues: list[tuple[Any, ...]] = []
        self._qids: dict[tuple[Any, ...], int] = {}
        # ghost parts: (ghosts, recency)
        self._grids: list[tuple[tuple[Any, ...], tuple[Any, ...]]] = []
        self._gids: dict[tuple[tuple[Any, ...], tuple[Any, ...]], int] = {}
        self._pending: list[int] = []  # per ghost part: bit j set while a push to j is pending
        self.taken: set[tuple[str, str, str, int]] = set()
        self.progress: Progress | None = None  # set to report progress (checker/progress.py)

    # --- encoding ----------------------------------------------------------------------------
    def new_world(self) -> WorldBase:
        return self.world_cls(self.world.config, clock=zero_clock)

    def model_id(self, model: tuple[Any, ...]) -> int:
        found = self._model_ids.get(model)
        if found is None:
            found = self._model_ids[model] = len(self.models)
            if found >> (62 - 2 * _BITS):
                raise OverflowError("more model parts than a state code holds")
            self.models.append(model)
        return found

    def restore(self, model: tuple[Any, ...]) -> WorldBase:
        """A fresh world holding the model part ``model``."""
        return self.restore_into(self.new_world(), model)

    def restore_into(self, world: WorldBase, model: tuple[Any, ...]) -> WorldBase:
        """Put the model part ``model`` into a fresh world of any engine."""
        sessions, regs, order = model
        wd = self.world
        for i, part in enumerate(sessions):
            if part.state != "offline" or part.binding >= 0:
                record = SessionRecord(wd.sids[i], USER, part.state)
                record.binding = wd.reg_keys[part.binding] if part.binding >= 0 else None
                world.sessions[record.sid] = record
        table: dict[tuple[str, str], RegistrationRecord] = {}
        ranks = {j: n + 1 for n, j in enumerate(order)}
        for j, part in enumerate(regs):
            if part.state == "absent":
                continue
            reg = RegistrationRecord(USER, APP, wd.nodes[j], part.state)
            reg.session = wd.all_sids[part.owner] if part.owner >= 0 else None
            reg.errors = part.errors
            reg.seq = ranks.get(j, 0)
            reg.pushed = {sid: None for k, sid in enumerate(self._stanza_ids)  # type: ignore[misc]
                          if (part.pushed >> k) & 1}
            table[(APP, wd.nodes[j])] = reg
        if table:
            world.users[USER] = table
        world._seq = len(order)
        return world

    def encode(self, world: WorldBase) -> tuple[Any, ...]:
        """The model part of a world."""
        wd = self.world
        unknown = set(world.sessions) - set(wd.sids)
        if unknown:
            raise ValueError(f"unexpected sessions {sorted(unknown)}")
        sessions = []
        for sid in wd.sids:
            record = world.sessions.get(sid)
            if record is None:
                sessions.append(ABSENT_SESSION)
            else:
                binding = -1 if record.binding is None else self._reg_index[record.binding]
                sessions.append(SessionPart(record.state, binding))
        table = world.users.get(USER, {})
        regs = []
        enabled = []
        for j, node in enumerate(wd.nodes):
            reg = table.get((APP, node))
            if reg is None:
                regs.append(ABSENT_REGISTRATION)
                continue
            owner = -1 if reg.session is None else self._sid_index[reg.session]
            mask = 0
            for sid in reg.pushed:
                mask |= self._stanza_bit[sid]
            regs.append(RegistrationPart(reg.state, owner, reg.errors, mask))
            if reg.state in ENABLED:
                enabled.append((reg.seq, j))
        return (tuple(sessions), tuple(regs), tuple(j for _, j in sorted(enabled)))

    def initial(self) -> tuple[Any, ...]:
        world = self.new_world()
        for event in self.world.prefix():
            world.handle(event)
        mid = self.model_id(self.encode(world))
        model = self.models[mid]
        intern = self._intern
        parts = (((),) * len(self.world.sids), (NO_GHOST,) * len(self.world.nodes),
                 tuple(model[2]))
        return (mid, *(intern.setdefault(p, p) for p in parts))

    # --- environment -------------------------------------------------------------------------
    def events(self, model: tuple[Any, ...], queues: tuple[Any, ...]
               ) -> list[tuple[tuple[Any, ...], Any]]:
        """(key, typed event) the server can raise in a state with this model part and these
        queues (environment.py). A push-result for a stored registration is raised only while
        a push to it is pending (ghost part): `_bfs` filters those."""
        out = []
        event = self.world.event
        for key in self.keys:
            kind = key[0]
            queue = queues[key[1]] if is_session_event(kind) else ()
            if kind in TIMERS:
                if not timer_raised(model[1][key[1]].state):
                    continue
            elif kind != "result" and not raised(key, _constant(queue), model[0]):
                continue
            out.append((key, event(key, queue) if kind in QUEUE_EVENTS else event(key)))
        return out

    # --- one model step ----------------------------------------------------------------------
    def step(self, mid: int, event: Any, key: tuple[Any, ...]) -> Taken | Refused:
        """The model's step from model part ``mid`` on ``event``, computed once."""
        cache_key = (mid, id(event))
        found = self._steps.get(cache_key)
        if found is None:
            found = self._steps[cache_key] = self._compute_step(self.models[mid], event)
        return found

    def _compute_step(self, model: tuple[Any, ...], event: Any) -> Taken | Refused:
        world = self.restore(model)
        try:
            pushes = take(world, event)
        except UndeclaredRejection as exc:
            return Refused("error", f"undeclared rejection: {exc}")
        except ImpossibleEvent as exc:
            if self.encode(world) != model:
                return Refused("error", f"a rejected event changed the state: {exc}")
            return Refused("rejected", str(exc))
        except Exception as exc:  # a model defect: reported as a property violation
            return Refused("error", f"{event.EVENT} raised {type(exc).__name__}: {exc}")
        masks = self.world.push_masks(pushes)
        nondet = None
        if isinstance(world, TableWorld):
            self.taken |= world.taken
            if world.nondeterministic:
                nondet = world.nondeterministic[0]
        post_mid = self.model_id(self.encode(world))
        post = self.models[post_mid]
        pairs = list(zip(model[1], post[1], strict=True))
        left = sorted(self.world.nodes[j] for j, (a, b) in enumerate(pairs)
                      if a.state in ENABLED and b.state not in ENABLED)
        recorded = sorted(entry.node for entry in world.audit_log)
        same_enabled = all((a.state in ENABLED) == (b.state in ENABLED) for a, b in pairs)
        offline = tuple(i for i, x in enumerate(post[0]) if x.state == "offline")
        changed_s = tuple(i for i, (a, b) in enumerate(zip(model[0], post[0], strict=True))
                          if a != b)
        changed_r = tuple(j for j, (a, b) in enumerate(pairs) if a != b)
        intern = self._intern
        return Taken(pushes, post_mid, tuple(masks), nondet, left == recorded, any(masks),
                     same_enabled, intern.setdefault(offline, offline), changed_s, changed_r)

    def _next_queues(self, queues: tuple[Any, ...], key: tuple[Any, ...],
                     offline: tuple[Any, ...]) -> tuple[Any, ...]:
        """The smacks queues after the step (environment.py); a session offline has none."""
        if is_session_event(key[0]):
            i = key[1]
            new = queue_after(key, i in self._tracked, lambda: queues[i])
            if new is not None:
                queues = (*queues[:i], new, *queues[i + 1:])
        if any(queues[i] for i in offline):
            queues = tuple(() if i in offline else q for i, q in enumerate(queues))
        return self._intern.setdefault(queues, queues)

    def _next_ghosts(self, ghosts: tuple[Any, ...], recency: tuple[Any, ...],
                     key: tuple[Any, ...],
                     step: Taken) -> tuple[tuple[Any, ...], tuple[Any, ...]]:
        """The ghost part after the step (environment.py)."""
        post_regs = self.models[step.post][1]
        new = list(ghosts)
        wd = self.world
        enabled_j = self._reg_index[(USER, APP, key[2])] if key[0] == "enable" else None
        for j in ghost_touched(key, step.changed_regs, step.masks,
                               enabled_j if wd.marks_kept else None):
            enabled = post_regs[j].state in ENABLED
            marks = mark_writes(key, j, enabled_j, self.bounds,
                                wd.rung(step.pushes, ())[j], enabled)  # (v2: compiled only)
            changes = ghost_writes(ghosts[j], enabled, step.masks[j], result_outcome(key, j),
                                   marks)
            new[j] = ghosts[j]._replace(**apply_delivered(ghosts[j], changes))
        ghosts = tuple(new)
        after = recency_after(key, lambda: recency, enabled_j,
                              lambda x: post_regs[x].state in ENABLED, step.same_enabled)
        if after is not None:
            recency = after
        intern = self._intern
        return intern.setdefault(ghosts, ghosts), intern.setdefault(recency, recency)

    # --- exploration -------------------------------------------------------------------------
    def run(self, *, stop_at_first: bool = False, max_states: int | None = None,
            graph_checks: bool = True) -> Result:
        """Explore the bounded world breadth first."""
        return timed_run(self.bounds, lambda result: self._bfs(
            result, stop_at_first, max_states, graph_checks))

    @staticmethod
    def _number(ids: dict[Any, Any], parts: list[Any], part: Any, what: str) -> int:
        """The number of an interned state part (queues or ghost part)."""
        found = ids.get(part)
        if found is None:
            found = ids[part] = len(parts)
            if found > _MASK:
                raise OverflowError(f"more distinct {what} than a state code holds")
            parts.append(part)
        return found

    def _qid(self, queues: tuple[Any, ...]) -> int:
        return self._number(self._qids, self._queues, queues, "smacks queues")

    def _gid(self, pair: tuple[tuple[Any, ...], tuple[Any, ...]]) -> int:
        found = self._number(self._gids, self._grids, pair, "ghost parts")
        if found == len(self._pending):
            self._pending.append(sum(1 << j for j, g in enumerate(pair[0]) if g.pending))
        return found

    def state(self, code: int) -> tuple[Any, ...]:
        """The tuple ``(model_id, queues, ghosts, recency)`` of an encoded state."""
        ghosts, recency = self._grids[code & _MASK]
        return (code >> 2 * _BITS, self._queues[(code >> _BITS) & _MASK], ghosts, recency)

    def _moves(self, mid: int, qid: int) -> list[tuple[Any, ...]]:
        """The transitions out of every state with model part ``mid`` and queues ``qid``:
        ``(needs_pending_bit, step_uid, post_model_and_queues, flagged)``. Only push-result
        events depend on the ghost part (they are raised while a push to that registration is
        pending), through ``needs_pending_bit``."""
        models = self.models
        model = models[mid]
        queues = self._queues[qid]
        moves = []
        for key, event in self.events(model, queues):
            step = self.step(mid, event, key)
            if isinstance(step, Refused) and step.outcome == "rejected":
                continue
            need = 0
            if key[0] == "result" and result_needs_pending(model[1][key[1]].state):
                need = 1 << key[1]
            uid = self._uids.get((mid, id(event)))
            if uid is None:
                uid = self._uids[(mid, id(event))] = len(self._step_of)
                self._step_of.append((mid, key, event, step))
            if isinstance(step, Refused):
                moves.append((need, uid, -1, True))
                continue
            qkey = (qid, id(event), id(step.offline))
            post_qid = self._queue_memo.get(qkey)
            if post_qid is None:
                post_qid = self._queue_memo[qkey] = self._qid(
                    self._next_queues(queues, key, step.offline))
            flagged = step.nondeterministic is not None or not step.audit_ok
            moves.append((need, uid, (step.post << _BITS | post_qid) << _BITS, flagged))
        return moves

    def _step_flags(self, uid: int, fail: Callable[..., None], n: int) -> bool:
        """Report the step-level violations of a flagged step; True if it has a successor."""
        _, _, event, step = self._step_of[uid]
        if isinstance(step, Refused):
            fail(["every_event_handled"], n, event, step.detail)
            return False
        if step.nondeterministic is not None:
            fail(["deterministic"], n, event, f"several rows enabled: {step.nondeterministic}")
        if not step.audit_ok:
            fail(["disable_recorded"], n, event, "the audit trail does not record each "
                 "registration disabled by this event exactly once")
        return True

    def _ghost_step(self, uid: int, gid: int, fail: Callable[..., None], n: int) -> int:
        """Check the transition properties of step ``uid`` from ghost part ``gid`` and return
        the ghost part after it (both depend only on the step and the ghost part)."""
        mid, key, event, step = self._step_of[uid]
        ghosts, recency = self._grids[gid]
        models = self.models
        pre, post = models[mid], models[step.post]
        bad = check_transition(Step(self.world, pre[0], pre[1], post[0], post[1],
                                    step.changed_sessions, step.changed_regs, ghosts,
                                    lambda: recency, key, event, step.pushes,
                                    self.bounds.max_errors, self.bounds.max_devices))
        if bad:
            shown = "; ".join(json.dumps(p.to_json()) for p in step.pushes) or "no push"
            fail(bad, n, event, f"{event.EVENT} gave: {shown}")
        return self._gid(self._next_ghosts(ghosts, recency, key, step))

    def _bfs(self, result: Result, stop_at_first: bool, max_states: int | None,
             graph_checks: bool) -> None:
        """States are ints ``model << 2B | queues << B | ghosts`` (B = _BITS) over interned
        parts; the visited set maps them to their BFS number, parents and the step that
        reached each state are int arrays."""
        wd = self.world
        models = self.models
        start = self.initial()
        start_code = (start[0] << _BITS | self._qid(start[1])) << _BITS | self._gid(
            (start[2], start[3]))
        index: dict[int, int] = {start_code: 0}
        codes = array("q", [start_code])
        parent = array("l", [-1])
        via = array("l", [-1])
        progress = bytearray(1)
        violations = result.violations
        checked_models: set[int] = set()
        moves_of: dict[int, list[tuple[Any, ...]]] = {}
        ghost_memo: dict[int, int] = {}
        step_of = self._step_of
        pending = self._pending
        limit = max_states if max_states is not None else -1
        transitions = 0

        def path(n: int) -> list[Any]:
            out = []
            while n > 0:
                out.append(step_of[via[n]][2])
                n = parent[n]
            return wd.prefix() + out[::-1]

        fail = partial(record, violations, path)

        for name in check_state(models[start[0]], self.bounds.max_devices):
            fail([name], 0, None, "in the initial state")
        checked_models.add(start[0])
        n = 0
        while n < len(codes):
            if stop_at_first and violations:
                result.stopped_early = True
                break
            code = codes[n]
            part = code >> _BITS
            gid = code & _MASK
            moves = moves_of.get(part)
            if moves is None:
                moves = moves_of[part] = self._moves(part >> _BITS, part & _MASK)
            pend = pending[gid]
            moved = False
            for need, uid, post_part, flagged in moves:
                if need and not need & pend:
                    continue
                if flagged and not self._step_flags(uid, fail, n):
                    continue
                transitions += 1
                gkey = uid << _BITS | gid
                post_gid = ghost_memo.get(gkey)
                if post_gid is None:
                    post_gid = ghost_memo[gkey] = self._ghost_step(uid, gid, fail, n)
                post = post_part | post_gid
                m = index.get(post)
                if m is None:
                    m = index[post] = len(codes)
                    codes.append(post)
                    parent.append(n)
                    via.append(uid)
                    progress.append(0)
                    post_mid = post_part >> 2 * _BITS
                    if post_mid not in checked_models:
                        checked_models.add(post_mid)
                        bad = check_state(models[post_mid], self.bounds.max_devices)
                        if bad:
                            fail(bad, m, None, f"state after {step_of[uid][2].EVENT}: "
                                               f"{models[post_mid]}")
                    if m + 1 == limit:
                        result.stopped_early = True
                        break
                if m != n:
                    moved = True
            if moved:
                progress[n] = 1
            if result.stopped_early:
                break
            n += 1
            if self.progress is not None and not n & 0xFFF:
                self.progress.update(len(codes), max_states, f"{transitions:,} transitions")
        result.states = len(codes)
        result.transitions = transitions
        result.models = len(models)
        if result.stopped_early:
            return
        self._coverage(result, self.taken)
        if graph_checks:
            self._graph(result, codes, moves_of, progress, path)

    def _coverage(self, result: Result, taken: set[Any]) -> None:
        coverage(result, self.world_cls, taken, self.bounds.expiry,
                 {s.state for model in self.models for s in model[0]},
                 {r.state for model in self.models for r in model[1]})

    def _graph(self, result: Result, codes: array[Any], moves_of: dict[int, list[tuple[Any, ...]]],
               progress: bytearray, path: Callable[[int], list[Any]]) -> None:
        """No dead state: every state has a successor other than itself (exact), and a state
        with every session offline is reachable from every state. The latter runs on the
        graph of (model, queues) parts, whose edges are the moves computed anyway; the ghost
        part only gates push-results, so this graph over-approximates the state graph in
        push-results alone (a quiet state is reached by destroys, which nothing gates)."""
        stuck = progress.find(0)
        if stuck >= 0:
            result.violations.setdefault("no_dead_state", Violation(
                "no_dead_state", path(stuck),
                f"no event leaves state {self.state(codes[stuck])}"))
            return
        result.graph = "model and queue parts"
        graph = nx.DiGraph()
        graph.add_nodes_from(moves_of)
        graph.add_edges_from((part, post >> _BITS) for part, moves in moves_of.items()
                             for _, _, post, _ in moves if post >= 0)
        models = self.models
        quiet = [part for part in moves_of
                 if all(x.state == "offline" for x in models[part >> _BITS][0])]
        graph.add_edges_from((q, "quiet") for q in quiet)
        reach = nx.ancestors(graph, "quiet") | set(quiet)
        for n, code in enumerate(codes):
            if code >> _BITS not in reach:
                result.violations.setdefault("no_dead_state", Violation(
                    "no_dead_state", path(n),
                    f"no state with every session offline is reachable from "
                    f"{models[code >> 2 * _BITS]}"))
                return


_BITS = 22
_MASK = (1 << _BITS) - 1


def check(bounds: Bounds | None = None, **kwargs: Any) -> Result:
    return Explorer(bounds or Bounds()).run(**kwargs)


def timed_run(bounds: Bounds, explore: Callable[[Result], None]) -> Result:
    """Run one exploration into a fresh Result, timed, with the collector off (nothing
    explored is cyclic garbage; the collector only costs time)."""
    result = Result(bounds)
    started = time.perf_counter()
    gc_was = gc.isenabled()
    gc.disable()
    try:
        explore(result)
    finally:
        if gc_was:
            gc.enable()
    result.seconds = time.perf_counter() - started
    return result


def record(violations: dict[str, Violation], path: Callable[[int], list[Any]],
           names: list[str], n: int, last: Any, detail: str, via: int = -1) -> None:
    """Record the first violation of each property: the events to state ``n``, then the
    violating event ``last`` (None for a state property; ``via`` its key index). BFS order
    makes it a shortest."""
    for name in names:
        if name not in violations:
            trace = path(n) + ([last] if last is not None else [])
            violations[name] = Violation(name, trace, detail, n, via)


def _rows_not_taken(machine: str, table: dict[str, dict[str, tuple[Any, ...]]], taken: set[Any]
                    ) -> list[tuple[str, bool, bool]]:
    """Each row of ``table`` not in ``taken``, shown as ``machine state --event[guards]-->
    target``, whether only a version-2 event takes it, and whether it is a time rule's."""
    out = []
    for state, by_event in table.items():
        for event, rows in by_event.items():
            for index, row in enumerate(rows):
                if (machine, state, event, index) not in taken:
                    guards = " and ".join(("" if ok else "not ") + g.__name__
                                          for g, ok in row[0])
                    out.append((f"{machine} {state} --{event}[{guards}]--> {row[1]}",
                                v2_row(event, row[3]), row[3] in TIME_RULES))
    return out


def coverage(result: Result, world_cls: type, taken: set[Any], timers: bool,
             seen_sessions: set[str], seen_registrations: set[str], v2: bool = False,
             time: bool = False) -> None:
    """Row coverage, reached machine states and table completeness of one exploration:
    ``taken`` holds (machine, state, event, row) of the rows taken, ``timers`` whether the
    timer rows were explored (so must be taken too), ``v2`` whether the version-2 events were:
    then the rows only they take must be taken, and the version-1 rows it misses are listed
    in ``left_to_v1`` (a v2 bound leaves the v1 stanzas to the v1 default bound, which takes
    every v1 row); without, the v2 rows are not required. ``time``: the time bound, which must
    take every row of the time-based rules (the others are listed in ``left_to_other``);
    without, those are listed in ``left_to_time``. ``seen_*`` are the machine states
    that occur in some explored state. Table completeness is static: it covers the timer
    events always."""
    tables = getattr(world_cls, "tables", None)
    if tables is None:
        return
    explored = [("session", tables.SESSION), ("registration", tables.REGISTRATION)]
    if timers:
        explored.append(("registration", getattr(tables, "REGISTRATION_TIMERS", {})))
    for machine, table in explored:
        for shown, row_is_v2, row_is_time in _rows_not_taken(machine, table, taken):
            if time:
                # a time bound takes the time rows of its own events (v2's or v1's)
                mine = row_is_time and (shown.split(" --", 1)[1].split("[", 1)[0]
                                        in V2_MACHINE_EVENTS) == v2
                (result.uncovered if mine else result.left_to_other).append(shown)
                if row_is_time and not mine:
                    result.other_time_rows.append(shown)
            elif row_is_time:
                result.left_to_time.append(shown)
            elif not row_is_v2:
                (result.left_to_v1 if v2 else result.uncovered).append(shown)
            elif v2:
                result.uncovered.append(shown)
    if result.uncovered:
        result.violations.setdefault("every_transition_covered", Violation(
            "every_transition_covered", [], "never taken: " + "; ".join(result.uncovered)))
    for machine, states, seen in (("session", tables.SESSION_STATES, seen_sessions),
                                  ("registration", tables.REGISTRATION_STATES,
                                   seen_registrations)):
        result.unreached += [f"{machine} {s}" for s in states if s not in seen]
    if result.unreached:
        result.violations.setdefault("no_unreachable_state", Violation(
            "no_unreachable_state", [], "never reached: " + ", ".join(result.unreached)))
    for machine, states, table, rejections, events in (
            ("session", tables.SESSION_STATES, tables.SESSION, tables.SESSION_REJECTIONS,
             tables.SESSION_EVENTS),
            ("registration", tables.REGISTRATION_STATES, tables.REGISTRATION,
             tables.REGISTRATION_REJECTIONS, tables.REGISTRATION_EVENTS),
            ("registration", tables.REGISTRATION_STATES,
             getattr(tables, "REGISTRATION_TIMERS", {}),
             getattr(tables, "REGISTRATION_TIMER_REJECTIONS", {}),
             getattr(tables, "REGISTRATION_TIMER_EVENTS", {}))):
        for state in states:
            for event in events:
                has_rows = bool(table.get(state, {}).get(event))
                if has_rows == ((state, event) in rejections):
                    result.violations.setdefault("table_complete", Violation(
                        "table_complete", [],
                        f"{machine} ({state}, {event}): "
                        + ("rows and a rejection" if has_rows else "neither rows nor a "
                           "declared rejection")))
