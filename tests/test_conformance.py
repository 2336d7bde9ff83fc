"""Conformance between the three engines: the python-statemachine reference, the hand-written
`transitions` encoding and the generated runtime agree on every step the checker explores and
on hypothesis-generated event sequences."""

from __future__ import annotations

import json

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from pushrules.check_cmd import MUTANT_BOUNDS
from pushrules.checker.bounded import BoundedWorld, Bounds
from pushrules.checker.compiled import CompiledExplorer
from pushrules.checker.conformance import compare, compare_compiled
from pushrules.checker.explore import Explorer
from pushrules.checker.transitions_encoding import TransitionsWorld
from pushrules.generated import events as ge
from pushrules.model.reference import ReferenceWorld
from pushrules.model.world import ImpossibleEvent
from pushrules.runtime.engine import Engine

ENGINES = {"engine": Engine, "transitions": TransitionsWorld, "reference": ReferenceWorld}


def _explored(bounds: Bounds) -> Explorer:
    explorer = Explorer(bounds)
    result = explorer.run()
    # small bounds leave the bound-registration eviction row untaken; nothing else may fail
    assert set(result.violations) <= {"every_transition_covered"}, result.violations
    return explorer


def test_engine_and_transitions_agree_on_every_explored_step() -> None:
    explorer = _explored(MUTANT_BOUNDS)
    count, disagreements = compare(
        explorer, {"engine": Engine, "transitions": TransitionsWorld})
    assert count == len(explorer._steps) > 10_000
    assert not disagreements, "\n".join(d.describe(explorer) for d in disagreements)


def test_all_engines_agree_on_every_step_the_compiled_checker_computed() -> None:
    """`pushrules check`'s explorer runs each distinct step through the tables once and replays
    it for every state matching what it read; each of those steps, restored from the full
    state it was computed from, must give the same outcome on every engine."""
    compiled = CompiledExplorer(Bounds(sessions=2, push_sessions=2, orphans=1, stanzas=2,
                                       max_errors=2, max_devices=2))
    assert compiled.run().ok
    count, disagreements = compare_compiled(compiled, ENGINES)
    assert count == len(compiled.steps()) > 1_000
    assert not disagreements, "\n".join(
        d.describe(compare_explorer(compiled)) for d in disagreements)


def compare_explorer(compiled: CompiledExplorer) -> Explorer:
    return Explorer(compiled.bounds, compiled.world_cls)


def test_reference_agrees_on_every_explored_step_of_a_small_bound() -> None:
    explorer = _explored(Bounds(sessions=1, push_sessions=1, orphans=1, stanzas=2,
                                max_errors=2, max_devices=1))
    count, disagreements = compare(explorer, {"reference": ReferenceWorld})
    assert count > 1_000
    assert not disagreements, "\n".join(d.describe(explorer) for d in disagreements)


def test_reference_agrees_on_a_sample_of_the_mutant_bound() -> None:
    explorer = _explored(MUTANT_BOUNDS)
    events = {id(e): e for e in explorer.world._cache.values()}
    sample = [(mid, events[eid]) for n, (mid, eid) in enumerate(explorer._steps) if n % 10 == 0]
    count, disagreements = compare(explorer, {"reference": ReferenceWorld}, sample)
    assert count > 1_000
    assert not disagreements, "\n".join(d.describe(explorer) for d in disagreements)


def test_a_disagreement_is_reported_with_the_step() -> None:
    class Deaf(Engine):
        """An engine that drops every push: compare() must notice."""

        def emit(self, push):  # type: ignore[no-untyped-def]
            return None

    explorer = _explored(Bounds(sessions=1, push_sessions=1, orphans=1, stanzas=1,
                                max_errors=2, max_devices=1))
    _, disagreements = compare(explorer, {"deaf": Deaf})
    assert len(disagreements) == 1
    assert "deaf disagrees" in disagreements[0].describe(explorer)


WORLD = BoundedWorld(Bounds())
KEYS = WORLD.alphabet()
EXTRA_RESULTS = [ge.PushResult("u@example.org", "push.example.net", node, False, error)
                 for node in WORLD.nodes for error in (None, "auth", "modify", "continue")]


class EnginesAgree(RuleBasedStateMachine):
    """Random event sequences (any event in any state, queues of any stanzas) through the
    three engines; after every event they must agree on rejection, pushes and state."""

    @initialize()
    def start(self) -> None:
        self.worlds = {name: cls(WORLD.config, clock=lambda: 0.0) for name, cls in ENGINES.items()}
        self.trace: list = []
        for event in WORLD.prefix():
            self._apply(event)

    def _apply(self, event) -> None:  # type: ignore[no-untyped-def]
        self.trace.append(event)
        outcomes = {}
        for name, world in self.worlds.items():
            try:
                pushes = world.handle(event)
                outcomes[name] = [(p.to_json(), p.sender, p.body) for p in pushes]
            except ImpossibleEvent:
                outcomes[name] = "rejected"
        assert len({json.dumps(o, sort_keys=True) for o in outcomes.values()}) == 1, (
            f"engines disagree: {outcomes}\n" + self._shown())

    def _shown(self) -> str:
        return "trace:\n" + "\n".join(json.dumps(WORLD.to_json(e)) for e in self.trace)

    @rule(key=st.sampled_from(KEYS),
          queue=st.lists(st.sampled_from(range(len(WORLD.stanzas))), unique=True, max_size=3))
    def event(self, key: tuple, queue: list[int]) -> None:
        self._apply(WORLD.event(key, tuple(queue)))

    @rule(result=st.sampled_from(EXTRA_RESULTS))
    def other_error(self, result) -> None:  # type: ignore[no-untyped-def]
        self._apply(result)

    @invariant()
    def same_state(self) -> None:
        snapshots = {
            name: json.dumps({
                "sessions": sorted(json.dumps(r.as_dict()) for r in w.sessions.values()),
                "registrations": sorted(json.dumps({**r.as_dict(), "pushed": list(r.pushed),
                                                    "seq": r.seq})
                                        for regs in w.users.values() for r in regs.values()),
                "audit": [(a.jid, a.node, a.action, a.reason) for a in w.audit_log],
            })
            for name, w in self.worlds.items()
        }
        assert len(set(snapshots.values())) == 1, f"states differ: {snapshots}\n" + self._shown()


EnginesAgree.TestCase.settings = settings(max_examples=150, stateful_step_count=40,
                                          deadline=None)
TestEnginesAgree = EnginesAgree.TestCase
