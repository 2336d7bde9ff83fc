"""A world whose records read their fields from a packed state lazily, recording each read.

checker/compiled.py runs one transition on such a world: WorldBase and the model's guards and
actions see ordinary dicts and records, but a record is materialized only when looked up, and
each field is read from the packed state only when used. What was read, in order, is the
View's ``reads``; what was written is in the records' ``dirty`` sets.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from pushrules.model.records import RegistrationRecord, SessionRecord

from .bounded import APP, USER, zero_clock
from .packed import View
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

    state = _field("state", 0)  # type: ignore[assignment]

    @property  # type: ignore[override]
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

    state = _field("state", 0)  # type: ignore[assignment]

    @property  # type: ignore[override]
    def session(self) -> str | None:
        owner = self._get("owner", 1)
        return None if owner < 0 else self._st.explorer.world.all_sids[owner]

    @session.setter
    def session(self, sid: str | None) -> None:
        self._set("owner", -1 if sid is None else self._st.explorer.world.session_index[sid])

    errors = _field("errors", 2)  # type: ignore[assignment]

    @property  # type: ignore[override]
    def pushed(self) -> dict[str, None]:
        if self._pushed is None:
            mask = self._get("pushed", 3)
            self._pushed = {sid: None for k, sid in enumerate(self._st.explorer.stanza_ids)
                            if (mask >> k) & 1}
        return self._pushed

    @pushed.setter
    def pushed(self, value: dict[str, None]) -> None:
        self._pushed = value

    @property  # type: ignore[override]
    def seq(self) -> int:
        if "seq" not in self.vals:
            order = self._st.order()
            self.vals["seq"] = order.index(self._j) + 1 if self._j in order else 0
        return self.vals["seq"]

    @seq.setter
    def seq(self, value: int) -> None:
        self._set("seq", value)


class _LazyDict(dict):
    """A dict of records materialized from the state on first access to a key."""

    def __init__(self, state: LazyState) -> None:
        super().__init__()
        self._st = state
        self.loaded: set[int] = set()

    def _load(self, key: Any) -> None:
        raise NotImplementedError

    def _all(self) -> None:
        raise NotImplementedError

    def get(self, key: Any, default: Any = None) -> Any:
        self._load(key)
        return dict.get(self, key, default)

    def __getitem__(self, key: Any) -> Any:
        self._load(key)
        return dict.__getitem__(self, key)

    def __contains__(self, key: object) -> bool:
        self._load(key)
        return dict.__contains__(self, key)

    def __setitem__(self, key: Any, value: Any) -> None:
        self._load(key)
        dict.__setitem__(self, key, value)

    def __delitem__(self, key: Any) -> None:
        self._load(key)
        dict.__delitem__(self, key)

    def pop(self, key: Any, *default: Any) -> Any:
        self._load(key)
        return dict.pop(self, key, *default)

    def __iter__(self) -> Iterator[Any]:
        self._all()
        return dict.__iter__(self)

    def __len__(self) -> int:
        self._all()
        return dict.__len__(self)

    def keys(self):  # type: ignore[no-untyped-def]
        self._all()
        return dict.keys(self)

    def values(self):  # type: ignore[no-untyped-def]
        self._all()
        return dict.values(self)

    def items(self):  # type: ignore[no-untyped-def]
        self._all()
        return dict.items(self)


class _Sessions(_LazyDict):
    """``world.sessions``: a session exists unless it is offline and holds no registration."""

    def _load(self, sid: Any) -> None:
        wd = self._st.explorer.world
        i = wd.session_index.get(sid)
        if i is None or i >= len(wd.sids) or i in self.loaded:
            return
        self.loaded.add(i)
        view, fields = self._st.view, self._st.layout.s[i]
        state = view(fields[0])
        vals: dict[str, Any] = {"state": state}
        if state == "offline":
            vals["binding"] = view(fields[1])
            if vals["binding"] < 0:
                return
        record = LazySession.__new__(LazySession)
        record.sid, record.user = sid, USER
        record._st, record._fields, record.vals, record.dirty = self._st, fields, vals, set()
        dict.__setitem__(self, sid, record)

    def _all(self) -> None:
        for sid in self._st.explorer.world.sids:
            self._load(sid)


class _Registrations(_LazyDict):
    """The user's registrations: one exists unless its state is absent."""

    def _load(self, key: Any) -> None:
        wd = self._st.explorer.world
        j = wd.reg_index.get((USER, *key)) if isinstance(key, tuple) else None
        if j is None or j in self.loaded:
            return
        self.loaded.add(j)
        state = self._st.view(self._st.layout.r[j][0])
        if state == "absent":
            return
        reg = LazyRegistration.__new__(LazyRegistration)
        reg.user, reg.jid, reg.node = USER, APP, key[1]
        reg.options, reg.reason, reg.disabled_at = {}, None, None
        reg._st, reg._fields, reg._j = self._st, self._st.layout.r[j], j
        reg.vals, reg.dirty, reg._pushed = {"state": state}, set(), None
        dict.__setitem__(self, key, reg)

    def _all(self) -> None:
        for node in self._st.explorer.world.nodes:
            self._load((APP, node))


class _Users(dict):
    """``world.users``: the one user of the bounded world."""

    def __init__(self, regs: _Registrations) -> None:
        super().__init__()
        dict.__setitem__(self, USER, regs)

    def __setitem__(self, user: str, regs: Any) -> None:
        raise ValueError(f"unexpected user {user!r} in the bounded world")


class SeqField:
    """``world._seq`` of a lazy world: the enables so far, i.e. the enabling order's length
    (read from the state only when a registration is enabled) plus the enables since."""

    def __get__(self, obj: Any, cls: Any = None) -> int:
        state = obj.__dict__["_lazy"]
        return len(state.order()) + state.enables

    def __set__(self, obj: Any, value: int) -> None:
        state = obj.__dict__.get("_lazy")
        if state is not None:  # WorldBase.__init__ sets 0 before the state is attached
            state.enables = value - len(state.order())


class LazyState:
    """One packed state under computation: the view, and the world materialized from it."""

    def __init__(self, explorer: CompiledExplorer, code: tuple[int, ...]) -> None:
        self.explorer = explorer
        self.layout = explorer.layout
        self.view = View(explorer.layout, code)
        self._order: tuple[int, ...] | None = None
        self.enables = 0

    def order(self) -> tuple[int, ...]:
        if self._order is None:
            self._order = self.view(self.layout.order)
        return self._order

    def world(self) -> TableWorld:
        explorer = self.explorer
        world = explorer.lazy_cls(explorer.world.config, clock=zero_clock)
        world.__dict__["_lazy"] = self
        self.sessions = world.sessions = _Sessions(self)
        self.regs = _Registrations(self)
        world.users = _Users(self.regs)
        return world
