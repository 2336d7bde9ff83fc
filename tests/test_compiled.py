"""The compiled explorer (checker/compiled.py) against the reference explorer (explore.py),
which runs the real TableWorld once per (model state, event): same states in the same BFS
numbering, same transitions and verdicts, on the real model and on mutants; the memoized
successor function against fresh computations; the visited set against a Python set."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pushrules.check_cmd import MUTANT_BOUNDS
from pushrules.checker.bounded import V2_MUTANT_BOUNDS, Bounds
from pushrules.checker.compiled import CompiledExplorer, Leaf, Visited
from pushrules.checker.explore import Explorer, Result
from pushrules.checker.mutants import build_tables, mutants
from pushrules.checker.tableworld import TableWorld, world_class

AGREEMENT_BOUNDS = [
    # an orphan beside a bound registration, a session that never enables push
    Bounds(sessions=2, push_sessions=1, orphans=1, stanzas=1, max_devices=2),
    # two push sessions evicting each other's registration (one device), two stanzas
    Bounds(sessions=2, push_sessions=2, orphans=0, stanzas=2, max_devices=1),
    # a smacks queue of two incoming stanzas; one device, so an enable evicts the orphan
    Bounds(sessions=1, push_sessions=1, orphans=1, stanzas=3, max_devices=1),
    # disabled after a single error
    Bounds(sessions=2, push_sessions=1, orphans=0, stanzas=2, max_errors=1, max_devices=1),
]

MUTANT_IDS = [
    "swap-registrations registration orphaned push_archive 0 -> bound",
    "drop-guard session ack_delayed stanza_queued 0 bound",
    "drop-guard registration bound push_result 2 below_max_errors",
    "retarget session hibernated smacks_hibernation_end 0 -> ack_delayed",
    "drop-action registration orphaned push_offline 0 send_push",
]

MEMO_BOUNDS = Bounds(sessions=2, push_sessions=2, orphans=1, stanzas=2, max_errors=2,
                     max_devices=2)
"""The CI bound of test_checker.py: every row taken, orphan and bound registrations together
(only the compiled explorer runs it here: about two seconds)."""
V2_MEMO_BOUNDS = V2_MUTANT_BOUNDS
TIME_MEMO_BOUNDS = Bounds(sessions=1, push_sessions=1, orphans=1, stanzas=2, max_errors=1,
                          max_devices=1, time=True)
"""A small time world (8,120 states): the time facts, the held stanzas as a sequence of
fields, whether anything is held read from the hold bit (lazyworld.LazyHeld)."""
"""The v2 mutant bound (every v2 row taken): the one-bit stanza fields, the dedup set's
len() that reads nothing (lazyworld.LazyPushed) and the v2 records must keep the memo exact."""


class RecordingExplorer(Explorer):
    """The reference explorer, keeping its BFS-ordered state codes (local to its _bfs)."""

    codes: list[int]

    def _graph(self, result: Result, codes: Any, *args: Any) -> None:
        self.codes = list(codes)
        super()._graph(result, codes, *args)


def _reference_states(explorer: RecordingExplorer) -> list[tuple]:
    """(model, queues, ghosts, recency) of every state, in the reference's numbering."""
    out = []
    for code in explorer.codes:
        mid, queues, ghosts, recency = explorer.state(code)
        out.append((explorer.models[mid], queues, ghosts, recency))
    return out


def _compiled_states(explorer: CompiledExplorer) -> list[tuple]:
    """The same decoding of every packed state of a compiled run, in its numbering."""
    lay = explorer.layout
    sessions = explorer.bounds.sessions
    out = []
    for n in range(len(explorer._codes)):
        code = explorer.code(n)
        out.append((explorer.model(code),
                    tuple(explorer.queue(code, i) for i in range(sessions)),
                    tuple(tuple(lay.value(code, f) for f in g) for g in lay.g),
                    lay.value(code, lay.recency)))
    return out


def _summary(result: Result) -> tuple:
    return (result.states, result.transitions, result.properties, result.uncovered,
            result.unreached, result.stopped_early)


def _mutant_world(mutant_id: str) -> type[TableWorld]:
    mutant = next(m for m in mutants() if m.id == mutant_id)
    return world_class(build_tables(mutant.ir))


@pytest.mark.parametrize("bounds", AGREEMENT_BOUNDS, ids=lambda b: b.describe())
def test_compiled_explorer_agrees_with_the_reference(bounds: Bounds) -> None:
    reference = RecordingExplorer(bounds)
    expected = reference.run()
    compiled = CompiledExplorer(bounds)
    got = compiled.run()
    assert _summary(got) == _summary(expected)
    assert expected.states > 100  # a world where the comparison means something
    # same numbering: state n of one explorer is state n of the other, field by field
    assert len(reference.codes) == len(compiled._codes) == expected.states
    ref_states, states = _reference_states(reference), _compiled_states(compiled)
    for n, (want, have) in enumerate(zip(ref_states, states, strict=True)):
        assert have == want, f"state {n}: compiled {have} != reference {want}"
    # the compiled path to a state leads the real model there
    for n in np.random.default_rng(7).choice(expected.states, 50, replace=False).tolist():
        world = reference.new_world()
        for event in compiled.path(n):
            world.handle(event)
        assert reference.encode(world) == ref_states[n][0], f"path to state {n}"
    # the memo did its job: far fewer Python steps than (state, event) pairs
    assert compiled.computed < expected.states * len(compiled.keys)


def test_several_words_per_state_explore_the_same_world() -> None:
    bounds = AGREEMENT_BOUNDS[0]
    one = CompiledExplorer(bounds)
    several = CompiledExplorer(bounds, word_bits=12)
    assert one.layout.words == 1
    assert several.layout.words > 1
    wide, narrow = one.run(), several.run()
    assert _summary(narrow) == _summary(wide)
    assert _compiled_states(several) == _compiled_states(one)
    assert wide.violations.keys() == narrow.violations.keys()
    for name, violation in wide.violations.items():
        assert ([e.EVENT for e in narrow.violations[name].trace]
                == [e.EVENT for e in violation.trace]), name


@pytest.mark.parametrize("mutant_id", MUTANT_IDS)
def test_mutant_verdicts_and_counterexample_lengths_agree(mutant_id: str) -> None:
    world = _mutant_world(mutant_id)
    expected = Explorer(MUTANT_BOUNDS, world).run()
    got = CompiledExplorer(MUTANT_BOUNDS, world).run()
    assert expected.violations, "the reference must kill this mutant"
    assert (got.states, got.transitions) == (expected.states, expected.transitions)
    assert sorted(got.violations) == sorted(expected.violations)
    assert ({name: len(v.trace) for name, v in got.violations.items()}
            == {name: len(v.trace) for name, v in expected.violations.items()})


def test_a_registration_stored_absent_leaves_the_encodable_world() -> None:
    """The bounded world encodes "absent" as "not stored"; a mutant disabling a registration
    into absent would keep a stored absent one, which only the compiled explorer sees."""
    explorer = CompiledExplorer(MUTANT_BOUNDS,
                                _mutant_world("retarget registration bound disable 0 -> absent"))
    result = explorer.run()
    violation = result.violations["fields_in_domain"]
    events = [e.EVENT for e in violation.trace]
    assert events and events[-1] == "push-disable"
    assert "push-enable" in events
    assert "stored in state absent" in violation.detail
    text = violation.as_trace(explorer.world)
    assert text.startswith("# property violated: fields_in_domain")
    # the real model stays in the domain at the same bound
    assert "fields_in_domain" not in CompiledExplorer(MUTANT_BOUNDS).run().violations


def _bad_names(leaf: Leaf) -> list[list[str]]:
    return [sorted(names) for names, _ in leaf.bad]


@pytest.mark.parametrize("bounds", [MEMO_BOUNDS, V2_MEMO_BOUNDS, TIME_MEMO_BOUNDS],
                         ids=["v1", "v2", "time"])
def test_memoized_leaves_match_fresh_computations(bounds: Bounds) -> None:
    """Each explored state takes, for every event (and the invariants), the leaf its trie
    path leads to; a fresh computation from that very state must give the same outcome. A
    read the lazy world did not record would let a leaf computed for another state that
    differs in that field be reused here, and this comparison would see it."""
    explored = CompiledExplorer(bounds)
    explored.run()
    states = len(explored._codes)
    rng = np.random.default_rng(20240611)
    sample = sorted({*range(100), *rng.choice(states, 300, replace=False).tolist()})
    fresh = CompiledExplorer(bounds)
    lay = explored.layout
    computed = explored.computed
    tries = len(explored.keys) + 1  # every event key, then the state invariants
    checked = 0
    for n in sample:
        code = explored.code(n)
        # re-pack the decoded values: interned ids are per explorer
        fresh_code = fresh.layout.pack({f: lay.value(code, f) for f in range(len(lay.names))})
        for e in range(tries):
            memo = explored.leaves[int(explored._descend(e, explored._codes[[n]])[0])]
            leaf, _ = fresh.compute(e, fresh_code)
            where = f"state {n} {explored.model(code)}, event {explored.keys[e:e + 1]}"
            assert leaf.kind == memo.kind, where
            assert leaf.writes == memo.writes, where
            assert _bad_names(leaf) == _bad_names(memo), where
            assert leaf.event == memo.event, where
            checked += 1
    assert checked == len(sample) * tries
    # the explored tries already held a path for every explored state
    assert explored.computed == computed


@pytest.mark.parametrize("bounds", [MEMO_BOUNDS, V2_MEMO_BOUNDS, TIME_MEMO_BOUNDS],
                         ids=["v1", "v2", "time"])
def test_outcome_depends_only_on_the_fields_read(bounds: Bounds) -> None:
    """The trie reuses a leaf for every state agreeing on the fields read, so changing every
    field *not* read must leave the transition unchanged. This also catches a forgotten read
    that the explored states hide because they correlate it with a read field (a registration's
    errors and its ghost count of errors, say)."""
    explored = CompiledExplorer(bounds)
    explored.run()
    lay = explored.layout
    rng = np.random.default_rng(1357)
    fresh = CompiledExplorer(bounds)
    for f in range(len(lay.names)):  # the same interned ids in both, so reads compare
        for value in lay.values[f]:
            fresh.layout.intern(f, value)
    changed = 0
    for n in rng.choice(len(explored._codes), 150, replace=False).tolist():
        code = explored.code(n)
        values = {f: lay.value(code, f) for f in range(len(lay.names))}
        for e in range(len(explored.keys) + 1):
            leaf, reads = fresh.compute(e, fresh.layout.pack(values))
            read = {f for f, _ in reads}
            other = dict(values)
            for f in range(len(lay.names)):
                if f not in read and len(lay.values[f]) > 1:
                    choices = [v for v in lay.values[f] if v != values[f]]
                    other[f] = choices[rng.integers(len(choices))]
                    changed += 1
            again, reads_again = fresh.compute(e, fresh.layout.pack(other))
            where = f"state {n} {explored.model(code)}, event {explored.keys[e:e + 1]}"
            assert reads_again == reads, where
            assert again.kind == leaf.kind, where
            assert again.writes == leaf.writes, where
            assert _bad_names(again) == _bad_names(leaf), where
            assert again.event == leaf.event, where
    assert changed > 0


_CODES = st.one_of(st.integers(0, 2 ** 63 - 1), st.integers(0, 200),
                   st.integers(2 ** 63 - 200, 2 ** 63 - 1))


@settings(max_examples=150, deadline=None)
@given(batches=st.lists(st.lists(_CODES, max_size=60), min_size=1, max_size=8),
       probes=st.lists(_CODES, max_size=60))
def test_visited_set_agrees_with_a_python_set(batches: list[list[int]],
                                              probes: list[int]) -> None:
    visited = Visited(log2=4)
    members: set[int] = set()
    for batch in batches:
        new = list(dict.fromkeys(c for c in batch if c not in members))  # distinct, not present
        visited.add(np.array(new, dtype=np.uint64))
        members.update(new)
        assert visited.count == len(members)
        asked = [*members, *probes, *(c ^ 1 for c in members)]
        found = visited.contains(np.array(asked, dtype=np.uint64))
        assert found.tolist() == [c in members for c in asked]


class NoDestroy(CompiledExplorer):
    """An environment that never destroys a session: nothing brings a session offline."""

    def compute(self, e: int, code: tuple[int, ...]) -> tuple[Leaf, list[tuple[int, int]]]:
        if e < len(self.keys) and self.keys[e][0] == "destroy":
            return Leaf(0, self.keys[e]), []
        return super().compute(e, code)


def test_dead_state_witness_finds_a_world_that_cannot_quiesce() -> None:
    bounds = Bounds(sessions=1, push_sessions=1, orphans=0, stanzas=1, max_devices=1)
    assert "no_dead_state" not in CompiledExplorer(bounds).run().violations
    violation = NoDestroy(bounds).run().violations["no_dead_state"]
    # the witness fails, and networkx on the state graph confirms: no way to go quiet
    assert "no state with every session offline is reachable" in violation.detail
    assert [e.EVENT for e in violation.trace] == ["session-bind"]


class DestroyOnlyHibernated(CompiledExplorer):
    """An environment that destroys a session only once it hibernated: from an active session
    no single event brings a session offline, but hibernating first does."""

    def compute(self, e: int, code: tuple[int, ...]) -> tuple[Leaf, list[tuple[int, int]]]:
        leaf, reads = super().compute(e, code)
        key = self.keys[e] if e < len(self.keys) else None
        if key is not None and key[0] == "destroy":
            state = self.layout.s[key[1]][0]
            assert state in {field for field, _ in reads}  # the trie branches on it
            if self.layout.value(code, state) != "hibernated":
                return Leaf(0, key), reads
        return leaf, reads


def test_dead_state_analysis_decides_exactly_where_the_witness_fails() -> None:
    bounds = Bounds(sessions=1, push_sessions=1, orphans=0, stanzas=1, max_devices=1)
    result = DestroyOnlyHibernated(bounds).run()
    assert "no_dead_state" not in result.violations, result.violations["no_dead_state"].detail
    assert "networkx" in result.graph  # the witness failed; the state graph decided
