"""Semantics-preserving rewrites of model/world.py keep both explorers exploring the same world,
state by state: the compiled explorer's lazy world depends on WorldBase's storage methods, not
on how WorldBase uses its dicts (checker/lazyworld.py). A rewrite that bypasses the storage
methods fails loudly instead of exploring another world."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_compiled import RecordingExplorer, _compiled_states, _reference_states, _summary

from pushrules.checker.bounded import Bounds
from pushrules.checker.compiled import CompiledExplorer
from pushrules.checker.explore import Result
from pushrules.model import world as world_module
from pushrules.model.world import WorldBase

BOUNDS = Bounds(sessions=2, push_sessions=1, orphans=1, stanzas=1, max_devices=2)
SOURCE = Path(world_module.__file__).read_text()

REWRITES = {
    # the one the review found (then at the registration lookup of fire_registration)
    "setdefault at the registration store": (
        "regs = self.users.get(reg.user)", "regs = self.users.setdefault(reg.user, None)"),
    "membership test for a session": (
        "return self.sessions.get(sid)",
        "return self.sessions[sid] if sid in self.sessions else None"),
    "membership test for a registration": (
        "return None if regs is None else regs.get((key[1], key[2]))",
        "return None if regs is None or (key[1], key[2]) not in regs "
        "else regs[(key[1], key[2])]"),
    "the registration found among the user's": (
        "reg = self.registration(key)\n        if reg is None:\n            reg = self._new",
        "reg = next((r for r in self.registrations_of(key[0]) if r.key == key), None)\n"
        "        if reg is None:\n            reg = self._new"),
    "registrations counted": (
        "return bool(self.users.get(user))", "return len(self.registrations_of(user)) > 0"),
    "the end of a session tested in the other order": (
        'if record.state == "offline" and record.binding is None:',
        'if record.binding is None and record.state == "offline":'),
}


def _rewritten(monkeypatch: pytest.MonkeyPatch, old: str, new: str) -> None:
    """Put the methods of WorldBase compiled from the rewritten source in place (every other
    name of the module stays the original, so the exceptions are the ones callers catch)."""
    assert SOURCE.count(old) == 1, f"model/world.py no longer holds {old!r}: update the rewrite"
    namespace = dict(vars(world_module))
    exec(compile(SOURCE.replace(old, new), world_module.__file__, "exec"), namespace)  # noqa: S102
    rewritten = namespace["WorldBase"]
    namespace.update(vars(world_module))  # the methods' globals: the original module's names
    for name, value in vars(rewritten).items():
        if callable(value) and not name.startswith("__"):
            monkeypatch.setattr(WorldBase, name, value)


@pytest.fixture(scope="module")
def reference() -> tuple[Result, list[tuple]]:
    explorer = RecordingExplorer(BOUNDS)
    result = explorer.run()
    return result, _reference_states(explorer)


@pytest.mark.parametrize("name", list(REWRITES))
def test_explorers_agree_state_by_state_after_a_rewrite(
        name: str, reference: tuple[Result, list[tuple]],
        monkeypatch: pytest.MonkeyPatch) -> None:
    expected, ref_states = reference
    _rewritten(monkeypatch, *REWRITES[name])
    compiled = CompiledExplorer(BOUNDS)
    assert _summary(compiled.run()) == _summary(expected)
    assert _compiled_states(compiled) == ref_states
    if name.startswith("setdefault"):  # the reference explorer on the rewritten world, too
        again = RecordingExplorer(BOUNDS)
        assert _summary(again.run()) == _summary(expected)
        assert _reference_states(again) == ref_states


def test_bypassing_the_storage_methods_fails_loudly(monkeypatch: pytest.MonkeyPatch) -> None:
    _rewritten(monkeypatch, "record = self.session(sid)", "record = self.sessions.get(sid)")
    result = CompiledExplorer(BOUNDS).run(stop_at_first=True)
    assert "every_event_handled" in result.violations
    assert "AttributeError" in result.violations["every_event_handled"].detail
