"""What the live Prosody suites share (test_prosody_adapter.py, test_prosody_v2.py): a registry of
scenarios, the record each one fills, the live world's common part, and running a scenario so
that its failure is recorded and reported by the tests that read it, not raised in the middle of
the others (every scenario runs at once, in one event loop)."""

from __future__ import annotations

import asyncio
import shutil
import traceback
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from harness import in_ci
from prosody_adapter import Device, until


@dataclass
class Record:
    """What one scenario observed."""

    users: list[str]
    host: str = ""
    """The VirtualHost it runs on (when a suite runs the same scenario on several)."""
    outcomes: list[dict] = field(default_factory=list)
    received: list = field(default_factory=list)
    marks: dict[str, object] = field(default_factory=dict)
    error: str | None = None


Scenario = Callable[[Any, Record], Awaitable[None]]


class Scenarios(dict[str, tuple[list[str], Scenario]]):
    """name -> (users, the scenario); ``@SCENARIOS.add(name, *users)`` registers one."""

    def add(self, name: str, *users: str) -> Callable[[Scenario], Scenario]:
        def register(fn: Scenario) -> Scenario:
            self[name] = (list(users), fn)
            return fn
        return register


class LiveBase:
    """The clients and the app server of a live run (a suite's ``Live`` adds its servers)."""

    PUSH_WAIT = 20.0
    """Seconds ``pushes`` waits by default."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.witness: Device | None = None  # receives each Device.all_acked mark
        self.app: Any = None
        self.clients: list[Device] = []
        self.prosody: Any = None

    async def device(self, full_jid: str, cls: type[Device] = Device) -> Device:
        client = cls(full_jid, self.prosody.c2s_port)
        client.witness = self.witness
        self.clients.append(client)
        return await client.online()

    def received(self, node: str) -> list:
        assert self.app is not None
        return self.app.for_node(node)

    async def pushes(self, node: str, count: int, timeout: float | None = None) -> None:
        await until(lambda: len(self.received(node)) >= count, timeout or self.PUSH_WAIT,
                    f"{count} publishes to {node} (got {len(self.received(node))})")


async def run_scenario(fn: Scenario, live: LiveBase, rec: Record, timeout: float,
                       settle: float) -> None:
    """Run one scenario, then ``settle`` seconds (nothing more may arrive); a failure is kept
    in ``rec.error`` for the tests to report."""
    try:
        await asyncio.wait_for(fn(live, rec), timeout)
        await asyncio.sleep(settle)
    except Exception:
        rec.error = traceback.format_exc()


def need_prosody() -> None:
    """Skip without Prosody, except in CI, which installs it."""
    if shutil.which("prosody") is None:
        if in_ci():
            pytest.fail("prosody is not installed (CI installs it with apt-get)")
        pytest.skip("prosody is not installed")


def record(live: dict[str, Record], name: str) -> Record:
    """A scenario's record, failing the test with the scenario's own traceback if it failed."""
    rec = live[name]
    assert rec.error is None, f"scenario {name} failed:\n{rec.error}"
    return rec
