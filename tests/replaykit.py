"""Test helpers (imported by the tests as `replaykit`): the example traces, running the CLI, and a
driver that feeds typed contract events to either engine (the generated-table Engine or the psm
ReferenceWorld)."""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from click.testing import CliRunner

from pushrules.cli import main
from pushrules.generated.events import EVENT_CLASSES
from pushrules.model.config import Config
from pushrules.model.reference import ReferenceWorld
from pushrules.model.stanza import Stanza, parse_stanza
from pushrules.runtime.engine import Engine

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
OPTIONS_PREFIX = "# pushrules:"

BOB = "bob@example.org"
PHONE, DESKTOP, TABLET = f"{BOB}/phone", f"{BOB}/desktop", f"{BOB}/tablet"
PUSH = "push.example.net"
SECRET = "s3cret-never-shown"


def example_traces() -> list[Path]:
    return sorted(EXAMPLES.glob("*.jsonl"))


def example_options(trace: Path) -> list[str]:
    """The CLI options a trace asks for on its first line (`# pushrules: --set a=b`)."""
    first = trace.read_text(encoding="utf-8").splitlines()[0]
    return shlex.split(first[len(OPTIONS_PREFIX):]) if first.startswith(OPTIONS_PREFIX) else []


def example_config(trace: Path) -> Config:
    opts = example_options(trace)
    settings = dict(opts[i + 1].split("=", 1) for i, o in enumerate(opts) if o == "--set")
    return Config().with_settings(settings)


@dataclass
class Run:
    status: int
    out: str
    err: str


def cli(*args: str, input: str | bytes | None = None) -> Run:
    """Run `pushrules ARGS` in-process with stdout and stderr apart."""
    result = CliRunner().invoke(main, list(args), input=input, catch_exceptions=False)
    return Run(result.exit_code, result.stdout, result.stderr)


def msg(mid: str | None, body: str | None = "hi", *, to: str = BOB,
        frm: str = "alice@example.org/pc", type_: str = "chat", inner: str | None = None) -> str:
    """A message stanza's XML."""
    ident = "" if mid is None else f" id='{mid}'"
    payload = inner if inner is not None else ("" if body is None else f"<body>{body}</body>")
    return (f"<message xmlns='jabber:client'{ident} from='{frm}' to='{to}' type='{type_}'>"
            f"{payload}</message>")


def stanza(item: str | Stanza | None) -> Stanza:
    """A Stanza from an id (a chat message with a body), from XML, or as is."""
    if isinstance(item, Stanza):
        return item
    if item is None or not item.startswith("<"):
        return parse_stanza(msg(item))
    return parse_stanza(item)


PushRow = tuple[str, str, tuple[str | None, ...], bool]
"""A push as tests compare it: (node, rule, stanza ids, important)."""


class Driver:
    """Feeds contract events for bob to one world; each call returns the pushes as PushRows."""

    def __init__(self, world: Any) -> None:
        self.world = world
        self.pushes: list[Any] = []

    def send(self, name: str, **fields: Any) -> list[PushRow]:
        pushes = self.world.handle(EVENT_CLASSES[name](**fields))
        self.pushes.extend(pushes)
        return [(p.node, p.rule, p.stanzas, p.important) for p in pushes]

    def bind(self, s: str = PHONE) -> list[PushRow]:
        return self.send("session-bind", session=s)

    def enable(self, s: str = PHONE, node: str = "node-phone", jid: str = PUSH,
               secret: str | None = SECRET) -> list[PushRow]:
        return self.send("push-enable", session=s, jid=jid, node=node, secret=secret)

    def disable(self, s: str = PHONE, node: str | None = None, jid: str = PUSH) -> list[PushRow]:
        return self.send("push-disable", session=s, jid=jid, node=node)

    def ack_delayed(self, s: str = PHONE, *queue: Any) -> list[PushRow]:
        return self.send("smacks-ack-delayed", session=s, queue=tuple(map(stanza, queue)))

    def acked(self, s: str = PHONE) -> list[PushRow]:
        return self.send("smacks-ack-received", session=s)

    def hibernate(self, s: str = PHONE, *queue: Any) -> list[PushRow]:
        return self.send("smacks-hibernation-start", session=s, queue=tuple(map(stanza, queue)))

    def resume(self, s: str = PHONE) -> list[PushRow]:
        return self.send("smacks-hibernation-end", session=s)

    def queued(self, s: str, item: Any) -> list[PushRow]:
        return self.send("stanza-queued", session=s, stanza=stanza(item))

    def destroyed(self, s: str = PHONE) -> list[PushRow]:
        return self.send("session-destroyed", session=s)

    def archive(self, item: Any, user: str = BOB) -> list[PushRow]:
        return self.send("archive-message-added", for_user=user, stanza=stanza(item))

    def offline(self, item: Any, user: str = BOB) -> list[PushRow]:
        return self.send("message/offline/handle", user=user, stanza=stanza(item))

    def result(self, node: str, ok: bool, error_type: str | None = None, jid: str = PUSH,
               user: str = BOB) -> list[PushRow]:
        return self.send("push-result", user=user, jid=jid, node=node, ok=ok,
                         error_type=error_type)

    # --- state ---------------------------------------------------------------------------
    def reg(self, node: str, jid: str = PUSH, user: str = BOB) -> Any:
        reg = self.world.registration((user, jid, node))
        assert reg is not None, f"no registration {jid} {node}"
        return reg

    def state(self, s: str) -> str:
        record = self.world.session(s)
        return "offline" if record is None else record.state

    def into(self, s: str, state: str) -> Driver:
        """Take a live session from active into `state` with empty queues (no push)."""
        if state == "ack_delayed":
            self.ack_delayed(s)
        elif state == "hibernated":
            self.hibernate(s)
        assert self.state(s) == state
        return self

    def online(self, *sessions: str, node: str | None = None) -> Driver:
        """Bind each session and, when node is given, enable node-<resource> for each."""
        for s in sessions:
            self.bind(s)
            if node is not None:
                self.enable(s, f"node-{s.rsplit('/', 1)[1]}")
        return self


WORLDS = {"engine": Engine, "reference": ReferenceWorld}


def local_redis() -> Any:
    """A LocalRedis (a redis-server of the test's own) to use as a context manager; skipped
    when redis-server is missing, except in CI, where the Redis tests never skip."""
    import os

    import pytest

    from pushrules.runtime.store.local_redis import LocalRedis, RedisServerMissing

    try:
        return LocalRedis()
    except RedisServerMissing as exc:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"{exc}: the Redis tests never skip in CI")
        pytest.skip(str(exc))
