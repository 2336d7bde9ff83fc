"""`pushrules serve --metrics HOST:PORT --log-format json` as a process over a real Prosody: the
metrics answer while it runs, /healthz follows the link, stderr is JSON lines."""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request

import pytest
from harness import APP_JIDS, AppServer, enable_events, free_port, offline_event
from test_serve import lines, start_serve, write_config

pytestmark = pytest.mark.integration

DELIVERED_TWO = 'pushrules_pushes_total{outcome="delivered",rule="c/offline"} 2.0'


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


async def scrape(url: str, want: str, timeout: float = 15.0) -> str:
    """The /metrics text once it holds ``want`` (the listener may not be up yet)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    body = ""
    while loop.time() < deadline:
        try:
            _status, body = await asyncio.to_thread(get, url)
            if want in body:
                return body
        except OSError:
            pass
        await asyncio.sleep(0.1)
    raise AssertionError(f"{want!r} not in the metrics:\n{body}")


def test_metrics_answer_while_serve_runs(prosody, tmp_path):
    user, node, port = "mia@localhost", "node-metrics", free_port()
    base = f"http://127.0.0.1:{port}"

    async def main():
        app = await AppServer(APP_JIDS[0], prosody.port).start()
        try:
            proc = await start_serve(write_config(tmp_path, prosody), "--metrics",
                                     f"127.0.0.1:{port}", "--log-format", "json")
            proc.stdin.write(lines(*enable_events(user, node), "{bad json",
                                   offline_event(user, "m1"), offline_event(user, "m2")))
            await proc.stdin.drain()
            body = await scrape(f"{base}/metrics", DELIVERED_TWO)
            assert 'pushrules_events_total{event="push-enable"} 1.0' in body
            assert 'pushrules_rejected_lines_total{reason="json"} 1.0' in body
            assert "pushrules_publish_seconds_count 2.0" in body
            assert "pushrules_publishes_in_flight 0.0" in body
            status, health = await asyncio.to_thread(get, f"{base}/healthz")
            assert (status, json.loads(health)) == (200, {"xmpp": True, "store": True})
            proc.stdin.close()
            _out, err = await asyncio.wait_for(proc.communicate(), 30)
        finally:
            await app.stop()
        records = [json.loads(line) for line in err.decode().splitlines()]  # all JSON
        assert any(r["level"] == "ERROR" and "not valid JSON" in r["message"] for r in records)
        assert all({"ts", "level", "logger", "message"} <= set(r) for r in records)
        assert "secret-" + node not in err.decode()  # debug logs the publish: masked

    asyncio.run(main())
