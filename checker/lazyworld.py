"""A world whose records read their fields from a packed state lazily, recording each read.

checker/compiled.py runs one transition on such a world. WorldBase reads and writes its records
only through its storage methods (``session``, ``registration``, ``registrations_of``,
``_has_registrations``, ``_store_session``, ``_forget_session``, ``_store_registration``); the
lazy world overrides exactly those, so a record is materialized only when looked up, and each
field is read from the packed state only when used. The containers are not subclassed: the
world's ``sessions`` and ``users`` are None here, so code that bypassed the storage methods
would fail loudly (an ``every_event_handled`` violation) instead of exploring a wrong world.

What was read, in order, is the View's ``reads``. What the step changed is its effects: the
records it looked up, stored or forgot (``LazyState.sessions`` / ``regs``: index -> record, or
None when not stored) and, per record, the fields it wrote (the records' ``dirty`` sets).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, MutableMapping
from typing import TYPE_CHECKING, Any

from pushrules.model import records
from pushrules.model.records import Held, RegistrationRecord, RegKey, SessionRecord

from .bounded import APP, CALL_ID, ROOM, USER, zero_clock
from .packed import BoundExceeded, View
from .tableworld import TableWorld

if TYPE_CHECKING:
    from .compiled import CompiledExplorer


def _field(name: str, k: int) -> property:
    """A record field read from the packed state on first use, marked dirty when set."""
    return property(lambda self: self._get(name, k),
                    lambda self, value: self._set(name, value))


class _LazyFields:
    """Fields read from the packed state on first use (``vals`` caches them) and marked
    ``dirty`` when set. ``_fields`` are the record's field numbers in the layout."""

    __slots__ = ()
    _st: LazyState
    _fields: list[int]
    vals: dict[str, Any]
    dirty: set[str]

    def _get(self, name: str, k: int) -> Any:
        vals = self.vals
        if name not in vals:
            vals[name] = self._st.view(self._fields[k])
        return vals[name]

    def _set(self, name: str, value: Any) -> None:
        self.vals[name] = value
        self.dirty.add(name)


class LazySession(_LazyFields, SessionRecord):
    """A session record reading ``state`` and ``binding`` from the state when first used."""

    __slots__ = ("_st", "_fields", "vals", "dirty")

    state = _field("state", 0)
    csi = _field("csi", 2)  # v2: the model's XEP-0352 state (a constant outside v2)

    @property
    def binding(self) -> tuple[str, str, str] | None:
        j = self._get("binding", 1)
        return None if j < 0 else self._st.explorer.world.reg_keys[j]

    @binding.setter
    def binding(self, key: tuple[str, str, str] | None) -> None:
        self._set("binding", -1 if key is None else self._st.explorer.world.reg_index[key])


class LazyRegistration(_LazyFields, RegistrationRecord):
    """A registration record reading its fields from the state when first used; ``seq`` is its
    rank in the enabling order."""

    __slots__ = ("_st", "_fields", "_j", "vals", "dirty", "_pushed")
    _j: int
    _pushed: LazyPushed | None

    state = _field("state", 0)

    @property
    def session(self) -> str | None:
        owner = self._get("owner", 1)
        return None if owner < 0 else self._st.explorer.world.all_sids[owner]

    @session.setter
    def session(self, sid: str | None) -> None:
        self._set("owner", -1 if sid is None else self._st.explorer.world.session_index[sid])

    errors = _field("errors", 2)

    @property  # type: ignore[override]
    def pushed(self) -> LazyPushed:
        if self._pushed is None:
            self._pushed = LazyPushed(self._st, self._fields[3])
        return self._pushed

    @pushed.setter
    def pushed(self, value: dict[str, None]) -> None:
        self.pushed.replace(value)


    @property
    def seq(self) -> int:
        if "seq" not in self.vals:
            order = self._st.order()
            self.vals["seq"] = order.index(self._j) + 1 if self._j in order else 0
        return int(self.vals["seq"])

    @seq.setter
    def seq(self, value: int) -> None:
        self._set("seq", value)


def _converted(name: str, k: int, load: Callable[[LazyRegistration, Any], Any],
               store: Callable[[LazyRegistration, Any], Any]) -> property:
    """A time fact of the record (checker/parts.py RegistrationPart) read from field k as
    ``load(record, value)`` and written back as ``store(record, value)``."""
    return property(lambda self: load(self, self._get(name, k)),
                    lambda self, value: self._set(name, store(self, value)))


def _due(option: str) -> Callable[[LazyRegistration, Any], float | None]:
    """A due time: ahead of the step's clock by the option's seconds while its bit is set
    (only whether it is still ahead matters to the model: the explored clock never reaches it
    inside a step; the clock's events reach it)."""
    return lambda rec, bit: rec._st.clock + getattr(rec._st.explorer.world.config, option) \
        if bit else None


def _is_set(rec: LazyRegistration, value: Any) -> int:
    return int(value is not None)


def _held_load(rec: LazyRegistration, value: tuple[tuple[int, str], ...]) -> tuple[Held, ...]:
    stanzas = rec._st.explorer.world.stanzas
    return tuple(Held(stanzas[k], rule) for k, rule in value)


def _held_store(rec: LazyRegistration, held: tuple[Held, ...]) -> tuple[tuple[int, str], ...]:
    index = rec._st.explorer.world.stanza_index
    if any(h.stanza.id not in index or h.stanza.id is None for h in held):
        raise BoundExceeded("a stanza without an id was held: the time world has none")
    return tuple((index[h.stanza.id], h.rule) for h in held)


def _owner_load(rec: LazyRegistration, owner: int) -> str | None:
    return None if owner < 0 else rec._st.explorer.world.all_sids[owner]


def _owner_store(rec: LazyRegistration, sid: str | None) -> int:
    return -1 if sid is None else rec._st.explorer.world.session_index[sid]


class LazyHeld:
    """A registration's held stanzas as the model reads them: whether any is held reads only
    the ``hold`` bit (a flush is due exactly while something is held: property
    held_stanza_sent checks it on every step that changes either, so it holds in every
    explored state); iterating reads the held stanzas. Taken before the record's held
    stanzas are replaced, it keeps what they were (``keep``)."""

    __slots__ = ("_rec", "_kept")

    def __init__(self, rec: LazyTimedRegistration) -> None:
        self._rec = rec
        self._kept: tuple[Held, ...] | None = None

    def keep(self) -> None:
        if self._kept is None:
            self._kept = _held_load(self._rec, self._rec._get("held", 8))

    def _all(self) -> tuple[Held, ...]:
        self.keep()
        assert self._kept is not None
        return self._kept

    def __bool__(self) -> bool:
        if self._kept is not None or "held" in self._rec.vals:
            return bool(self._all())
        return bool(self._rec._get("hold", 9))

    def __iter__(self) -> Iterator[Held]:
        return iter(self._all())

    def __len__(self) -> int:
        return len(self._all())

    def __add__(self, other: tuple[Held, ...]) -> tuple[Held, ...]:
        return self._all() + tuple(other)


def _held_get(rec: LazyTimedRegistration) -> LazyHeld:
    view = LazyHeld(rec)
    rec._held_views.append(view)
    return view


def _held_set(rec: LazyTimedRegistration, held: Any) -> None:
    for view in rec._held_views:  # what was read before is what the record held then
        view.keep()
    rec._set("held", _held_store(rec, tuple(held)))


class LazyTimedRegistration(LazyRegistration):
    """A registration of a time world (``Bounds.time``): its time-based rules' facts are
    fields of the state too. A time is kept as whether it is still ahead: ``last_sent`` as
    the window being open (the step's clock, or None: closed), a due time as set or not."""

    __slots__ = ("_held_views",)
    _held_views: list[LazyHeld]

    probe = _field("probe", 5)
    probe_session = _converted("probe_owner", 6, _owner_load,
                               _owner_store)
    last_sent = _converted("window", 7,
                           lambda rec, bit: rec._st.clock if bit else None, _is_set)
    held = property(_held_get, _held_set)
    hold_until = _converted("hold", 9, _due("burst_window"), _is_set)
    expire_at = _converted("expire", 10, _due("orphan_ttl"), _is_set)
    retry_at = _converted("retry", 11, _due("retry_after"), _is_set)


class LazyPushed(MutableMapping[str, None]):
    """A registration's dedup set (stanza id -> None, as RegistrationRecord.pushed) over its
    one-bit fields: ``sid in pushed`` reads that stanza's bit only; adding, removing and
    clearing write bits without reading them (``written``: stanza index -> bit).

    ``len()`` is exact but reads no field: the model's one use of it is the dedup window
    (``len(pushed) > dedup_window``), and the bounded world has fewer stanza ids than the
    window (checked when the explorer starts), so its outcome cannot depend on the bits it
    counts. A use whose outcome did would be caught by tests/test_compiled.py, which changes
    every field a step did not read and requires the same outcome."""

    __slots__ = ("_st", "_bits", "written")

    def __init__(self, st: LazyState, field: int) -> None:
        self._st = st
        self._bits = st.layout.composite[field]
        self.written: dict[int, int] = {}

    def _index(self, sid: object) -> int | None:
        return self._st.explorer.world.stanza_index.get(sid) if isinstance(sid, str) else None

    def _bit(self, k: int, read: bool = True) -> int:
        found = self.written.get(k)
        if found is not None:
            return found
        field = self._bits[k]
        if read:
            return int(self._st.view(field))
        return int(self._st.layout.value(self._st.view.code, field))

    def __contains__(self, sid: object) -> bool:
        k = self._index(sid)
        return k is not None and k in self._bits and bool(self._bit(k))

    def __getitem__(self, sid: str) -> None:
        if sid not in self:
            raise KeyError(sid)

    def __setitem__(self, sid: str, value: None) -> None:
        k = self._index(sid)
        if k is None or k not in self._bits:
            raise ValueError(f"unexpected stanza id {sid!r} in the bounded world")
        self.written[k] = 1

    def __delitem__(self, sid: str) -> None:
        if sid not in self:
            raise KeyError(sid)
        self.written[self._index(sid)] = 0  # type: ignore[index]

    def __iter__(self) -> Iterator[str]:
        ids = self._st.explorer.stanza_ids
        return iter([sid for k in self._bits if self._bit(k)  # reads every bit
                     if (sid := ids[k]) is not None])

    def __len__(self) -> int:
        return sum(self._bit(k, read=False) for k in self._bits)

    def clear(self) -> None:
        self.written.update((k, 0) for k in self._bits)

    def replace(self, value: dict[str, None]) -> None:
        """Assign the whole set."""
        self.clear()
        for sid in value:
            self[sid] = None


class SeqField:
    """``world._seq`` of a lazy world: the enables so far, i.e. the enabling order's length
    (read from the state only when a registration is enabled) plus the enables since."""

    def __get__(self, obj: Any, cls: Any = None) -> int:
        state = obj.__dict__["_lazy"]
        return int(len(state.order()) + state.enables)

    def __set__(self, obj: Any, value: int) -> None:
        state = obj.__dict__.get("_lazy")
        if state is not None:  # WorldBase.__init__ sets 0 before the state is attached
            state.enables = value - len(state.order())


class LazyWorld:
    """The storage methods of WorldBase over a LazyState (mixed into a TableWorld class:
    ``type(name, (LazyWorld, world_cls), {})``)."""

    _lazy: LazyState
    _seq = SeqField()

    def session(self, sid: str) -> SessionRecord | None:
        st = self._lazy
        i = st.session_index(sid)
        return None if i is None else st.load_session(i)

    def _store_session(self, record: SessionRecord) -> None:
        st = self._lazy
        i = st.session_index(record.sid)
        if i is None:
            st.unknown_sessions.add(record.sid)
            return
        st.load_session(i)
        st.sessions[i] = record

    def _forget_session(self, sid: str) -> None:
        st = self._lazy
        i = st.session_index(sid)
        if i is None:
            st.unknown_sessions.discard(sid)
            return
        st.load_session(i)
        st.sessions[i] = None

    def registration(self, key: RegKey) -> RegistrationRecord | None:
        j = self._lazy.explorer.world.reg_index.get(key)
        return None if j is None else self._lazy.load_registration(j)

    def registrations_of(self, user: str) -> list[RegistrationRecord]:
        st = self._lazy
        if user != USER:
            return []
        st.load_registrations()
        return list(st.stored_regs.values())

    def _has_registrations(self, user: str) -> bool:
        return bool(self.registrations_of(user))

    def chat_setting(self, user: str, chat: str) -> Any:
        """v2: the user's setting for a chat: the room's is a field of the state (the
        bounded world raises chat-settings for the room only)."""
        st = self._lazy
        if user != USER or chat != ROOM:
            return None
        value = st.chat_value if st.chat_written else st.view(st.layout.chat)
        # the v2 model's record of a setting (imported by name: it comes with the v2 model)
        return None if value is None else records.ChatSetting(*value)

    def store_chat_setting(self, user: str, chat: str, setting: Any) -> None:
        st = self._lazy
        if user != USER or chat != ROOM:
            raise ValueError(f"unexpected chat setting of {user} for {chat} in the bounded "
                             "world")
        st.chat_written, st.chat_value = True, (setting.notify, setting.nick)

    # v2: the call's targets are a field of each registration (one call id in the world)
    def call_targets(self, user: str, call_id: str) -> dict[tuple[str, str], None]:
        st = self._lazy
        if user != USER or call_id != CALL_ID:
            return {}
        nodes = st.explorer.world.nodes
        return {(APP, nodes[j]): None for j in range(len(nodes)) if st.rang(j)}

    def add_call_target(self, reg: RegistrationRecord, call_id: str) -> None:
        if call_id != CALL_ID:  # the user's own call: the real model never rings for it
            self._lazy.stray = (f"{reg.node} became a target of call {call_id!r}: the bounded "
                                f"world keeps the targets of the incoming call {CALL_ID!r} "
                                "only")
            return
        self._lazy.call_writes[self._lazy.explorer.world.reg_index[reg.key]] = 1

    def forget_calls_of(self, reg: RegistrationRecord) -> None:
        self._lazy.call_writes[self._lazy.explorer.world.reg_index[reg.key]] = 0

    def _store_registration(self, reg: RegistrationRecord) -> None:
        st = self._lazy
        j = st.explorer.world.reg_index.get(reg.key)
        if j is None:
            raise ValueError(f"unexpected registration {reg.key} in the bounded world")
        st.load_registration(j)
        st.regs[j] = reg
        st.stored_regs[j] = reg


class LazyState:
    """One packed state under computation: the view, and the records materialized from it.

    ``sessions`` and ``regs`` map the index of every record looked up to the record, or None
    when it is not stored (``loaded_*`` are their keys); ``stored_regs`` holds the stored
    registrations in the order a dict of them would (first lookup or store)."""

    clock: float

    def __init__(self, explorer: CompiledExplorer, code: tuple[int, ...]) -> None:
        self.explorer = explorer
        self.layout = explorer.layout
        self.view = View(explorer.layout, code)
        self._order: tuple[int, ...] | None = None
        self.enables = 0
        self.sessions: dict[int, SessionRecord | None] = {}
        self.regs: dict[int, RegistrationRecord | None] = {}
        self.stored_regs: dict[int, RegistrationRecord] = {}
        self.unknown_sessions: set[str] = set()
        self.chat_written = False  # v2: the room setting was stored, as chat_value
        self.chat_value: tuple[str, str | None] | None = None
        self.call_writes: dict[int, int] = {}  # v2: registration -> in the call (0/1) now
        self.registration_cls = (LazyTimedRegistration if explorer.bounds.time
                                 else LazyRegistration)
        self.clock = 0.0
        """The time of the step: the world's clock (a time world's pushes carry it)."""
        self.stray: str | None = None
        """Set when the step left the bounded world in a way it could not record (a target
        of another call than CALL_ID): reported after its properties (fields_in_domain)."""

    def rang(self, j: int) -> int:
        """v2: registration j is a target of the call (the proposal was pushed to it)."""
        found = self.call_writes.get(j)
        return self.view(self.layout.r[j][4]) if found is None else found

    def order(self) -> tuple[int, ...]:
        if self._order is None:
            self._order = self.view(self.layout.order)
        return self._order

    def session_index(self, sid: str) -> int | None:
        """The index of a session of the explored world (not a setup session's)."""
        wd = self.explorer.world
        i = wd.session_index.get(sid)
        return i if i is not None and i < len(wd.sids) else None

    def load_session(self, i: int) -> SessionRecord | None:
        """Session i as stored: it exists unless it is offline and holds no registration."""
        if i in self.sessions:
            return self.sessions[i]
        view, fields = self.view, self.layout.s[i]
        state = view(fields[0])
        vals: dict[str, Any] = {"state": state}
        record: LazySession | None = None
        if state != "offline" or view(fields[1]) >= 0:
            if state == "offline":
                vals["binding"] = view(fields[1])
            record = LazySession.__new__(LazySession)
            record.sid, record.user = self.explorer.world.sids[i], USER
            record._st, record._fields, record.vals, record.dirty = self, fields, vals, set()
        self.sessions[i] = record
        return record

    def load_registration(self, j: int) -> RegistrationRecord | None:
        """Registration j as stored: it exists unless its state is absent."""
        if j in self.regs:
            return self.regs[j]
        fields = self.layout.r[j]
        state = self.view(fields[0])
        reg: LazyRegistration | None = None
        if state != "absent":
            reg = self.registration_cls.__new__(self.registration_cls)
            reg.user, reg.jid, reg.node = USER, APP, self.explorer.world.nodes[j]
            reg.options, reg.reason, reg.disabled_at = {}, None, None
            reg._st, reg._fields, reg._j = self, fields, j
            reg.vals, reg.dirty, reg._pushed = {"state": state}, set(), None
            if isinstance(reg, LazyTimedRegistration):
                reg._held_views = []
            self.stored_regs[j] = reg
        self.regs[j] = reg
        return reg

    def load_registrations(self) -> None:
        for j in range(len(self.explorer.world.nodes)):
            self.load_registration(j)

    def world(self) -> TableWorld:
        explorer = self.explorer
        world: TableWorld = explorer.lazy_cls(explorer.world.config, clock=zero_clock)
        world.__dict__["_lazy"] = self
        world.sessions = world.users = None  # type: ignore[assignment]  # storage methods only
        world.chats = world.calls = None  # type: ignore[assignment]  # the v2 facts too
        if explorer.bounds.time:
            world.time, world.timed = self.clock, True
            world.explain = True  # the notes say why a held stanza was dropped
        return world
