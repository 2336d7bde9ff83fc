"""The benchmark harness: the same event mix through every engine, in one run.

Engines: (a) ``generated``: the runtime driven by generated/tables.py; (b)
``python_statemachine``: the reference model (model/reference.py); (c) ``transitions``: the
independent transitions encoding (checker/transitions_encoding.py), when installed.

Figures (see benchmarks/RESULTS.md for what each one means):
- events_per_s: ``handle`` over the realistic mix, stanzas pre-parsed (the embedded API);
- decision_events_per_s: ``handle`` over the decision mix (nobody enabled push: every event is
  a machine decision, with no push to build);
- bytes_per_session: tracemalloc over idle bound sessions;
- replay_events_per_s: ``replay`` end to end from a trace file (JSON and XML parsing);
- scaling: time per event and bytes per session at 10k, 100k and 1M sessions;
- checker_states_per_s and stores, when those modules are installed.
Slow engines run a smaller population of the same mix (the first users of it); events per
second are per engine, so the ratios compare like with like.
"""

from __future__ import annotations

import gc
import importlib
import io
import multiprocessing
import os
import platform
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from typing import Any

from pushrules.model.config import Config
from pushrules.model.world import WorldBase

from .mix import Mix, generate, idle_binds, write_trace

GENERATED = "generated"
PSM = "python_statemachine"
TRANSITIONS = "transitions"
ENGINES = (GENERATED, PSM, TRANSITIONS)


@dataclass(frozen=True)
class Plan:
    """Population sizes and repeats of one run (``QUICK`` or ``FULL``)."""

    users: dict[str, int]          # users in the event mix, per engine
    idle_sessions: dict[str, int]  # idle sessions for bytes_per_session, per engine
    scaling: dict[str, tuple[int, ...]]  # session counts for the scaling table, per engine
    scaling_users: dict[str, int]  # users in the mix timed at each scale, per engine
    replay_users: int
    repeats: int
    checker_bounds: dict[str, int]  # Bounds fields over the default; {} is the default bound
    stores: bool = True            # run benchmarks/stores.py when it is installed


QUICK = Plan(
    users={GENERATED: 300, PSM: 8, TRANSITIONS: 40},
    idle_sessions={GENERATED: 10_000, PSM: 200, TRANSITIONS: 10_000},
    scaling={GENERATED: (10_000,), PSM: (), TRANSITIONS: ()},
    scaling_users={GENERATED: 100, PSM: 4, TRANSITIONS: 20},
    replay_users=100, repeats=1,
    checker_bounds={"sessions": 2, "push_sessions": 2, "orphans": 1, "stanzas": 2},
)
# python-statemachine builds a machine per session at about 1.4 ms and 115 KB each (measured):
# 100k of them would take minutes and 11 GB, so it is measured on 2k (idle) and 1k and 10k
# sessions (scaling). The
# transitions encoding shares one Machine per kind (no per-session machine): 1M is affordable.
FULL = Plan(
    users={GENERATED: 4_000, PSM: 60, TRANSITIONS: 600},
    idle_sessions={GENERATED: 100_000, PSM: 2_000, TRANSITIONS: 100_000},
    scaling={GENERATED: (10_000, 100_000, 1_000_000), PSM: (1_000, 10_000),
             TRANSITIONS: (10_000, 100_000, 1_000_000)},
    scaling_users={GENERATED: 1_000, PSM: 20, TRANSITIONS: 100},
    replay_users=2_000, repeats=3, checker_bounds={},
)


def _clock() -> float:
    return 0.0


# CPU time of this process: other work on a shared machine does not count against an engine.
_now = time.process_time


def engine_factories() -> dict[str, Callable[[], WorldBase]]:
    """The engines present in this install, by benchmark name."""
    from pushrules.model.reference import ReferenceWorld
    from pushrules.runtime import Engine

    out: dict[str, Callable[[], WorldBase]] = {
        GENERATED: lambda: Engine(Config(), clock=_clock),
        PSM: lambda: ReferenceWorld(Config(), clock=_clock),
    }
    try:
        module = importlib.import_module("pushrules.checker.transitions_encoding")
    except ImportError:
        return out
    world = getattr(module, "TransitionsWorld", None)
    if world is None:
        return out
    out[TRANSITIONS] = lambda: world(Config(), clock=_clock)
    return out


def drive(world: WorldBase, events: list[Any]) -> tuple[float, int]:
    """Seconds to handle every event, and the pushes decided."""
    handle = world.handle
    pushes = 0
    gc.collect()
    start = _now()
    for event in events:
        pushes += len(handle(event))
    return _now() - start, pushes


def events_per_s(factory: Callable[[], WorldBase], mix: Mix, repeats: int) -> dict[str, Any]:
    """Best of ``repeats`` runs, each on a fresh engine."""
    best = float("inf")
    pushes = 0
    for _ in range(max(1, repeats)):
        seconds, pushes = drive(factory(), mix.events)
        best = min(best, seconds)
    return {"events_per_s": len(mix.events) / best, "events": len(mix.events),
            "sessions": mix.sessions, "pushes": pushes, "seconds": best}


def idle_bytes(factory: Callable[[], WorldBase], sessions: int) -> float:
    """Bytes the engine allocates per bound, idle session (tracemalloc). The events, and so
    the full-JID strings the server hands in, exist before tracing starts: what is counted is
    everything the engine allocates and keeps for the session."""
    events = idle_binds(sessions)
    world = factory()
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for event in events:
        world.handle(event)
    gc.collect()
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    assert len(world.sessions) == sessions
    return (after - before) / sessions


def _idle_bytes_of(name: str, sessions: int) -> float:
    return idle_bytes(engine_factories()[name], sessions)


def _scale_point_of(name: str, sessions: int, users: int, repeats: int) -> dict[str, Any]:
    return scale_point(engine_factories()[name], sessions, users, repeats)


def _fresh(fn: Callable[..., Any], *args: Any) -> Any:
    """fn(*args) in a new interpreter: what earlier benchmarks left in this process (freed
    blocks, interned strings, caches) cannot shift memory figures (seen: up to 80% at 10k
    sessions after the mix runs)."""
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(fn, args)


def idle_bytes_fresh(name: str, sessions: int) -> float:
    return _fresh(_idle_bytes_of, name, sessions)


def jid_bytes(sessions: int) -> float:
    """Average size of the full-JID strings of the idle population: what keeping the caller's
    session key adds when it is counted too."""
    return sum(sys.getsizeof(event.session) for event in idle_binds(sessions)) / sessions


def scale_point(factory: Callable[[], WorldBase], sessions: int, users: int,
                repeats: int) -> dict[str, Any]:
    """Bind ``sessions`` idle sessions (bytes per session measured), then time a mix of
    other users' events through the populated engine."""
    events = idle_binds(sessions)
    world = factory()
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    start = _now()
    for event in events:
        world.handle(event)
    traced_bind_s = _now() - start
    gc.collect()
    per_session = (tracemalloc.get_traced_memory()[0] - before) / sessions
    tracemalloc.stop()
    del events
    best = float("inf")
    for rep in range(max(1, repeats)):
        # Each pass has users of its own, so the populated engine can take every pass.
        mix = generate(users, first_user=sessions + rep * users, seed=rep)
        seconds, _ = drive(world, mix.events)
        best = min(best, seconds / len(mix.events))
    return {
        "sessions": sessions, "bytes_per_session": per_session,
        "us_per_event": best * 1e6,
        "bind_s_traced": traced_bind_s,
    }


def replay_events_per_s(users: int, repeats: int) -> dict[str, Any]:
    """``replay`` end to end from a trace file: reading, JSON, stanza XML, engine, output."""
    from pushrules.runtime.replay import replay

    mix = generate(users, keep_xml=True)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "trace.jsonl")
        with open(path, "w", encoding="utf-8") as out:
            count = write_trace(mix.events, mix.xml, out)
        best = float("inf")
        lines = 0
        for _ in range(max(1, repeats)):
            sink = io.StringIO()
            err = io.StringIO()
            gc.collect()
            start = _now()
            with open(path, "rb") as trace:  # as `pushrules replay` reads it
                status = replay(trace, sink, err)
            best = min(best, _now() - start)
            if status != 0 or err.getvalue():
                raise RuntimeError(f"replay of the benchmark trace failed: {err.getvalue()}")
            lines = sink.getvalue().count("\n")
    return {"events_per_s": count / best, "events": count, "pushes": lines, "seconds": best}


def checker_states_per_s(bounds: dict[str, int]) -> dict[str, Any] | None:
    """The model checker's exploration speed over a whole bounded world (`pushrules check`'s
    explorer), when the checker is installed."""
    try:
        compiled = importlib.import_module("pushrules.checker.compiled")
        bounded = importlib.import_module("pushrules.checker.bounded")
    except ImportError:
        return None
    chosen = bounded.Bounds(**bounds)
    start = _now()
    result = compiled.CompiledExplorer(chosen).run()
    seconds = _now() - start
    states = _first_int(result, ("states", "explored", "states_explored"))
    if not states:
        return None
    transitions = _first_int(result, ("transitions",)) or 0
    return {"states_per_s": states / seconds, "states": states, "seconds": seconds,
            "transitions_per_s": transitions / seconds, "transitions": transitions,
            "bounds": chosen.describe(), "ok": result.ok}


def _first_int(obj: Any, names: tuple[str, ...]) -> int | None:
    for name in names:
        value = getattr(obj, name, None)
        if isinstance(value, int):
            return value
    return None


def store_bench(quick: bool) -> dict[str, Any] | None:
    try:
        stores = importlib.import_module("pushrules.benchmarks.stores")
    except ImportError:
        return None
    return stores.run_store_bench(quick)


def machine() -> dict[str, Any]:
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            for line in info:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    versions = {}
    for dist in ("python-statemachine", "transitions"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = None
    return {
        "cpu": model, "cores": os.cpu_count(), "python": platform.python_version(),
        "implementation": platform.python_implementation(), "platform": platform.platform(),
        **versions,
    }


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if not a or not b else a / b


class _Steps:
    """Progress lines: ``[step/total, elapsed] what``, then what it measured."""

    def __init__(self, total: int, progress: Callable[[str], None] | None) -> None:
        self.total = total
        self.done = 0
        self.start = time.perf_counter()
        self.progress = progress

    def __call__(self, message: str) -> None:
        self.done += 1
        if self.progress is not None:
            elapsed = time.perf_counter() - self.start
            self.progress(f"[{self.done}/{self.total}, {elapsed:.0f} s] {message}")

    def result(self, message: str) -> None:
        if self.progress is not None:
            self.progress(f"  {message}")


def _step_count(plan: Plan, names: list[str], stores: bool) -> int:
    per_engine = sum(3 + len(plan.scaling[name]) for name in names)
    return per_engine + 2 + (1 if stores else 0)


def run(quick: bool = False, progress: Callable[[str], None] | None = None,
        plan: Plan | None = None) -> dict[str, Any]:
    """Every figure, as one JSON-able dict (``plan`` overrides the sizes). ``progress`` gets a
    line before each step (its number, the total, seconds so far) and after each figure."""
    plan = plan or (QUICK if quick else FULL)
    factories = engine_factories()
    say = _Steps(_step_count(plan, [n for n in ENGINES if n in factories], plan.stores),
                 progress)
    missing = [name for name in ENGINES if name not in factories]
    result: dict[str, Any] = {
        "quick": quick, "machine": machine(), "missing_engines": missing,
        "events_per_s": {}, "decision_events_per_s": {}, "bytes_per_session": {},
        "bytes_per_session_with_jid": {},
        "details": {"mix": {}, "decision": {}, "idle_sessions": {}},
        "scaling": {},
    }
    for name in ENGINES:
        factory = factories.get(name)
        if factory is None:
            for key in ("events_per_s", "decision_events_per_s", "bytes_per_session",
                        "bytes_per_session_with_jid"):
                result[key][name] = None
            continue
        users = plan.users[name]
        say(f"{name}: mix of {users} users")
        full = events_per_s(factory, generate(users), plan.repeats)
        say.result(f"{full['events_per_s']:,.0f} events/s")
        say(f"{name}: decision mix")
        decision = events_per_s(factory, generate(users, push=False), plan.repeats)
        say.result(f"{decision['events_per_s']:,.0f} events/s")
        result["events_per_s"][name] = full["events_per_s"]
        result["decision_events_per_s"][name] = decision["events_per_s"]
        result["details"]["mix"][name] = full
        result["details"]["decision"][name] = decision
        points = []
        for sessions in plan.scaling[name]:
            say(f"{name}: scaling at {sessions} sessions")
            points.append(_fresh(_scale_point_of, name, sessions, plan.scaling_users[name],
                                 plan.repeats))
        result["scaling"][name] = points
        idle = plan.idle_sessions[name]
        say(f"{name}: {idle} idle sessions in a fresh process")
        per_session = idle_bytes_fresh(name, idle)
        say.result(f"{per_session:,.0f} bytes per idle session")
        result["bytes_per_session"][name] = per_session
        result["bytes_per_session_with_jid"][name] = per_session + jid_bytes(idle)
        result["details"]["idle_sessions"][name] = idle
    eps, dec = result["events_per_s"], result["decision_events_per_s"]
    result["ratios"] = {
        "generated_vs_python_statemachine": _ratio(eps[GENERATED], eps[PSM]),
        "generated_vs_transitions": _ratio(eps[GENERATED], eps[TRANSITIONS]),
        "decision_generated_vs_python_statemachine": _ratio(dec[GENERATED], dec[PSM]),
        "decision_generated_vs_transitions": _ratio(dec[GENERATED], dec[TRANSITIONS]),
        "bytes_python_statemachine_vs_generated": _ratio(
            result["bytes_per_session"][PSM], result["bytes_per_session"][GENERATED]),
        "bytes_transitions_vs_generated": _ratio(
            result["bytes_per_session"][TRANSITIONS], result["bytes_per_session"][GENERATED]),
    }
    say("replay end to end")
    replay_figures = replay_events_per_s(plan.replay_users, plan.repeats)
    say.result(f"{replay_figures['events_per_s']:,.0f} events/s")
    result["replay_events_per_s"] = replay_figures["events_per_s"]
    result["details"]["replay"] = replay_figures
    say("checker")
    checker = checker_states_per_s(plan.checker_bounds)
    if checker is not None:
        say.result(f"{checker['states_per_s']:,.0f} states/s")
    result["checker_states_per_s"] = None if checker is None else checker["states_per_s"]
    result["details"]["checker"] = checker
    if plan.stores:
        say("stores: the mix through memory, SQLite and Redis")
    stores = store_bench(quick) if plan.stores else None
    if stores is not None:
        result["stores"] = stores
    result["targets"] = targets(result)
    return result


TARGETS = {
    "generated events/s >= 1M": ("events_per_s", GENERATED, 1_000_000, ">="),
    "decision: generated >= 300x python-statemachine": (
        "ratios", "decision_generated_vs_python_statemachine", 300, ">="),
    "decision: generated >= 30x transitions": (
        "ratios", "decision_generated_vs_transitions", 30, ">="),
    "bytes per idle session <= 300": ("bytes_per_session", GENERATED, 300, "<="),
    "replay end to end >= 100k events/s": ("replay_events_per_s", None, 100_000, ">="),
    "checker >= 100k states/s": ("checker_states_per_s", None, 100_000, ">="),
}


def targets(result: dict[str, Any]) -> dict[str, bool | None]:
    """Each target of issue 5: met, missed, or None when not measured."""
    out: dict[str, bool | None] = {}
    for label, (key, sub, bound, op) in TARGETS.items():
        value = result.get(key)
        if sub is not None and isinstance(value, dict):
            value = value.get(sub)
        out[label] = None if value is None else (value >= bound if op == ">=" else value <= bound)
    return out


def main() -> None:  # pragma: no cover - convenience for `python -m`
    import json

    print(json.dumps(run(quick="--quick" in sys.argv), indent=2))
