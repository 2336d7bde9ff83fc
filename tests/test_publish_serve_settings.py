"""`pushrules serve` settings: TOML file and flags (flags win), errors naming section and key."""

from __future__ import annotations

import pytest

from pushrules.serve_cmd import SettingsError, build_settings, read_toml


def write(tmp_path, text: str):
    path = tmp_path / "serve.toml"
    path.write_text(text)
    return path


def test_file_then_flags(tmp_path):
    secret = tmp_path / "secret"
    secret.write_text("from-file\n")
    values, rules = read_toml(write(tmp_path, f"""
[component]
jid = "push.example.org"
secret_file = "{secret}"
port = 5348
[rules]
include_body = true
max_errors = 3
[dispatch]
iq_timeout = 2
[store]
url = "sqlite:///x.db"
"""))
    settings = build_settings({"port": 6000, "iq_timeout": None}, values, rules)
    assert settings.component_jid == "push.example.org"
    assert settings.component_secret == "from-file"
    assert settings.port == 6000 and settings.iq_timeout == 2.0
    assert settings.rules.include_body is True and settings.rules.max_errors == 3
    assert settings.store == "sqlite:///x.db" and settings.host == "127.0.0.1"
    assert "from-file" not in repr(settings)


@pytest.mark.parametrize(("text", "message"), [
    ("[compnent]\njid = 'x'\n", "unknown section [compnent]"),
    ("[dispatch]\ntimeout = 3\n", "[dispatch] unknown key 'timeout'"),
    ("[rules]\nmax_errors = [1]\n", "[rules] max_errors: must be a boolean"),
    ("[component\n", "not valid TOML"),
])
def test_bad_files_are_named(tmp_path, text, message):
    with pytest.raises(SettingsError, match=message.replace("[", r"\[")):
        read_toml(write(tmp_path, text))


@pytest.mark.parametrize(("flags", "rules", "message"), [
    ({"component_secret": "s"}, {}, "component JID is missing"),
    ({"component_jid": "p.example"}, {}, "component secret is missing"),
    ({"component_jid": "p.example", "component_secret": "s"}, {"max_errors": "x"},
     "option max_errors: 'x' is not an integer"),
    ({"component_jid": "p.example", "component_secret": "s", "iq_timeout": 0}, {},
     "iq_timeout must be positive"),
])
def test_bad_settings_are_named(flags, rules, message):
    with pytest.raises(SettingsError, match=message):
        build_settings(flags, {}, rules)


def test_metrics_listen_from_the_file_or_the_flag(tmp_path):
    values, rules = read_toml(write(tmp_path, '[metrics]\nlisten = "127.0.0.1:9108"\n'))
    base = {"component_jid": "p.example", "component_secret": "s"}
    assert build_settings(base, values, rules).metrics == "127.0.0.1:9108"
    assert build_settings({**base, "metrics": "127.0.0.1:9200"}, values, rules).metrics == \
        "127.0.0.1:9200"
    assert build_settings(base, {}, {}).metrics is None
    with pytest.raises(SettingsError, match=r"--metrics '9108': expected HOST:PORT"):
        build_settings({**base, "metrics": "9108"}, {}, {})
