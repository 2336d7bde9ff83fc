"""`pushrules bench` says on stderr what it measures: numbered steps with the time so far, and
each figure as it comes (stdout keeps only the report)."""

from __future__ import annotations

import re

from pushrules.benchmarks import harness

TINY = harness.Plan(
    users={harness.GENERATED: 4, harness.PSM: 2, harness.TRANSITIONS: 2},
    idle_sessions={harness.GENERATED: 20, harness.PSM: 4, harness.TRANSITIONS: 4},
    scaling={harness.GENERATED: (20,), harness.PSM: (4,), harness.TRANSITIONS: (4,)},
    scaling_users={harness.GENERATED: 1, harness.PSM: 1, harness.TRANSITIONS: 1},
    replay_users=2, repeats=1, stores=False,
    checker_bounds={"sessions": 1, "push_sessions": 1, "orphans": 0, "stanzas": 1,
                    "max_devices": 1},
)


def test_progress_numbers_every_step_and_reports_each_figure():
    lines: list[str] = []
    result = harness.run(plan=TINY, progress=lines.append)
    steps = [line for line in lines if line.startswith("[")]
    numbers = [re.match(r"\[(\d+)/(\d+), \d+ s\] ", line) for line in steps]
    assert all(numbers), steps
    done = [int(m.group(1)) for m in numbers if m]
    totals = {int(m.group(2)) for m in numbers if m}
    assert done == list(range(1, len(steps) + 1)) and totals == {len(steps)}
    present = list(harness.engine_factories())
    assert len(steps) == sum(3 + len(TINY.scaling[name]) for name in present) + 2
    figures = [line.strip() for line in lines if line.startswith("  ")]
    generated = result["events_per_s"][harness.GENERATED]
    assert f"{generated:,.0f} events/s" in figures
    assert f"{result['replay_events_per_s']:,.0f} events/s" in figures
