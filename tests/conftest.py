"""Fixtures shared by the tests of the model, runtime, replay and render. The helpers live in
replaykit.py; import-mode=importlib needs this folder on sys.path to import it."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from replaykit import WORLDS, Driver  # noqa: E402

from pushrules.model.config import Config  # noqa: E402


@pytest.fixture(params=sorted(WORLDS))
def world_cls(request: pytest.FixtureRequest) -> type:
    """Each behaviour test runs against the generated runtime and the reference model."""
    return WORLDS[request.param]


@pytest.fixture
def make(world_cls: type):
    """make(**settings) -> a Driver on a fresh world with those options."""

    def build(**settings: Any) -> Driver:
        config = Config().with_settings({k: str(v) for k, v in settings.items()})
        return Driver(world_cls(config, clock=lambda: 1_700_000_000.0))

    return build


@pytest.fixture
def bob(make) -> Driver:
    return make()
