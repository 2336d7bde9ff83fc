"""The packed state of the compiled explorer: fields in uint64 words, read one at a time.

A state of the bounded world is a few uint64 words with a fixed-width field per component
(checker/compiled.py lists them). ``Layout`` places the fields and interns their values,
``View`` reads a state field by field and records what it read, ``Fields``/``Records`` show
records to the properties through a View, and ``Visited`` is the explorer's set of states.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from itertools import permutations
from operator import itemgetter
from typing import Any

import numpy as np

from pushrules.model.errors import PushrulesError

from .bounded import CHAT_SETTINGS, BoundedWorld
from .parts import GhostPart, RegistrationPart, SessionGhostPart, SessionPart

_U64 = np.uint64
COMPOSITE = 1 << 20
"""Field numbers from here on are composites: a set of stanzas held as one-bit fields."""
SETS = ("pushed", "delivered")
"""Record fields that are sets of stanzas (a registration's dedup set, its delivered ghost)."""
SEQUENCE = -1
"""A field size that asks for a sequence field (``Layout.sequences``)."""
HOLDING_RULES = 7
"""The rules a held stanza may carry: every push rule but the urgent e/call (a/ three, b, c,
d, e/call-end): the held field's values are sequences of distinct stanzas with one each."""


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
        orders = sum(1 for k in range(m + 1) for _ in permutations(range(m), k))
        errors = b.max_errors + 2
        # owners: none, a session that enables push, or a setup session (the orphans')
        owners = 1 + b.push_sessions + b.orphans
        self.names: list[str] = []
        sizes: list[int] = []
        self.composite: dict[int, dict[int, int]] = {}
        """Composite field -> {stanza index: its one-bit field}: a set of stanzas."""
        self.sequences: dict[int, dict[int, int]] = {}
        """Composite field -> {stanza index: its field}: a sequence of distinct stanzas, each
        with a rule (held stanzas), as one field per stanza holding (position, rule) or
        None, so reading it costs a few narrow trie levels instead of one very wide one."""
        self.composite_names: dict[int, str] = {}

        def add(name: str, size: int) -> int:
            self.names.append(name)
            sizes.append(size)
            return len(sizes) - 1

        def record(prefix: str, part: Any, size: dict[str, int]) -> list[int]:
            """A record's fields, in the order of its part's fields (checker/parts.py); a
            set of stanzas is a composite of one-bit fields (``SETS``)."""
            return [self._add_set(f"{prefix} {name}", world, add) if name in SETS
                    else self._add_sequence(f"{prefix} {name}", world, add)
                    if size[name] == SEQUENCE
                    else add(f"{prefix} {name}", size[name]) for name in part._fields]

        # v2 model fields: a constant (no bits) outside a v2 world
        session = {"state": len(tables.SESSION_STATES), "binding": m + 1,
                   "csi": 2 if b.v2 else 1}
        timed = 2 if b.time else 1
        registration = {"state": len(tables.REGISTRATION_STATES), "owner": owners,
                        "errors": errors, "calls": 2 if b.v2 else 1,
                        **_time_sizes(b.time, owners)}
        # the expiry mark is a field only with expiry: a constant (no bits) otherwise, so the
        # layout, and what is explored, is the one of the contract events alone
        ghost = {"errors": errors, "pending": 2,
                 "expired": 2 if b.expiry else 1, "rang": 2 if b.v2 else 1,
                 "remote": 2 if b.v2 else 1, "window": timed,
                 "probe_ok": timed, "retried": timed}
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

    def _add_set(self, name: str, world: BoundedWorld, add: Callable[[str, int], int]) -> int:
        """A set of stanzas (a mask over stanza indexes) as one one-bit field per stanza with
        an id: a step that asks whether one stanza is in it reads that stanza's bit only, so
        the tries branch on the stanzas a step is about, not on every subset."""
        field = COMPOSITE + len(self.composite) + len(self.sequences)
        self.composite[field] = {k: add(f"{name} {s.id}", 2)
                                 for k, s in enumerate(world.stanzas) if s.id is not None}
        self.composite_names[field] = name
        return field

    def _add_sequence(self, name: str, world: BoundedWorld,
                      add: Callable[[str, int], int]) -> int:
        """A sequence of distinct stanzas with an id, each with a rule: per stanza, None or
        (its position, its rule)."""
        field = COMPOSITE + len(self.composite) + len(self.sequences)
        ids = [k for k, s in enumerate(world.stanzas) if s.id is not None]
        self.sequences[field] = {k: add(f"{name} {world.stanzas[k].id}",
                                        1 + len(ids) * HOLDING_RULES) for k in ids}
        self.composite_names[field] = name
        return field

    def sequence(self, field: int, value: Callable[[int], Any]) -> tuple[tuple[int, str], ...]:
        """The sequence that is composite ``field``, from its fields' values ``value(f)``."""
        found = [(entry[0], k, entry[1]) for k, f in self.sequences[field].items()
                 if (entry := value(f)) is not None]
        return tuple((k, rule) for _, k, rule in sorted(found))

    def compose(self, field: int, bit: Callable[[int], Any]) -> Any:
        """The mask of composite ``field``, from each of its one-bit fields' value ``bit(f)``
        (a sequence field: its sequence)."""
        if field in self.sequences:
            return self.sequence(field, bit)
        mask = 0
        for k, f in self.composite[field].items():
            if bit(f):
                mask |= 1 << k
        return mask

    def _split(self, values: dict[int, Any]) -> dict[int, Any]:
        """``values`` with each composite field's mask given as its one-bit fields (a bit
        field given itself wins over its composite's mask)."""
        if not any(f >= COMPOSITE for f in values):
            return values
        out: dict[int, Any] = {}
        for field, value in values.items():
            if field in self.sequences:
                at = {k: (n, rule) for n, (k, rule) in enumerate(value)}
                for k, f in self.sequences[field].items():
                    out.setdefault(f, at.get(k))
            elif field >= COMPOSITE:
                for k, f in self.composite[field].items():
                    out.setdefault(f, (value >> k) & 1)
            else:
                out[field] = value
        return out

    def name(self, field: int) -> str:
        return self.composite_names[field] if field >= COMPOSITE else self.names[field]

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
        if field >= COMPOSITE:
            return self.compose(field, lambda f: self.value(code, f))
        vid = (code[self.word[field]] >> self.shift[field]) & ((1 << self.bits[field]) - 1)
        return self.values[field][vid]

    def pack(self, values: dict[int, Any]) -> tuple[int, ...]:
        code = [0] * self.words
        for field, value in self._split(values).items():
            code[self.word[field]] |= self.intern(field, value) << self.shift[field]
        return tuple(code)

    def masks(self, writes: dict[int, Any]) -> tuple[list[int], list[int]]:
        """(clear, set) per word for writing ``writes`` {field: value}."""
        clear, put = [0] * self.words, [0] * self.words
        for field, value in self._split(writes).items():
            w = self.word[field]
            clear[w] |= ((1 << self.bits[field]) - 1) << self.shift[field]
            put[w] |= self.intern(field, value) << self.shift[field]
        return clear, put


def _time_sizes(time: bool, owners: int) -> dict[str, int]:
    """The sizes of a registration's time facts: constants (no bits) outside a time world."""
    if not time:
        return dict.fromkeys(("probe", "probe_owner", "window", "held", "hold", "expire",
                              "retry"), 1)
    return {"probe": 4, "probe_owner": owners, "window": 2, "held": SEQUENCE, "hold": 2,
            "expire": 2, "retry": 2}


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
        if field >= COMPOSITE:  # a set of stanzas: every bit is read
            return layout.compose(field, self)
        bits = layout.bits[field]
        if not bits:  # a constant: nothing to branch on, so not a read the tries record
            return layout.values[field][0]
        vid = (self.code[layout.word[field]] >> layout.shift[field]) & ((1 << bits) - 1)
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
        return self.get(self.fields[k])

    def get(self, field: int) -> Any:
        writes = self.writes
        if field in writes:
            return writes[field]
        if field >= COMPOSITE:
            return self.view.layout.compose(field, self.get)
        return self.view(field)

    def has(self, k: int, index: int) -> bool:
        """Whether stanza ``index`` is in the set of stanzas that is field k (reads its bit
        only)."""
        field = self.fields[k]
        if field in self.writes:
            return bool((self.writes[field] >> index) & 1)
        return bool(self.get(self.view.layout.composite[field][index]))


def _named(name: str, part: Any) -> type[Fields]:
    """Fields also read by the names of ``part``'s fields (``reg.owner`` for ``reg[1]``)."""
    attrs: dict[str, Any] = {"__slots__": ()}
    for k, field in enumerate(part._fields):
        attrs[field] = property(itemgetter(k), doc=f"The {field} field, read when used.")
    return type(name, (Fields,), attrs)


SessionFields = _named("SessionFields", SessionPart)
_HELD = RegistrationPart._fields.index("held")


class RegistrationFields(_named("_RegistrationFields", RegistrationPart)):  # type: ignore[misc]
    __slots__ = ()

    def held_has(self, index: int) -> bool:
        """Stanza ``index`` is held (reads its field of the sequence only)."""
        field = self.fields[_HELD]
        if field in self.writes:
            return any(k == index for k, _ in self.writes[field])
        sub = self.view.layout.sequences.get(field, {}).get(index)
        return sub is not None and self.get(sub) is not None

    def held_any(self) -> bool:
        """Something is held after the step, as far as the step wrote it (reads nothing: what
        it did not write is as before)."""
        return bool(self.writes.get(self.fields[_HELD]))


class GhostFields(_named("_GhostFields", GhostPart)):  # type: ignore[misc]
    __slots__ = ()

    def delivered_has(self, index: int) -> bool:
        """Stanza ``index`` is in ``delivered`` (reads its bit only; parts.GhostPart's)."""
        return bool(self.has(_DELIVERED, index))


_DELIVERED = GhostPart._fields.index("delivered")
SessionGhostFields = _named("SessionGhostFields", SessionGhostPart)


class Records(Sequence[Any]):
    """The sessions, registrations or ghost records of a state as a lazy sequence of
    ``kind`` (SessionFields, RegistrationFields or GhostFields)."""

    __slots__ = ("view", "fields", "writes", "kind")

    def __init__(self, view: View, fields: list[list[int]], kind: type[Fields],
                 writes: dict[int, Any] | None = None) -> None:
        self.view = view
        self.fields = fields
        self.kind = kind
        self.writes = writes if writes is not None else {}

    def __getitem__(self, index: Any) -> Any:
        return self.kind(self.view, self.fields[index], self.writes)

    def __len__(self) -> int:
        return len(self.fields)

    def __iter__(self) -> Iterator[Any]:
        return (self[i] for i in range(len(self.fields)))


# --- a world whose records read the packed state lazily --------------------------------------

class Visited:
    """A set of packed states (rows of ``words`` uint64): an open-addressing hash table in
    numpy arrays (linear probing, at most half full), queried and filled a whole batch at a
    time. A Python set costs a cache miss per state in the interpreter; this costs one per
    probe in C. One-word states may be given as a 1-d array. The table is kept a column per
    word, so a probe compares words with one-dimensional gathers (no row copies)."""

    _MIX = _U64(0x9E3779B97F4A7C15)

    def __init__(self, log2: int = 20, words: int = 1) -> None:
        self.log2 = log2
        self.words = words
        self.columns = [np.zeros(1 << log2, dtype=_U64) for _ in range(words)]
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
        words = [np.ascontiguousarray(rows[:, w]) for w in range(self.words)]
        while pending.size:
            at = slots[pending]
            used = self.used[at]
            hit = used.copy()
            for column, word in zip(self.columns, words, strict=True):
                hit &= column[at] == word[pending]
            found[pending[hit]] = True
            pending = pending[used & ~hit]
            slots[pending] = (slots[pending] + 1) & mask
        return found

    def rows(self) -> np.ndarray:
        """Every state in the set (in table order)."""
        return np.stack([column[self.used] for column in self.columns], axis=1)

    def add(self, codes: np.ndarray) -> None:
        """Add states known to be distinct and not in the set yet."""
        rows = self._rows(codes)
        if 2 * (self.count + len(rows)) > len(self.used):
            old = self.rows()
            while 2 * (self.count + len(rows)) > (1 << self.log2):
                self.log2 += 1
            self.columns = [np.zeros(1 << self.log2, dtype=_U64) for _ in range(self.words)]
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
            at = slots[winners]
            for w, column in enumerate(self.columns):
                column[at] = rows[winners, w]
            self.used[at] = True
            placed[winners] = True
            pending = pending[~placed[pending]]
            slots[pending] = (slots[pending] + 1) & mask
        self.count += len(rows)
