"""The packed state of the compiled explorer: fields in uint64 words, read one at a time.

A state of the bounded world is a few uint64 words with a fixed-width field per component
(checker/compiled.py lists them). ``Layout`` places the fields and interns their values,
``View`` reads a state field by field and records what it read, ``Fields``/``Records`` show
records to the properties through a View, and ``Visited`` is the explorer's set of states.
"""

from __future__ import annotations

from collections.abc import Iterator
from itertools import permutations
from operator import itemgetter
from typing import Any

import numpy as np

from pushrules.model.errors import PushrulesError

from .bounded import CHAT_SETTINGS, BoundedWorld
from .parts import GhostPart, RegistrationPart, SessionGhostPart, SessionPart

_U64 = np.uint64


class BoundExceeded(PushrulesError):
    """A field took more distinct values than it holds."""


class Layout:
    """Where each field lives in a packed state: its word, shift, width and interned values.

    Widths come from the values a field can take in the bounded world (a machine's states, a
    count up to one past max_errors, a set of stanzas, ...), so every reachable state fits;
    a value beyond (say, a mutant counting errors past max_errors) raises BoundExceeded."""

    def __init__(self, world: BoundedWorld, tables: Any, tracked: list[int],
                 word_bits: int = 64) -> None:
        b = world.bounds
        n, m = b.sessions, len(world.nodes)
        ids = sum(1 for s in world.stanzas if s.id is not None)
        orders = sum(1 for k in range(m + 1) for _ in permutations(range(m), k))
        errors = b.max_errors + 2
        # owners: none, a session that enables push, or a setup session (the orphans')
        owners = 1 + b.push_sessions + b.orphans
        self.names: list[str] = []
        sizes: list[int] = []

        def add(name: str, size: int) -> int:
            self.names.append(name)
            sizes.append(size)
            return len(sizes) - 1

        def record(prefix: str, part: type, size: dict[str, int]) -> list[int]:
            """A record's fields, in the order of its part's fields (checker/parts.py)."""
            return [add(f"{prefix} {name}", size[name]) for name in part._fields]

        # v2 model fields: a constant (no bits) outside a v2 world
        session = {"state": len(tables.SESSION_STATES), "binding": m + 1,
                   "csi": 2 if b.v2 else 1}
        registration = {"state": len(tables.REGISTRATION_STATES), "owner": owners,
                        "errors": errors, "pushed": 2 ** ids, "calls": 2 if b.v2 else 1}
        # the expiry mark is a field only with expiry: a constant (no bits) otherwise, so the
        # layout, and what is explored, is the one of the contract events alone
        ghost = {"delivered": 2 ** ids, "errors": errors, "pending": 2,
                 "expired": 2 if b.expiry else 1, "rang": 2 if b.v2 else 1,
                 "remote": 2 if b.v2 else 1}
        self.s = [record(world.sids[i], SessionPart, session) for i in range(n)]
        self.r = [record(node, RegistrationPart, registration) for node in world.nodes]
        self.order = add("enabling order", orders)
        self.chat = add("room setting", 1 + len(CHAT_SETTINGS) if b.v2 else 1)
        self.model_fields = len(sizes)
        self.q = {i: add(f"smacks queue of {world.sids[i]}", 2 ** len(world.incoming))
                  for i in tracked}
        self.g = [record(f"{node} ghost", GhostPart, ghost) for node in world.nodes]
        self.recency = add("recency", orders)
        # v2: the checker's record of each session's CSI and of the user's room setting
        self.sg = [record(f"{world.sids[i]} ghost", SessionGhostPart, {"csi": 2 if b.v2 else 1})
                   for i in range(n)]
        self.setting = add("room setting ghost", 1 + len(CHAT_SETTINGS) if b.v2 else 1)
        # a field of one value takes no bits (its value is always number 0)
        self.bits = [(size - 1).bit_length() for size in sizes]
        self.word: list[int] = []
        self.shift: list[int] = []
        word = used = 0
        for width in self.bits:
            if used + width > word_bits:
                word, used = word + 1, 0  # fields never straddle words
            self.word.append(word)
            self.shift.append(used)
            used += width
        self.words = word + 1
        self.values: list[list[Any]] = [[] for _ in sizes]
        self.ids: list[dict[Any, int]] = [{} for _ in sizes]
        self.np_word = np.array(self.word, dtype=np.int64)
        self.np_shift = np.array(self.shift, dtype=_U64)
        self.np_mask = np.array([(1 << w) - 1 for w in self.bits], dtype=_U64)

    def intern(self, field: int, value: Any) -> int:
        found = self.ids[field].get(value)
        if found is None:
            found = len(self.values[field])
            if found >> self.bits[field]:
                raise BoundExceeded(f"{self.names[field]} took more than "
                                    f"{1 << self.bits[field]} values: {value!r}")
            self.ids[field][value] = found
            self.values[field].append(value)
        return found

    def value(self, code: tuple[int, ...], field: int) -> Any:
        vid = (code[self.word[field]] >> self.shift[field]) & ((1 << self.bits[field]) - 1)
        return self.values[field][vid]

    def pack(self, values: dict[int, Any]) -> tuple[int, ...]:
        code = [0] * self.words
        for field, value in values.items():
            code[self.word[field]] |= self.intern(field, value) << self.shift[field]
        return tuple(code)

    def masks(self, writes: dict[int, Any]) -> tuple[list[int], list[int]]:
        """(clear, set) per word for writing ``writes`` {field: value}."""
        clear, put = [0] * self.words, [0] * self.words
        for field, value in writes.items():
            w = self.word[field]
            clear[w] |= ((1 << self.bits[field]) - 1) << self.shift[field]
            put[w] |= self.intern(field, value) << self.shift[field]
        return clear, put


class View:
    """A packed state read one field at a time; ``reads`` is what was read, in order."""

    __slots__ = ("layout", "code", "reads", "_seen")

    def __init__(self, layout: Layout, code: tuple[int, ...]) -> None:
        self.layout = layout
        self.code = code
        self.reads: list[tuple[int, int]] = []
        self._seen: set[int] = set()

    def __call__(self, field: int) -> Any:
        layout = self.layout
        vid = (self.code[layout.word[field]] >> layout.shift[field]) & (
            (1 << layout.bits[field]) - 1)
        if field not in self._seen:
            self._seen.add(field)
            self.reads.append((field, vid))
        return layout.values[field][vid]


class Fields:
    """One record's fields as the properties see them: read through the View where indexed,
    or taken from ``writes`` (the values after the step)."""

    __slots__ = ("view", "fields", "writes")

    def __init__(self, view: View, fields: list[int], writes: dict[int, Any]) -> None:
        self.view = view
        self.fields = fields
        self.writes = writes

    def __getitem__(self, k: int) -> Any:
        field = self.fields[k]
        writes = self.writes
        return writes[field] if field in writes else self.view(field)


def _named(name: str, part: type) -> type[Fields]:
    """Fields also read by the names of ``part``'s fields (``reg.owner`` for ``reg[1]``)."""
    attrs: dict[str, Any] = {"__slots__": ()}
    for k, field in enumerate(part._fields):
        attrs[field] = property(itemgetter(k), doc=f"The {field} field, read when used.")
    return type(name, (Fields,), attrs)


SessionFields = _named("SessionFields", SessionPart)
RegistrationFields = _named("RegistrationFields", RegistrationPart)
GhostFields = _named("GhostFields", GhostPart)
SessionGhostFields = _named("SessionGhostFields", SessionGhostPart)


class Records:
    """The sessions, registrations or ghost records of a state as a lazy sequence of
    ``kind`` (SessionFields, RegistrationFields or GhostFields)."""

    __slots__ = ("view", "fields", "writes", "kind")

    def __init__(self, view: View, fields: list[list[int]], kind: type[Fields],
                 writes: dict[int, Any] | None = None) -> None:
        self.view = view
        self.fields = fields
        self.kind = kind
        self.writes = writes if writes is not None else {}

    def __getitem__(self, index: int) -> Fields:
        return self.kind(self.view, self.fields[index], self.writes)

    def __len__(self) -> int:
        return len(self.fields)

    def __iter__(self) -> Iterator[Fields]:
        return (self[i] for i in range(len(self.fields)))


# --- a world whose records read the packed state lazily --------------------------------------

class Visited:
    """A set of packed states (rows of ``words`` uint64): an open-addressing hash table in
    numpy arrays (linear probing, at most half full), queried and filled a whole batch at a
    time. A Python set costs a cache miss per state in the interpreter; this costs one per
    probe in C. One-word states may be given as a 1-d array."""

    _MIX = _U64(0x9E3779B97F4A7C15)

    def __init__(self, log2: int = 20, words: int = 1) -> None:
        self.log2 = log2
        self.words = words
        self.table = np.zeros((1 << log2, words), dtype=_U64)
        self.used = np.zeros(1 << log2, dtype=bool)
        self.count = 0

    def _rows(self, codes: np.ndarray) -> np.ndarray:
        return codes.reshape(len(codes), self.words)

    def _slots(self, rows: np.ndarray) -> np.ndarray:
        mixed = np.zeros(len(rows), dtype=_U64)
        for w in range(self.words):
            mixed = (mixed ^ rows[:, w]) * self._MIX
            mixed ^= mixed >> _U64(29)
        return (mixed >> _U64(64 - self.log2)).astype(np.int64)

    def contains(self, codes: np.ndarray) -> np.ndarray:
        rows = self._rows(codes)
        slots = self._slots(rows)
        found = np.zeros(len(rows), dtype=bool)
        pending = np.arange(len(rows))
        mask = (1 << self.log2) - 1
        while pending.size:
            at = slots[pending]
            used = self.used[at]
            hit = used & (self.table[at] == rows[pending]).all(axis=1)
            found[pending[hit]] = True
            pending = pending[used & ~hit]
            slots[pending] = (slots[pending] + 1) & mask
        return found

    def add(self, codes: np.ndarray) -> None:
        """Add states known to be distinct and not in the set yet."""
        rows = self._rows(codes)
        if 2 * (self.count + len(rows)) > len(self.used):
            old = self.table[self.used]
            while 2 * (self.count + len(rows)) > (1 << self.log2):
                self.log2 += 1
            self.table = np.zeros((1 << self.log2, self.words), dtype=_U64)
            self.used = np.zeros(1 << self.log2, dtype=bool)
            self.count = 0
            self.add(old)
        slots = self._slots(rows)
        placed = np.zeros(len(rows), dtype=bool)
        pending = np.arange(len(rows))
        mask = (1 << self.log2) - 1
        while pending.size:
            free = pending[~self.used[slots[pending]]]
            _, first = np.unique(slots[free], return_index=True)  # one winner per slot
            winners = free[first]
            self.table[slots[winners]] = rows[winners]
            self.used[slots[winners]] = True
            placed[winners] = True
            pending = pending[~placed[pending]]
            slots[pending] = (slots[pending] + 1) & mask
        self.count += len(rows)
