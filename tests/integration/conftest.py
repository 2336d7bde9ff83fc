"""Fixtures for the integration tests: one real Prosody per test session (tmp dir, own ports)."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # import-mode=importlib: make harness importable

from harness import Prosody, in_ci  # noqa: E402


@pytest.fixture(scope="session")
def prosody(tmp_path_factory: pytest.TempPathFactory):
    if shutil.which("prosody") is None:
        if in_ci():
            pytest.fail("prosody is not installed (CI must install it: apt-get install prosody)")
        pytest.skip("prosody is not installed")
    server = Prosody(tmp_path_factory.mktemp("prosody"))
    server.start()
    yield server
    server.stop()
