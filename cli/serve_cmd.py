"""`pushrules serve`: the sidecar (see pushrules.runtime.xmpp.sidecar). Settings come from a TOML
file (--config) and flags; a flag wins over the file."""

from __future__ import annotations

import signal
import sys
import tomllib
from pathlib import Path
from typing import Any

import click

from pushrules.model.config import Config
from pushrules.model.errors import PushrulesError

# TOML layout: section -> key -> flag name (the click parameter).
SECTIONS: dict[str, dict[str, str]] = {
    "component": {"jid": "component_jid", "secret": "component_secret",
                  "secret_file": "component_secret_file", "host": "host", "port": "port"},
    "dispatch": {"iq_timeout": "iq_timeout", "max_attempts": "max_attempts",
                 "backoff_initial": "backoff_initial", "backoff_max": "backoff_max",
                 "connect_timeout": "connect_timeout", "shutdown_grace": "shutdown_grace",
                 "max_in_flight": "max_in_flight", "max_outbox": "max_outbox"},
    "store": {"url": "store", "retry_seconds": "store_retry_seconds"},
    "input": {"socket": "socket", "socket_group": "socket_group",
              "allowed_uids": "allowed_uids"},
    "prosody": {"socket": "prosody", "socket_group": "socket_group",
                "allowed_uids": "allowed_uids"},
    "metrics": {"listen": "metrics"},
}
DEFAULTS: dict[str, Any] = {
    "host": "127.0.0.1", "port": 5347, "iq_timeout": 10.0, "max_attempts": 6,
    "backoff_initial": 0.5, "backoff_max": 30.0, "connect_timeout": 30.0,
    "shutdown_grace": 30.0, "max_in_flight": 512, "max_outbox": 10_000, "store": "memory:",
    "store_retry_seconds": 15.0,
}


class SettingsError(PushrulesError, ValueError):
    """A bad settings file or flag; the message names the file, section and key."""


def read_toml(path: Path) -> tuple[dict[str, Any], dict[str, str]]:
    """(flag values, rule settings) from a TOML file."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise SettingsError(f"{path}: cannot read: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise SettingsError(f"{path}: not valid TOML: {exc}") from None
    values: dict[str, Any] = {}
    rules: dict[str, str] = {}
    for section, table in data.items():
        if not isinstance(table, dict):
            raise SettingsError(f"{path}: {section!r} must be a table ([{section}])")
        if section == "rules":
            for key, value in table.items():
                if not isinstance(value, bool | int | str):
                    raise SettingsError(f"{path}: [rules] {key}: must be a boolean, integer "
                                        "or string")
                rules[key] = str(value).lower() if isinstance(value, bool) else str(value)
            continue
        keys = SECTIONS.get(section)
        if keys is None:
            known = ", ".join(["rules", *SECTIONS])
            raise SettingsError(f"{path}: unknown section [{section}] (known: {known})")
        for key, value in table.items():
            if key not in keys:
                raise SettingsError(f"{path}: [{section}] unknown key {key!r} "
                                    f"(known: {', '.join(keys)})")
            values[keys[key]] = value
    return values, rules


def build_settings(flags: dict[str, Any], file_values: dict[str, Any],
                   rule_settings: dict[str, str]) -> Any:
    from pushrules.runtime.xmpp.dispatcher import RetryPolicy
    from pushrules.runtime.xmpp.sidecar import SidecarSettings

    merged = {**DEFAULTS, **file_values, **{k: v for k, v in flags.items() if v is not None}}
    if merged.get("prosody"):
        if merged.get("socket"):
            raise SettingsError("--prosody and --socket are two event sources: choose one")
        # mod_pushrules sends the publishes from the user's host: no component needed.
        merged.setdefault("component_jid", "")
        merged.setdefault("component_secret", "-")
    if not merged.get("component_jid") and not merged.get("prosody"):
        raise SettingsError("the component JID is missing (--component-jid or [component] jid)")
    secret = merged.get("component_secret")
    secret_file = merged.get("component_secret_file")
    if not secret and secret_file:
        try:
            secret = Path(secret_file).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise SettingsError(f"component secret file {secret_file}: cannot read: "
                                f"{exc.strerror}") from None
    if not secret:
        raise SettingsError("the component secret is missing (--component-secret-file, "
                            "PUSHRULES_COMPONENT_SECRET or [component] secret)")
    try:
        rules = Config().with_settings(rule_settings)
        numbers = {name: float(merged[name]) for name in
                   ("iq_timeout", "backoff_initial", "backoff_max", "connect_timeout",
                    "shutdown_grace")}
        retry = RetryPolicy(max_attempts=int(merged["max_attempts"]),
                            backoff_initial=numbers["backoff_initial"],
                            backoff_max=numbers["backoff_max"])
        port = int(merged["port"])
        max_in_flight = int(merged["max_in_flight"])
        max_outbox = int(merged["max_outbox"])
        store_retry = float(merged["store_retry_seconds"])
        allowed_uids = tuple(int(uid) for uid in merged.get("allowed_uids") or ())
    except (TypeError, ValueError) as exc:
        raise SettingsError(str(exc)) from None
    if merged.get("metrics"):
        from pushrules.runtime.xmpp.metrics import parse_listen

        try:
            parse_listen(str(merged["metrics"]))
        except ValueError as exc:
            raise SettingsError(str(exc)) from None
    if numbers["iq_timeout"] <= 0 or max_in_flight < 1:
        raise SettingsError("iq_timeout must be positive and max_in_flight at least 1")
    if not 0 <= store_retry <= 3600:
        raise SettingsError(f"store_retry_seconds must be from 0 to 3600, not {store_retry:g}")
    if max_outbox < 1:
        raise SettingsError(f"max_outbox must be at least 1, not {max_outbox}")
    group = merged.get("socket_group")
    return SidecarSettings(
        component_jid=str(merged["component_jid"]), component_secret=secret,
        host=str(merged["host"]), port=port, rules=rules, iq_timeout=numbers["iq_timeout"],
        retry=retry, connect_timeout=numbers["connect_timeout"],
        shutdown_grace=numbers["shutdown_grace"], max_in_flight=max_in_flight,
        max_outbox=max_outbox, store=str(merged["store"]),
        socket=merged.get("socket"), socket_group=None if group is None else str(group),
        allowed_uids=allowed_uids,
        prosody=merged.get("prosody"),
        metrics=merged.get("metrics"), store_retry_seconds=store_retry,
    )


@click.command()
@click.option("--config", "config_file", type=click.Path(dir_okay=False, path_type=Path),
              help="TOML settings: [component] jid/secret/secret_file/host/port, [rules], "
                   "[dispatch], [store] url, [input] socket, [prosody] socket.")
@click.option("--component-jid", help="The JID this component connects as (XEP-0114).")
@click.option("--component-secret", envvar="PUSHRULES_COMPONENT_SECRET", show_envvar=True,
              help="The component secret (prefer the env var or --component-secret-file).")
@click.option("--component-secret-file", type=click.Path(dir_okay=False),
              help="File holding the component secret.")
@click.option("--host", help="XMPP server address for components [127.0.0.1].")
@click.option("--port", type=int, help="XMPP server component port [5347].")
@click.option("--set", "settings", multiple=True, metavar="NAME=VALUE",
              help="Rule option, repeatable; wins over [rules]. Options (default): "
                   + Config.options_help() + ".")
@click.option("--iq-timeout", type=float, help="Seconds to wait for the app server [10].")
@click.option("--max-attempts", type=int,
              help="Sends of one push for wait errors and timeouts [6].")
@click.option("--backoff-initial", type=float, help="First retry delay in seconds [0.5].")
@click.option("--backoff-max", type=float, help="Longest retry delay in seconds [30].")
@click.option("--connect-timeout", type=float,
              help="Seconds to wait for the first connection before warning [30].")
@click.option("--shutdown-grace", type=float,
              help="Seconds to finish decided pushes on SIGTERM [30].")
@click.option("--max-in-flight", type=int,
              help="Publishes awaiting an answer at once, over all registrations [512].")
@click.option("--max-outbox", type=int,
              help="Pending pushes above which reading waits (backpressure) [10000].")
@click.option("--store", help="Where state lives: memory: (default) or a store URL.")
@click.option("--store-retry-seconds", type=float,
              help="How long an event is retried while the store is unavailable (a Redis "
                   "Cluster failover) before it is rejected [15].")
@click.option("--socket", type=click.Path(dir_okay=False),
              help="Read events from this Unix socket (created 0600) instead of stdin.")
@click.option("--socket-group",
              help="Group that may also connect to --socket or --prosody (the socket is then "
                   "0660), e.g. prosody.")
@click.option("--allowed-uid", "allowed_uids", type=int, multiple=True,
              help="Only this uid (repeatable; our own always) may send on --socket or "
                   "--prosody.")
@click.option("--prosody", type=click.Path(dir_okay=False),
              help="Listen on this Unix socket for Prosody's mod_pushrules (pushrules_socket): "
                   "events in, publishes sent from the user's host; no component needed.")
@click.option("--metrics", metavar="HOST:PORT",
              help="Serve Prometheus /metrics and /healthz there, e.g. 127.0.0.1:9108.")
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]),
              default="warning", show_default=True)
@click.option("--log-format", type=click.Choice(["text", "json"]), default="text",
              show_default=True, help="Log lines on stderr: text, or one JSON object a line.")
def serve(config_file: Path | None, settings: tuple[str, ...], log_level: str,
          log_format: str, **flags: Any) -> None:
    """Read server events (JSON lines, stdin or --socket), send the decided pushes over XMPP
    as a component, print one outcome per push (JSON lines). Stops cleanly on SIGTERM."""
    # Until the event loop installs its handlers, SIGTERM ends the start-up as SIGINT does
    # (nothing was read yet): exit 0, not death by signal.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        _serve(config_file, settings, log_level, log_format, flags)
    except KeyboardInterrupt:
        sys.exit(0)


def _serve(config_file: Path | None, settings: tuple[str, ...], log_level: str,
           log_format: str, flags: dict[str, Any]) -> None:
    from pushrules.cli import parse_settings
    from pushrules.runtime.xmpp.logs import configure_logging
    from pushrules.runtime.xmpp.sidecar import run_sidecar

    configure_logging(log_level, log_format)  # secrets masked (secrets.py)
    flags["allowed_uids"] = flags.get("allowed_uids") or None
    try:
        file_values, rules = read_toml(config_file) if config_file else ({}, {})
        parse_settings(settings)  # validates the flags with the same messages as replay
        for pair in settings:
            name, _, value = pair.partition("=")
            rules[name.strip()] = value
        sidecar_settings = build_settings(flags, file_values, rules)
    except SettingsError as exc:
        raise click.UsageError(str(exc)) from None
    try:
        status = run_sidecar(sidecar_settings)
    except ValueError as exc:  # e.g. an unknown store URL
        raise click.ClickException(str(exc)) from None
    except Exception as exc:  # never a traceback: say what failed
        raise click.ClickException(f"{type(exc).__name__}: {exc}") from None
    sys.exit(status)
