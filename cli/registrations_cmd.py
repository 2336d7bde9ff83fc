"""`pushrules registrations USER`: a user's stored registrations and audit trail."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import click

from pushrules.runtime.store import StoreError, open_store
from pushrules.runtime.store.base import audit_dict, registration_from_row


def _when(timestamp: float | None) -> str:
    if timestamp is None:
        return "-"
    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="seconds")


@click.command()
@click.argument("user")
@click.option("--store", "store_url", required=True, envvar="PUSHRULES_STORE",
              help="Store URL: sqlite:///path/to.db, redis://host:port/db?prefix=pushrules, "
                   "redis+cluster://host:port[,host:port...]?prefix=pushrules, or memory: "
                   "(env PUSHRULES_STORE).")
@click.option("--json", "as_json", is_flag=True, help="One JSON object instead of text.")
def registrations(user: str, store_url: str, as_json: bool) -> None:
    """List USER's push registrations (state, bound session, counted errors, why and when
    disabled; publish-options masked), live sessions, and the audit trail of disables,
    evictions and expiries."""
    if "/" in user or "@" not in user:
        raise click.BadParameter(f"{user!r} is not a bare JID (user@host)", param_hint="USER")
    try:
        store = open_store(store_url, create=False)
        try:
            snapshot = store.load(user)
            trail = store.audit_trail(user)
        finally:
            store.close()
    except StoreError as exc:
        raise click.ClickException(str(exc)) from None
    regs = [registration_from_row(user, key, row).as_dict()
            for key, row in snapshot.registrations.items()]
    sessions = [{"session": sid, **row} for sid, row in snapshot.sessions.items()]
    audit = [audit_dict(entry) for entry in trail]
    if as_json:
        click.echo(json.dumps({"user": user, "registrations": regs, "sessions": sessions,
                               "audit": audit}, indent=2))
        return
    _print_text(user, regs, sessions, audit)


def _print_text(user: str, regs: list[dict[str, Any]], sessions: list[dict[str, Any]],
                audit: list[dict[str, Any]]) -> None:
    click.echo(f"{user}: {len(regs)} registration(s)")
    for reg in regs:
        line = (f"  {reg['jid']} {reg['node']}  {reg['state']}  "
                f"session {reg['session'] or '-'}  errors {reg['errors']}")
        if reg["reason"] is not None:
            line += f"  {reg['reason']} (at {_when(reg['disabled_at'])})"
        click.echo(line)
        if reg["options"]:
            click.echo("    options: " + ", ".join(f"{k}={v}" for k, v in reg["options"].items()))
    click.echo(f"sessions: {len(sessions)}")
    for session in sessions:
        binding = " ".join(session["binding"]) if session["binding"] else "-"
        click.echo(f"  {session['session']}  {session['state']}  bound to {binding}")
    click.echo(f"audit trail: {len(audit)} entr{'y' if len(audit) == 1 else 'ies'}")
    for entry in audit:
        click.echo(f"  {_when(entry['time'])}  {entry['action']}  {entry['jid']} "
                   f"{entry['node']}  {entry['reason']}")
