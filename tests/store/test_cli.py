"""`pushrules registrations USER --store URL`: what an operator sees, secrets masked."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from pushrules.cli import main
from pushrules.generated.events import EVENT_CLASSES as EV
from pushrules.model.config import Config
from pushrules.runtime.store import StoredEngine, open_store

BOB = "bob@example.org"
SECRET = "hunter2-very-secret"


@pytest.fixture(params=["sqlite", "redis", "cluster"])
def store_url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'pushrules.db'}"
    if request.param == "cluster":
        return f"{request.getfixturevalue('redis_cluster').url}?prefix=cli"
    return f"{request.getfixturevalue('redis_server').url}?prefix=cli"


def fill(url: str) -> None:
    engine = StoredEngine(open_store(url), Config(max_devices=2), clock=lambda: 1_700_000_000.0)
    session = f"{BOB}/phone"
    engine.handle(EV["session-bind"](session))
    for n in range(3):
        engine.handle(EV["push-enable"](session, "push.example.net", f"n{n}", secret=SECRET,
                                        publish_options={"endpoint": "https://fcm/xyz"}))
    engine.store.close()


def test_lists_registrations_sessions_and_audit_with_secrets_masked(store_url):
    fill(store_url)
    result = CliRunner().invoke(main, ["registrations", BOB, "--store", store_url])
    assert result.exit_code == 0, result.output
    out = result.output
    assert SECRET not in out and "fcm/xyz" not in out
    assert "bob@example.org: 3 registration(s)" in out
    assert ("push.example.net n0  disabled  session -  errors 0  evicted: more than "
            "max_devices=2 (at 2023-11-14T22:13:20+00:00)") in out
    assert "push.example.net n2  bound  session bob@example.org/phone  errors 0" in out
    assert "options: endpoint=***, secret=***" in out
    assert "2023-11-14T22:13:20+00:00  evict  push.example.net n0" in out

    result = CliRunner().invoke(main, ["registrations", BOB, "--store", store_url, "--json"])
    assert result.exit_code == 0, result.output
    assert SECRET not in result.output
    data = json.loads(result.output)
    assert [(r["node"], r["state"]) for r in data["registrations"]] == [
        ("n0", "disabled"), ("n1", "orphaned"), ("n2", "bound")]
    assert data["sessions"] == [{"session": f"{BOB}/phone", "state": "active",
                                 "binding": ["push.example.net", "n2"], "csi": "active"}]
    assert [(a["action"], a["node"]) for a in data["audit"]] == [("evict", "n0")]


def test_bad_user_missing_file_and_unreachable_store_are_clear_errors(tmp_path):
    runner = CliRunner()
    missing = tmp_path / "none.db"
    result = runner.invoke(main, ["registrations", BOB, "--store", f"sqlite:///{missing}"])
    assert result.exit_code == 1 and f"sqlite store {missing}: no such file" in result.output
    assert not missing.exists()
    result = runner.invoke(main, ["registrations", f"{BOB}/phone", "--store", "memory:"])
    assert result.exit_code == 2 and "is not a bare JID" in result.output
    result = runner.invoke(main, ["registrations", BOB, "--store",
                                  "redis://:pw-xyz@127.0.0.1:1/0"])
    assert result.exit_code == 1 and "is unavailable" in result.output
    assert "pw-xyz" not in result.output


def test_store_help_names_every_store_url():
    result = CliRunner().invoke(main, ["registrations", "--help"], terminal_width=200)
    assert result.exit_code == 0
    text = " ".join(result.output.split())
    for scheme in ("sqlite:///", "redis://", "redis+cluster://", "memory:"):
        assert scheme in text, scheme


def test_serve_store_retry_budget_is_an_option_and_a_config_key(tmp_path):
    from pushrules.runtime.xmpp.sidecar import STORE_RETRY_SECONDS
    from pushrules.serve_cmd import SettingsError, build_settings, read_toml

    flags = {"component_jid": "push.example.org", "component_secret": "s"}
    assert build_settings(flags, {}, {}).store_retry_seconds == STORE_RETRY_SECONDS >= 10
    config = tmp_path / "serve.toml"
    config.write_text('[store]\nurl = "memory:"\nretry_seconds = 30\n')
    values, rules = read_toml(config)
    assert build_settings(flags, values, rules).store_retry_seconds == 30
    assert build_settings({**flags, "store_retry_seconds": 2.5}, values,
                          rules).store_retry_seconds == 2.5
    with pytest.raises(SettingsError, match="store_retry_seconds must be from 0 to 3600"):
        build_settings({**flags, "store_retry_seconds": -1}, {}, {})
