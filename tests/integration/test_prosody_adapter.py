"""pushrules in place of mod_cloud_notify, end to end: a real Prosody with mod_smacks, mod_mam,
mod_offline, mod_carbons, mod_csi_simple and mod_pushrules; `pushrules serve --prosody` as a
process; real slixmpp clients (XEP-0198, resumption) through relays that freeze or cut links; a
second account sending real messages; an app server recording every publish.

Every scenario runs at once, each on its own accounts, in one event loop (the hibernation
timeout dominates the run); each test then checks one scenario's record. The pushes expected are
those of the scenario's trace in examples/ (the intended rules), for the stanzas sent live.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from harness import in_ci
from prosody_adapter import (
    APP,
    FREEZE,
    KILL,
    MAIN,
    RESTART,
    SHADOW,
    SHORT_ACK_DELAY,
    TINY,
    V2,
    AdapterProsody,
    AppServer,
    Device,
    ModuleRecorder,
    Sender,
    Serve,
    until,
)
from replaykit import example_config
from scenarios import LiveBase, Record, Scenario, Scenarios, need_prosody, record, run_scenario

from pushrules.runtime import Engine
from pushrules.runtime.trace import parse_event

pytestmark = pytest.mark.integration

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
HIBERNATION = 20.0      # smacks_hibernation_time in the adapter's Prosody
SETTLE = 2.5            # quiet time after a scenario's last step: nothing more may arrive
ACK_SETTLE = 0.6        # let the client's <a/> reach Prosody before a link is frozen or cut
WITNESS = "witness@localhost"
MAIN_ARGS = ("--set", "max_errors=2", "--max-attempts", "1", "--iq-timeout", "5")


class Live(LiveBase):
    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.sockets = {MAIN: root / "main.sock", FREEZE: root / "main.sock",
                        RESTART: root / "restart.sock",
                        SHADOW: root / "main.sock", TINY: root / "tiny.sock",
                        KILL: root / "kill.sock", V2: root / "v2.sock"}
        self.prosody = AdapterProsody(root, self.sockets, shadow_hosts=[SHADOW], host_options={
            FREEZE: [SHORT_ACK_DELAY], SHADOW: [SHORT_ACK_DELAY],
            TINY: ["pushrules_buffer_size = 3"],
            V2: ['modules_enabled = { "pep" }']})  # version 2: the default
        self.main: Serve | None = None
        self.app: AppServer | None = None
        self.serves: list[Serve] = []

    def account(self, user: str) -> str:
        self.prosody.add_account(user)
        return user

    async def serve(self, socket: Path, store: str, name: str, *args: str) -> Serve:
        serve = await Serve(socket, store, self.root / f"{name}.log", args).start()
        self.serves.append(serve)
        return serve

    def prosody_log(self) -> str:
        return self.prosody.log.read_text(errors="replace")

    def outcomes(self, user: str) -> list[dict]:
        return [o for s in self.serves for o in s.for_user(user)]

    async def decided(self, user: str, mid: str, timeout: float = 30.0) -> None:
        """Until a push of ``mid`` to ``user`` was decided and answered (a wait for that push,
        not for any push: an unexpected one must not stand in for it)."""
        await until(lambda: any(mid in o["stanzas"] for o in self.outcomes(user)), timeout,
                    f"a push of {mid} to {user}")


SCENARIOS = Scenarios()
scenario = SCENARIOS.add


async def phone(live: Live, user: str, node: str | None = None, resource: str = "phone") -> Device:
    device = await live.device(f"{user}/{resource}")
    if node:
        await device.enable(node, f"secret-{node}")
    await asyncio.sleep(ACK_SETTLE)
    return device


async def sender(live: Live, user: str) -> Sender:
    client = await live.device(f"{user}/pc", Sender)
    assert isinstance(client, Sender)
    return client


async def hibernate(device: Device) -> None:
    await device.all_acked()
    device.cut()
    await asyncio.sleep(ACK_SETTLE)  # Prosody sees the close and starts hibernating


# --- S1-S10 ---------------------------------------------------------------------------------

@scenario("s1-active-healthy", "s1@localhost")
async def s1(live: Live, rec: Record) -> None:
    bob = await phone(live, "s1@localhost", "node-s1")
    rec.marks["disco"] = await bob.disco_features()
    alice = await sender(live, "alice-s1@localhost")
    alice.say("s1@localhost", "m1")
    await until(lambda: "m1" in bob.messages, 10, "bob receives m1")


@scenario("s2-frozen-link", "s2@freeze.localhost")
async def s2(live: Live, rec: Record) -> None:
    user = "s2@freeze.localhost"  # the host with smacks' 3 s ack delay
    bob = await phone(live, user, "node-s2")
    alice = await sender(live, "alice-s2@freeze.localhost")
    await bob.all_acked()
    bob.freeze()
    alice.say(user, "m1")
    await live.decided(user, "m1")  # the delayed ack (10 s on this host)
    alice.say(user, "m2")
    await live.decided(user, "m2")
    await live.pushes("node-s2", 2)
    bob.cut()


async def three_while_hibernated(live: Live, user: str, node: str) -> tuple[Device, Sender]:
    bob = await phone(live, user, node)
    alice = await sender(live, f"alice-{user}")
    await hibernate(bob)
    for mid in ("m1", "m2", "m3"):
        alice.say(user, mid)
        await asyncio.sleep(0.3)
    await live.pushes(node, 3)
    return bob, alice


@scenario("s3-hibernated-three", "s3@localhost")
async def s3(live: Live, rec: Record) -> None:
    await three_while_hibernated(live, "s3@localhost", "node-s3")


@scenario("s4-resumed", "s4@localhost")
async def s4(live: Live, rec: Record) -> None:
    bob, alice = await three_while_hibernated(live, "s4@localhost", "node-s4")
    await bob.resume()
    await until(lambda: {"m1", "m2", "m3"} <= set(bob.messages), 10, "the queue re-sent")
    alice.say("s4@localhost", "m4")
    await until(lambda: "m4" in bob.messages, 10, "bob receives m4")


@scenario("s5-hibernation-timeout", "s5@localhost")
async def s5(live: Live, rec: Record) -> None:
    bob = await phone(live, "s5@localhost", "node-s5")
    alice = await sender(live, "alice-s5@localhost")
    await hibernate(bob)
    await asyncio.sleep(HIBERNATION + 3)
    alice.say("s5@localhost", "m1")
    await live.pushes("node-s5", 1)


@scenario("s5b-queued-then-timeout", "s5b@localhost")
async def s5b(live: Live, rec: Record) -> None:
    bob = await phone(live, "s5b@localhost", "node-s5b")
    alice = await sender(live, "alice-s5b@localhost")
    await hibernate(bob)
    alice.say("s5b@localhost", "m1")
    await live.pushes("node-s5b", 1)
    await asyncio.sleep(HIBERNATION + 3)  # smacks moves the unacked m1 to offline storage
    alice.say("s5b@localhost", "m2")
    await live.pushes("node-s5b", 2)


@scenario("s6-phone-hibernated-desktop-active", "s6@localhost")
async def s6(live: Live, rec: Record) -> None:
    user = "s6@localhost"
    bob = await phone(live, user, "node-s6")
    desktop = await phone(live, user, resource="desktop")
    alice = await sender(live, "alice-s6@localhost")
    await hibernate(bob)
    alice.say(user, "m1")
    alice.say(f"{user}/phone", "m2")
    alice.say(f"{user}/desktop", "m3")
    await until(lambda: {"m1", "m3"} <= set(desktop.messages), 10, "the desktop receives")
    await live.pushes("node-s6", 2)


@scenario("s7-phone-offline-desktop-active", "s7@localhost")
async def s7(live: Live, rec: Record) -> None:
    user = "s7@localhost"
    bob = await phone(live, user, "node-s7")
    await bob.close()
    desktop = await phone(live, user, resource="desktop")
    alice = await sender(live, "alice-s7@localhost")
    alice.say(user, "m1")
    alice.say(f"{user}/phone", "m2")
    await until(lambda: {"m1", "m2"} <= set(desktop.messages), 10, "the desktop receives")
    await live.pushes("node-s7", 2)


S8_LIVE = ("cs1", "hl1", "gc1", "gc2", "c1", "om1", "om2", "jp1", "p1")  # not the forged carbons


@scenario("s8-importance", "s8@localhost")
async def s8(live: Live, rec: Record) -> None:
    user = "s8@localhost"
    bob = await phone(live, user, "node-s8")
    alice = await sender(live, "alice-s8@localhost")
    await hibernate(bob)
    for line in _trace("s8-importance"):
        if line.get("event") == "stanza-queued" and _stanza_id(line["stanza"]) in S8_LIVE:
            alice.raw(_readdress(line["stanza"], user))
            await asyncio.sleep(0.2)
    await live.pushes("node-s8", len(S8_LIVE))


@scenario("s9-disable", "s9@localhost")
async def s9(live: Live, rec: Record) -> None:
    bob = await phone(live, "s9@localhost", "node-s9")
    await bob.disable("node-s9")
    alice = await sender(live, "alice-s9@localhost")
    await hibernate(bob)
    alice.say("s9@localhost", "m1")
    await asyncio.sleep(1.0)


async def s10(live: Live, user: str, node: str, answer: str) -> None:
    """S10: the app server answers ``answer`` (twice for counted errors, 4 times for wait)."""
    assert live.app is not None
    live.app.answer(node, *([answer] * (4 if answer == "wait" else 2)))
    bob = await phone(live, user, node)
    alice = await sender(live, f"alice-{user}")
    await hibernate(bob)
    first = 4 if answer == "wait" else 2
    for i in range(1, 7):
        alice.say(user, f"m{i}")
        if i <= first:
            await live.pushes(node, i)
        await asyncio.sleep(0.4)
    await live.pushes(node, first + (2 if answer == "wait" else 0))
    await bob.resume()
    await bob.enable(node, f"secret-{node}")
    await asyncio.sleep(ACK_SETTLE)
    await hibernate(bob)
    alice.say(user, "m7")
    await live.pushes(node, first + (3 if answer == "wait" else 1))


@scenario("s10-wait", "s10w@localhost")
async def s10_wait(live: Live, rec: Record) -> None:
    await s10(live, "s10w@localhost", "node-s10w", "wait")


@scenario("s10-cancel", "s10c@localhost")
async def s10_cancel(live: Live, rec: Record) -> None:
    await s10(live, "s10c@localhost", "node-s10c", "cancel")


@scenario("s10-notype", "s10n@localhost")
async def s10_notype(live: Live, rec: Record) -> None:
    await s10(live, "s10n@localhost", "node-s10n", "notype")


# --- beyond S1-S10 --------------------------------------------------------------------------

@scenario("app-server-silent", "silent@localhost")
async def app_server_silent(live: Live, rec: Record) -> None:
    """The app server never answers the first publish: the module's IQ timeout (the sidecar's
    --iq-timeout) comes back as that push's answer; the next push is answered."""
    user, node = "silent@localhost", "node-silent"
    assert live.app is not None
    live.app.answer(node, "none")
    bob = await phone(live, user, node)
    alice = await sender(live, "alice-silent@localhost")
    await hibernate(bob)
    alice.say(user, "m1")
    await until(lambda: len(live.outcomes(user)) == 1, 20, "the first push's outcome")
    alice.say(user, "m2")
    await until(lambda: len(live.outcomes(user)) == 2, 20, "the second push's outcome")


@scenario("two-devices", "two@localhost")
async def two_devices(live: Live, rec: Record) -> None:
    user = "two@localhost"
    tablet = await phone(live, user, "node-two-tablet", resource="tablet")
    bob = await phone(live, user, "node-two-phone")
    alice = await sender(live, "alice-two@localhost")
    await hibernate(bob)
    alice.say(user, "m1")  # the tablet is active: only the phone's registration
    await live.pushes("node-two-phone", 1)
    await hibernate(tablet)
    alice.say(user, "m2")  # both hibernate: one push each
    await live.pushes("node-two-phone", 2)
    await live.pushes("node-two-tablet", 1)


@scenario("enable-errors", "errors@localhost")
async def enable_errors(live: Live, rec: Record) -> None:
    bob = await live.device("errors@localhost/phone")
    rec.marks["missing jid"] = await bob.push_error("enable", None, "n1")
    rec.marks["invalid jid"] = await bob.push_error("enable", "a@b@c", "n1")
    rec.marks["missing node"] = await bob.push_error("enable", APP, None)
    rec.marks["own jid"] = await bob.push_error("enable", str(bob.boundjid), "n1")
    rec.marks["disable missing jid"] = await bob.push_error("disable", None, None)
    # Rejected requests registered nothing: a hibernated session pushes nothing.
    alice = await sender(live, "alice-errors@localhost")
    await hibernate(bob)
    alice.say("errors@localhost", "m1")
    await asyncio.sleep(1.0)


@scenario("sidecar-restart", "restart@restart.localhost", "carol@restart.localhost")
async def sidecar_restart(live: Live, rec: Record) -> None:
    """The sidecar of restart.localhost (SQLite) is stopped mid-run: events raised meanwhile
    wait in the module and are decided when it is back, with the registration and dedup of the
    first run; an <enable/> while it is down is an error."""
    user, node = "restart@restart.localhost", "node-restart"
    store = f"sqlite:///{live.root}/restart.db"
    first = await live.serve(live.sockets[RESTART], store, "restart-1")
    bob = await phone(live, user, node)
    carol = await live.device("carol@restart.localhost/phone")
    alice = await sender(live, "alice@restart.localhost")
    await hibernate(bob)
    alice.say(user, "m1")
    await live.pushes(node, 1)
    rec.marks["first exit"] = await first.stop()
    await asyncio.sleep(0.5)  # the module notices
    rec.marks["enable while down"] = await carol.push_error("enable", APP, "node-carol")
    alice.say(user, "m2")
    alice.say(user, "m3")
    await asyncio.sleep(1.0)
    rec.marks["while down"] = len(live.received(node))
    await live.serve(live.sockets[RESTART], store, "restart-2")
    await live.pushes(node, 3)
    # The hibernation times out: smacks hands the unacked m1-m3 to offline storage (pushed
    # already, m1 by the first run); then m4 is archived (b/archive: no live session) and goes
    # to offline storage (deduplicated).
    await asyncio.sleep(HIBERNATION)
    alice.say(user, "m4")
    await live.pushes(node, 4)


@scenario("sidecar-killed", "killed@kill.localhost")
async def sidecar_killed(live: Live, rec: Record) -> None:
    """The sidecar of kill.localhost (SQLite) is SIGKILLed while a push it decided and sent is
    unanswered: the next run sends it again from the outbox (it waits for the module to come
    back), and the events raised while it was dead arrive from the module's buffer."""
    user, node = "killed@kill.localhost", "node-killed"
    store = f"sqlite:///{live.root}/killed.db"
    assert live.app is not None
    live.app.answer(node, "none")  # the first publish is never answered
    first = await live.serve(live.sockets[KILL], store, "killed-1", "--iq-timeout", "60")
    bob = await phone(live, user, node)
    alice = await sender(live, "alice@kill.localhost")
    await hibernate(bob)
    alice.say(user, "m1")
    await live.pushes(node, 1)
    await asyncio.sleep(0.5)  # the event's ack reaches the module
    rec.marks["first exit"] = await first.kill()
    rec.marks["first outcomes"] = list(first.outcomes)
    alice.say(user, "m2")
    await asyncio.sleep(1.0)
    rec.marks["while dead"] = len(live.received(node))
    await live.serve(live.sockets[KILL], store, "killed-2")
    await live.pushes(node, 3)


BOOKMARK = """<iq xmlns='jabber:client' type='set' id='bm1'>
<pubsub xmlns='http://jabber.org/protocol/pubsub'><publish node='urn:xmpp:bookmarks:1'>
<item id='room@muc.v2.localhost'><conference xmlns='urn:xmpp:bookmarks:1' autojoin='true'>
<nick>bob</nick><extensions><notify xmlns='urn:xmpp:notification-settings:1'><on-mention/>
</notify></extensions></conference></item></publish></pubsub></iq>"""


@scenario("contract-v2", "v2@v2.localhost")
async def contract_v2(live: Live, rec: Record) -> None:
    """Version 2, the module's default: it raises csi-state, message/bare/groupchat and
    chat-settings (from a XEP-0402 bookmark with XEP-0492's <notify/>), every event with `at`.
    Its peer is a recorder, to see the events themselves (test_prosody_v2.py runs them through
    the real sidecar)."""
    user = "v2@v2.localhost"
    recorder = await ModuleRecorder(live.sockets[V2]).start()
    try:
        await until(lambda: recorder.hello is not None, 10, "the module's hello")
        bob = await phone(live, user, "node-v2")
        bob.send_raw("<inactive xmlns='urn:xmpp:csi:0'/>")
        bob.send_raw("<active xmlns='urn:xmpp:csi:0'/>")
        bob.send_raw(BOOKMARK)
        alice = await sender(live, "alice@v2.localhost")
        alice.say(user, "g1", kind="groupchat")
        await until(lambda: recorder.named("message/bare/groupchat")
                    and len(recorder.named("csi-state")) == 2
                    and recorder.named("chat-settings"), 15, "the v2 events")
        rec.marks["hello"] = recorder.hello
        rec.marks["events"] = list(recorder.events)
    finally:
        await recorder.stop()


@scenario("buffer-overflow", "tiny@tiny.localhost")
async def buffer_overflow(live: Live, rec: Record) -> None:
    """No sidecar for tiny.localhost yet, and a buffer of 3 events: what overflows is dropped
    and counted in Prosody's log; the kept events and everything after arrive once it listens."""
    user, node = "tiny@tiny.localhost", "node-tiny"
    bob = await live.device(f"{user}/phone")
    rec.marks["enable while unreachable"] = await bob.push_error("enable", APP, node)
    alice = await sender(live, "alice-tiny@tiny.localhost")
    for i in range(5):
        alice.say(user, f"early{i}")
    await until(lambda: "early4" in bob.messages, 10, "bob receives the early messages")
    await until(lambda: "event(s) dropped so far" in live.prosody_log(), 10, "a drop count")
    await live.serve(live.sockets[TINY], "memory:", "tiny")
    await until(lambda: "dropped meanwhile" in live.prosody_log(), 10, "the reconnection")
    await bob.enable(node, f"secret-{node}")  # its session-bind was among the 3 kept events
    await hibernate(bob)
    alice.say(user, "m1")
    await live.pushes(node, 1)
    rec.marks["log"] = live.prosody_log()


@scenario("shadow", "shadow@shadow.localhost")
async def shadow(live: Live, rec: Record) -> None:
    """mod_cloud_notify pushes; pushrules decides on the same events and logs differences (S2:
    cloud_notify pushes m1 twice and m2 never on its own; pushrules m1 and m2 once)."""
    user, node = "shadow@shadow.localhost", "node-shadow"
    bob = await phone(live, user, node)
    rec.marks["disco"] = await bob.disco_features()
    alice = await sender(live, "alice@shadow.localhost")
    await bob.all_acked()
    bob.freeze()
    alice.say(user, "m1")
    await live.decided(user, "m1")  # the delayed ack (10 s on this host): both sides push
    alice.say(user, "m2")
    await live.decided(user, "m2")  # queued while ack-delayed: pushrules pushes it
    bob.cut()
    await live.pushes(node, 2)
    await asyncio.sleep(6)  # the shadow window (4 s) ends for every stanza


# --- running them all -----------------------------------------------------------------------

def _trace(name: str) -> list[dict]:
    lines = (EXAMPLES / f"{name}.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines if line.strip() and not line.startswith("#")]


def in_prosody_order(events: list[dict]) -> list[dict]:
    """The trace's events in the order Prosody 0.12 raises them: mod_mam archives a message
    (archive-message-added) before mod_message hands it to offline storage."""
    out = list(events)
    for i in range(len(out) - 1):
        first, second = out[i], out[i + 1]
        if (first["event"] == "message/offline/handle"
                and second["event"] == "archive-message-added"
                and _stanza_id(first["stanza"]) == _stanza_id(second["stanza"])):
            out[i], out[i + 1] = second, first
    return out


def expected(name: str) -> list[tuple[str, list[str], bool]]:
    """The pushes the intended rules give for the example trace of ``name``, with its events in
    the order this server raises them (the same pushes as the .expected file, where the order
    changes nothing but which of two rules pushes a message first)."""
    engine = Engine(example_config(EXAMPLES / f"{name}.jsonl"))
    pushes = []
    for number, data in enumerate(in_prosody_order(_trace(name)), 1):
        pushes += engine.handle(parse_event(data, number))
    return [(p.rule, list(p.stanzas), p.important) for p in pushes]


def test_expected_pushes_are_the_examples_where_the_order_is_the_same():
    """The replayed expectation is the .expected file itself for traces Prosody's order does
    not change (so the reordering is the only difference)."""
    for name in ("s2-frozen-link", "s6-phone-hibernated-desktop-active", "s8-importance",
                 "s10-cancel"):
        lines = (EXAMPLES / f"{name}.expected").read_text().splitlines()
        pushes = [json.loads(line) for line in lines if line.strip() and line[0] != "#"]
        assert expected(name) == [(p["rule"], p["stanzas"], p["important"]) for p in pushes]


def _stanza_id(xml: str) -> str:
    return xml.split(" id='", 1)[1].split("'", 1)[0]


def _readdress(xml: str, user: str) -> str:
    """The example's stanza sent by alice to ``user`` (the server sets from)."""
    head, rest = xml.split(">", 1)
    head = head.replace("bob@example.org", user)
    head = " ".join(p for p in head.split(" ") if not p.startswith("from="))
    return f"{head}>{rest}"


async def _run_one(live: Live, name: str, rec: Record, fn: Scenario) -> None:
    await run_scenario(fn, live, rec, 120, SETTLE)
    # What happens later (a hibernation of this scenario timing out while others still run)
    # is not part of it.
    assert live.app is not None
    rec.outcomes = [o for user in rec.users for o in live.outcomes(user)]
    rec.received = [r for r in live.app.received if _ours(rec, r.publish.node)]


async def _run_all(root: Path) -> dict[str, Record]:
    live = Live(root)
    records = {name: Record(users) for name, (users, _) in SCENARIOS.items()}
    for rec in records.values():
        for user in rec.users:
            live.account(user)
    for name in SCENARIOS:
        live.account(f"alice-{SCENARIOS[name][0][0]}")
    for user in ("alice@restart.localhost", "alice@shadow.localhost", "alice@kill.localhost",
                 "alice@v2.localhost", WITNESS):
        live.account(user)
    live.prosody.start()
    try:
        live.app = await AppServer(APP, live.prosody.port).start()
        live.witness = await live.device(f"{WITNESS}/w")
        live.main = await live.serve(live.sockets[MAIN], f"sqlite:///{root}/main.db", "main",
                                     *MAIN_ARGS)
        await asyncio.gather(*(_run_one(live, name, records[name], fn)
                               for name, (_, fn) in SCENARIOS.items()))
    finally:
        for client in live.clients:
            await client.stop()
        for serve in live.serves:
            await serve.stop()
        if live.app is not None:
            await live.app.stop()
        live.prosody.stop()
    for rec in records.values():
        rec.marks.setdefault("logs", "\n".join(s.stderr() for s in live.serves))
    return records


def _ours(rec: Record, node: str) -> bool:
    """A scenario's nodes are node-<its first user's local part>[-<device>]."""
    mine = f"node-{rec.users[0].split('@')[0]}"
    return node == mine or node.startswith(f"{mine}-")


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Record]:
    need_prosody()
    if not Path("/usr/lib/prosody/modules/mod_cloud_notify").exists() and in_ci():
        pytest.fail("mod_cloud_notify is not installed (apt-get install prosody-modules)")
    root = tmp_path_factory.mktemp("adapter")
    return asyncio.run(_run_all(root))


def decided(rec: Record) -> list[tuple[str, list[str], bool]]:
    return [(o["rule"], o["stanzas"], o["important"]) for o in rec.outcomes]


def assert_published_as_decided(rec: Record, host: str | None = None) -> None:
    """Every decided push reached the app server: from the user's host, to its node, with its
    secret, important exactly when the push is."""
    host = host or rec.users[0].partition("@")[2]
    assert len(rec.received) == len(rec.outcomes)
    for outcome, got in zip(rec.outcomes, rec.received, strict=True):
        assert got.sender == host
        assert got.publish.node == outcome["node"]
        assert got.publish.options == {"secret": f"secret-{outcome['node']}"}
        assert ("last-message-body" in got.publish.summary) == outcome["important"]
        assert got.publish.summary["message-count"] == str(len(outcome["stanzas"]))


# --- the checks -----------------------------------------------------------------------------

@pytest.mark.parametrize("name", [
    "s1-active-healthy", "s2-frozen-link", "s3-hibernated-three", "s4-resumed",
    "s5-hibernation-timeout", "s5b-queued-then-timeout", "s6-phone-hibernated-desktop-active",
    "s7-phone-offline-desktop-active", "s9-disable",
])
def test_scenario_pushes_what_the_intended_rules_say(live, name):
    rec = record(live, name)
    assert decided(rec) == expected(name)
    assert all(o["status"] == "delivered" for o in rec.outcomes)
    assert_published_as_decided(rec)


def test_s1_account_advertises_push(live):
    assert "urn:xmpp:push:0" in record(live, "s1-active-healthy").marks["disco"]


def test_s8_importance_of_each_stanza(live):
    rec = record(live, "s8-importance")
    # Contract v2 rule e: Prosody's MAM archives the call proposal jp1 before it is queued to
    # the hibernated phone, so it rings there at once (e/call, urgent) and dedup keeps the
    # queued copy from being pushed again; replaying the example (queued only) gives a/queued.
    want = [("e/call", *p[1:]) if p[1] == ["jp1"] else p
            for p in expected("s8-importance") if p[1][0] in S8_LIVE]
    assert decided(rec) == want
    assert_published_as_decided(rec)


@pytest.mark.parametrize("name,statuses", [
    ("s10-wait", ["gave-up"] * 4 + ["delivered"] * 3),
    ("s10-cancel", ["error", "error", "delivered"]),
    ("s10-notype", ["error", "error", "delivered"]),
])
def test_s10_app_server_errors(live, name, statuses):
    rec = record(live, name)
    assert decided(rec) == expected(name)
    assert [o["status"] for o in rec.outcomes] == statuses
    assert_published_as_decided(rec)


def test_unanswered_publish_times_out_in_the_module(live):
    rec = record(live, "app-server-silent")
    assert [(o["stanzas"], o["status"], o["answer"]) for o in rec.outcomes] == [
        (["m1"], "error", "timeout"), (["m2"], "delivered", "result")]
    assert_published_as_decided(rec)


def test_two_devices_each_pushed_for_its_own_session(live):
    rec = record(live, "two-devices")
    by_node = sorted(((o["node"], o["stanzas"]) for o in rec.outcomes), key=repr)
    assert by_node == [("node-two-phone", ["m1"]), ("node-two-phone", ["m2"]),
                       ("node-two-tablet", ["m2"])], rec.outcomes
    assert {o["rule"] for o in rec.outcomes} == {"a/queued"}


def test_enable_and_disable_errors(live):
    rec = record(live, "enable-errors")
    for what in ("missing jid", "invalid jid", "missing node", "own jid", "disable missing jid"):
        assert rec.marks[what] == ("modify", "bad-request"), what
    assert rec.outcomes == []
    assert rec.received == []


def test_sidecar_restart_and_buffered_events(live):
    rec = record(live, "sidecar-restart")
    assert rec.marks["first exit"] == 0
    assert rec.marks["while down"] == 1
    error_type, _ = rec.marks["enable while down"]
    assert error_type == "wait"
    assert decided(rec) == [("a/queued", ["m1"], True), ("a/queued", ["m2"], True),
                            ("a/queued", ["m3"], True), ("b/archive", ["m4"], True)]
    rec.outcomes = [o for o in rec.outcomes if o["user"].startswith("restart@")]
    assert_published_as_decided(rec, host=RESTART)


def test_sigkilled_sidecar_loses_no_decided_push(live):
    rec = record(live, "sidecar-killed")
    assert rec.marks["first exit"] == -9
    assert rec.marks["first outcomes"] == []  # killed before m1 was answered
    assert rec.marks["while dead"] == 1
    # m1 sent again by the second run (from the outbox), then m2 (from the module's buffer).
    # (Under load the client may ack its enable result late: one more push, of that IQ, is
    # then decided at the hibernation and waits behind m1 in the outbox too.)
    pushed = [p for p in decided(rec) if p[0] == "a/queued"]
    assert pushed[-2:] == [("a/queued", ["m1"], True), ("a/queued", ["m2"], True)]
    assert len(rec.received) == len(rec.outcomes) + 1
    assert {o["status"] for o in rec.outcomes} == {"delivered"}
    logs = str(rec.marks["logs"])
    resent = len(rec.outcomes) - 1  # all but m2 were decided by the killed run
    assert f"sending again {resent} decided push(es) an earlier run left in the outbox" in logs
    rec.received = rec.received[1:]  # the first, unanswered send belongs to the killed run
    assert_published_as_decided(rec, host=KILL)


def test_contract_v2_events_from_prosody(live):
    rec = record(live, "contract-v2")
    assert rec.marks["hello"]["version"] == 2
    events = rec.marks["events"]
    assert [e for e in events if e["event"] == "csi-state"] == [
        {"event": "csi-state", "session": "v2@v2.localhost/phone", "state": s, "at": e["at"]}
        for s, e in zip(("inactive", "active"),
                        [e for e in events if e["event"] == "csi-state"], strict=True)]
    [groupchat] = [e for e in events if e["event"] == "message/bare/groupchat"]
    assert groupchat["user"] == "v2@v2.localhost"
    assert "id='g1'" in groupchat["stanza"] and "type='groupchat'" in groupchat["stanza"]
    [setting] = [e for e in events if e["event"] == "chat-settings"]
    assert {k: v for k, v in setting.items() if k != "at"} == {
        "event": "chat-settings", "user": "v2@v2.localhost", "chat": "room@muc.v2.localhost",
        "notify": "on-mention", "nick": "bob"}
    times = [e["at"] for e in events]
    assert all(isinstance(t, int | float) for t in times) and times == sorted(times)


def test_events_beyond_the_buffer_are_dropped_and_counted_then_the_rest_arrives(live):
    rec = record(live, "buffer-overflow")
    assert rec.marks["enable while unreachable"][0] == "wait"
    log = str(rec.marks["log"])
    assert "pushrules sidecar unreachable and buffer full (3 events): 1 event(s) dropped" in log
    dropped = int(log.split(" dropped meanwhile")[0].rsplit(", ", 1)[1])
    assert dropped >= 5  # at least the early messages' stanza-queued events
    assert "3 buffered event(s) to send" in log
    assert decided(rec) == [("a/queued", ["m1"], True)]
    assert_published_as_decided(rec, host=TINY)


def test_shadow_mode_logs_where_decisions_differ(live):
    rec = record(live, "shadow")
    assert "urn:xmpp:push:0" in rec.marks["disco"]  # mod_cloud_notify's
    logs = str(rec.marks["logs"])
    # pushrules sent nothing: every publish is mod_cloud_notify's, from the user's host.
    assert [o["answer"] for o in rec.outcomes] == ["shadow: not sent"] * 2
    assert {r.sender for r in rec.received} == {SHADOW}
    assert "m1 for shadow@shadow.localhost to app.localhost node node-shadow: mod_cloud_notify " \
        "pushed it 2 times; pushrules once" in logs
    assert "m2 for shadow@shadow.localhost to app.localhost node node-shadow: pushrules pushes " \
        "it (a/queued, important); mod_cloud_notify did not" in logs
