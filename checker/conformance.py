"""Conformance between engines on every step the checker explored: each (model state, event)
is replayed on every engine, restored from the same state; they must agree on the outcome
(taken or rejected), the pushes and the state after."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from pushrules.model.world import ImpossibleEvent, WorldBase

from .bounded import take, zero_clock
from .compiled import CompiledExplorer
from .explore import Explorer


@dataclass
class Disagreement:
    engine: str
    model: tuple[Any, ...]
    event: Any
    expected: Any
    got: Any

    def describe(self, explorer: Explorer) -> str:
        return (f"{self.engine} disagrees with the generated tables in model state {self.model} "
                f"on {json.dumps(explorer.world.to_json(self.event))}: expected {self.expected}, "
                f"got {self.got}")


def outcome(explorer: Explorer, world: WorldBase, model: tuple[Any, ...], event: Any) -> Any:
    """What one engine does with ``event`` from ``model``: pushes and state, or a rejection."""
    explorer_world = explorer.restore_into(world, model)
    try:
        pushes = take(explorer_world, event)
    except ImpossibleEvent:
        return ("rejected", explorer.encode(explorer_world))
    except Exception as exc:
        return ("error", type(exc).__name__)
    return ("ok", [(p.to_json(), p.sender, p.body) for p in pushes],
            explorer.encode(explorer_world))


def compare(explorer: Explorer, engines: dict[str, type[WorldBase]],
            steps: Iterable[tuple[int, Any]] | None = None) -> tuple[int, list[Disagreement]]:
    """Replay the explored steps (after ``explorer.run()``) on every engine; return how many
    steps were compared and the disagreements (at most one per engine)."""
    events = {id(e): e for e in explorer.world._cache.values()}
    if steps is None:
        steps = [(mid, events[eid]) for mid, eid in explorer._steps]
    return compare_models(explorer, engines,
                          ((explorer.models[mid], event) for mid, event in steps))


def compare_compiled(compiled: CompiledExplorer, engines: dict[str, type[WorldBase]],
                     ) -> tuple[int, list[Disagreement]]:
    """Replay every distinct step the compiled explorer computed (after its ``run()``) on
    every engine, each restored from the full state it was computed from."""
    return compare_models(Explorer(compiled.bounds, compiled.world_cls), engines,
                          compiled.steps())


def compare_models(explorer: Explorer, engines: dict[str, type[WorldBase]],
                   steps: Iterable[tuple[tuple[Any, ...], Any]]) -> tuple[int, list[Disagreement]]:
    """Replay (model part, event) steps, restored through ``explorer``, on every engine."""
    found: dict[str, Disagreement] = {}
    count = 0
    reference = explorer.world_cls
    for model, event in steps:
        count += 1
        expected = outcome(explorer, reference(explorer.world.config, clock=zero_clock), model,
                           event)
        for name, cls in engines.items():
            if name in found:
                continue
            got = outcome(explorer, cls(explorer.world.config, clock=zero_clock), model, event)
            if got != expected:
                found[name] = Disagreement(name, model, event, expected, got)
    return count, list(found.values())
