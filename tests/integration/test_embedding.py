"""The embedding example of runtime/xmpp/README.md, run as written against a real Prosody."""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
from pathlib import Path

import pytest
from harness import APP_JIDS, PUSH_JID, PUSH_SECRET, AppServer

pytestmark = pytest.mark.integration

README = Path(__file__).resolve().parents[2] / "runtime" / "xmpp" / "README.md"


def example() -> str:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.DOTALL)
    assert blocks, f"no python example in {README}"
    return blocks[0]


def test_readme_embedding_example_pushes(prosody, tmp_path):
    script = tmp_path / "embed.py"
    script.write_text(example())

    async def main():
        app = await AppServer(APP_JIDS[0], prosody.port).start()
        try:
            env = {**os.environ, "PUSHRULES_JID": PUSH_JID, "PUSHRULES_SECRET": PUSH_SECRET,
                   "PUSHRULES_PORT": str(prosody.port), "APP_JID": APP_JIDS[0]}
            proc = await asyncio.create_subprocess_exec(
                sys.executable, str(script), env=env, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE)
            out, err = await asyncio.wait_for(proc.communicate(), 60)
            return proc.returncode, out.decode(), err.decode(), app.received
        finally:
            await app.stop()

    code, out, err, received = asyncio.run(main())
    assert code == 0, err
    outcome = json.loads(out.strip().splitlines()[-1])
    assert (outcome["stanzas"], outcome["status"], outcome["rule"]) == (["m1"], "delivered",
                                                                       "c/offline")
    assert len(received) == 1
    publish = received[0].publish
    assert (publish.node, publish.options) == ("n1", {"secret": "device-secret"})
    assert publish.summary == {"message-count": "1", "last-message-sender": "alice@localhost/pc",
                               "last-message-body": "New Message!"}
