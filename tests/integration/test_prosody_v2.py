"""Contract version 2 end to end: a real Prosody with mod_pushrules (version 2 is its default),
`pushrules serve --prosody` with the real engine over a memory store and over a SQLite store,
real slixmpp clients (XEP-0198) through relays that cut links, a group-chat service and the
recording app server as real components.

- group chats: a groupchat message to a hibernated or offline user's bare JID (or to a resource
  that is gone) pushes d/groupchat; a XEP-0492 `never` in the user's XEP-0402 bookmark stops
  it, `on-mention` lets only a XEP-0372 mention or a XEP-0461 reply through, and the room's
  echo of the user's own message (from room/nick) is never pushed;
- calls: a XEP-0353 propose rings the hibernated phone and the active but CSI-inactive desktop
  (urgent: the app server sees the high priority), not a CSI-active desktop; the retract
  reaches exactly the registrations that rang;
- remote disable: the app server's XEP-0357 section 8 notice disables that registration (in
  the XEP's form and in XEP-0060's), a forged one from someone else changes nothing;
- `pushrules_contract_version = 1`: none of the version-2 events, no times.

Every scenario runs at once on each store's VirtualHost, in one event loop; the tests then check
the records. Waits are for what the scenario needs to have happened (a push that arrives, an
answer), never fixed sleeps standing for it: a push that must not happen is checked after a
later event of the same module connection was applied (the sidecar applies them in order).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from prosody_adapter import (
    APP,
    AdapterProsody,
    Device,
    ModuleRecorder,
    RevokingAppServer,
    Room,
    Sender,
    Serve,
    until,
)
from scenarios import LiveBase, Record, Scenario, Scenarios, need_prosody, record, run_scenario
from slixmpp.xmlstream import ET

pytestmark = pytest.mark.integration

MEMORY, SQLITE, V1 = "v2m.localhost", "v2s.localhost", "v1.localhost"
WITNESS = f"witness@{MEMORY}"
STORES = {MEMORY: "memory", SQLITE: "sqlite"}
SETTLE = 2.0            # after a scenario's last push: nothing more may arrive
CUT_SETTLE = 0.6        # Prosody reads the cut link and hibernates the session
WAIT = 45.0             # for a push or an answer, on a loaded 2-core machine
# (smacks' ack delay is AdapterProsody's 120 s: a client's ack that comes late on a loaded
# machine must not turn into an ack-delayed push)
V2_HOST_OPTIONS = ['modules_enabled = { "pep" }']
JMI = "urn:xmpp:jingle-message:0"


def muc(host: str) -> str:
    return f"muc.{host}"


class Live(LiveBase):
    PUSH_WAIT = WAIT

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.sockets = {host: root / f"{tag}.sock" for host, tag in
                        ((MEMORY, "memory"), (SQLITE, "sqlite"), (V1, "v1"))}
        self.prosody = AdapterProsody(
            root, self.sockets, components=[muc(MEMORY), muc(SQLITE)],
            host_options={MEMORY: V2_HOST_OPTIONS, SQLITE: V2_HOST_OPTIONS,
                          V1: ["pushrules_contract_version = 1", 'modules_enabled = { "pep" }']})
        self.app: RevokingAppServer | None = None
        self.rooms: dict[str, Room] = {}
        self.serves: dict[str, Serve] = {}

    async def pushed(self, node: str, mid: str) -> None:
        """Until the outcome of a push of ``mid`` to ``node`` is out (decided and answered)."""
        serves = list(self.serves.values())
        await until(lambda: any(o["node"] == node and mid in o["stanzas"]
                                for s in serves for o in s.outcomes), WAIT,
                    f"a push of {mid} to {node}")


SCENARIOS = Scenarios()
"""name -> (the local parts of its users, the scenario): it runs on each store's host."""
scenario = SCENARIOS.add


def node(user: str, device: str = "phone") -> str:
    local, _, host = user.partition("@")
    return f"node-{local}-{device}-{STORES.get(host, 'v1')}"


async def registered(live: Live, user: str, device: str = "phone") -> Device:
    client = await live.device(f"{user}/{device}")
    await client.enable(node(user, device), f"secret-{node(user, device)}")
    await client.roundtrip()
    return client


async def sender(live: Live, rec: Record) -> Sender:
    """alice, with a resource of her own in each scenario."""
    client = await live.device(f"alice@{rec.host}/{rec.users[0].split('@')[0]}", Sender)
    assert isinstance(client, Sender)
    return client


async def hibernated(live: Live, client: Device, alice: Sender, probe: str) -> None:
    """Cut the link and wait until the session hibernates: a chat message to it (``probe``) is
    pushed only once it does (queued while hibernated, or in the queue of its hibernation)."""
    await client.all_acked()
    client.cut()
    await asyncio.sleep(CUT_SETTLE)
    alice.say(str(client.boundjid), probe)
    await live.pushed(node(client.boundjid.bare, client.boundjid.resource), probe)


async def bookmark(client: Device, room: str, notify: str, nick: str) -> None:
    """XEP-0402 bookmark of ``room`` with XEP-0492's notification setting, published to PEP."""
    iq = client.Iq(stype="set")
    iq.xml.append(ET.fromstring(
        "<pubsub xmlns='http://jabber.org/protocol/pubsub'>"
        "<publish node='urn:xmpp:bookmarks:1'>"
        f"<item id='{room}'><conference xmlns='urn:xmpp:bookmarks:1' autojoin='true'>"
        f"<nick>{nick}</nick><extensions><notify xmlns='urn:xmpp:notification-settings:1'>"
        f"<{notify}/></notify></extensions></conference></item></publish></pubsub>"))
    await iq.send(timeout=WAIT)


def call(kind: str, mid: str, to: str, call_id: str) -> str:
    inner = ("<description xmlns='urn:xmpp:jingle:apps:rtp:1' media='audio'/>"
             if kind == "propose" else "")
    return (f"<message xmlns='jabber:client' id='{mid}' to='{to}' type='chat'>"
            f"<{kind} xmlns='{JMI}' id='{call_id}'>{inner}</{kind}><store xmlns='urn:xmpp:hints'/>"
            "</message>")


# --- group chats ------------------------------------------------------------------------------

@scenario("groupchat", "gc", "gco")
async def groupchat(live: Live, rec: Record) -> None:
    host = rec.host
    user, offline_user = f"gc@{host}", f"gco@{host}"
    service = live.rooms[host]
    rooms = {name: f"{name}@{muc(host)}" for name in ("plain", "never", "mention", "echo")}
    phone = await registered(live, user)
    await bookmark(phone, rooms["never"], "never", "bob")
    await bookmark(phone, rooms["mention"], "on-mention", "bob")
    await bookmark(phone, rooms["echo"], "always", "bob")
    alice = await sender(live, rec)
    await hibernated(live, phone, alice, "m0")
    other = await registered(live, offline_user)
    await other.close()
    mention = (f"<reference xmlns='urn:xmpp:reference:0' type='mention' begin='0' end='3' "
               f"uri='xmpp:{rooms['mention']}/bob'/>")
    reply = f"<reply xmlns='urn:xmpp:reply:0' to='{user}/phone' id='g3'/>"
    for room, nick, to, mid, inner in (
            ("plain", "alice", user, "g1", ""),             # no setting: always
            ("never", "alice", user, "g2", ""),             # never
            ("mention", "alice", user, "g3", ""),           # on-mention, no mention
            ("mention", "alice", user, "g4", mention),      # on-mention, XEP-0372 mention
            ("mention", "alice", user, "g5", reply),        # on-mention, XEP-0461 reply
            ("echo", "bob", user, "g6", ""),                # the room's echo of bob's own
            ("echo", "alice", user, "g7", ""),              # always
            ("plain", "alice", f"{user}/gone", "g8", ""),   # a resource that is gone
            ("plain", "alice", offline_user, "g9", "")):    # an offline user
        service.say(rooms[room].split("@")[0], nick, to, mid, inner=inner)
    await live.pushed(node(offline_user), "g9")  # every earlier event was applied


# --- calls ------------------------------------------------------------------------------------

@scenario("call-csi-inactive", "call")
async def call_csi_inactive(live: Live, rec: Record) -> None:
    """The phone hibernated, the desktop active but CSI-inactive: both ring, both stop."""
    await ring(live, rec, f"call@{rec.host}", inactive_desktop=True)


@scenario("call-csi-active", "calla")
async def call_csi_active(live: Live, rec: Record) -> None:
    """The phone hibernated, the desktop active and CSI-active: only the phone rings."""
    await ring(live, rec, f"calla@{rec.host}", inactive_desktop=False)


async def ring(live: Live, rec: Record, user: str, inactive_desktop: bool) -> None:
    phone = await registered(live, user)
    desktop = await registered(live, user, "desktop")
    if inactive_desktop:
        desktop.send_raw("<inactive xmlns='urn:xmpp:csi:0'/>")
        await desktop.roundtrip()  # handled in order: the CSI state is raised before its answer
    alice = await sender(live, rec)
    await hibernated(live, phone, alice, "m0")
    alice.raw(call("propose", "p1", user, "c1"))
    await live.pushed(node(user), "p1")
    if inactive_desktop:
        await live.pushed(node(user, "desktop"), "p1")
    alice.raw(call("retract", "r1", user, "c1"))
    await live.pushed(node(user), "r1")
    if inactive_desktop:
        await live.pushed(node(user, "desktop"), "r1")
    else:  # a later event of the same connection applied: the desktop's chance has passed
        alice.say(f"{user}/phone", "m9")
        await live.pushed(node(user), "m9")
    await until(lambda: {"p1", "r1"} <= set(desktop.stanza_ids), WAIT, "the desktop's client "
                "gets the call")  # CSI-inactive too: mod_csi_simple lets a call through


# --- remote disable ---------------------------------------------------------------------------

@scenario("remote-disable", "rd", "rdm")
async def remote_disable(live: Live, rec: Record) -> None:
    """Both of rd's devices offline. A notice is a message like any other for Prosody (stored
    offline, so pushed where still enabled: it is observed, never swallowed)."""
    host = rec.host
    user, marker = f"rd@{host}", f"rdm@{host}"
    app = live.app
    assert app is not None
    phone, tablet = node(user), node(user, "tablet")
    for device in ("phone", "tablet"):
        await (await registered(live, user, device)).close()
    await (await registered(live, marker)).close()
    alice = await sender(live, rec)
    alice.say(user, "m1")
    await live.pushed(phone, "m1")
    await live.pushed(tablet, "m1")
    # The same notice from alice, not the push service: a routine no-op, m2 goes to both.
    alice.raw(f"<message xmlns='jabber:client' id='forged' to='{user}'>"
              "<pubsub xmlns='http://jabber.org/protocol/pubsub' "
              f"node='{phone}'><affiliation jid='{user}' affiliation='none'/></pubsub>"
              "</message>")
    alice.say(user, "m2")
    await live.pushed(phone, "m2")
    await live.pushed(tablet, "m2")
    app.revoke(user, phone, mid="revoke-phone")  # the XEP's own example
    await live.pushed(tablet, "revoke-phone")    # its offline copy: the phone is disabled
    alice.say(user, "m3")
    await live.pushed(tablet, "m3")
    app.revoke(user, tablet, whose=host, form="xep-0060", mid="revoke-tablet")  # the host's
    app.send_raw(f"<message xmlns='jabber:component:accept' id='app-mark' from='{APP}' "
                 f"to='{marker}'><body>after the notice</body></message>")
    await live.pushed(node(marker), "app-mark")  # the notice before it was applied
    alice.say(user, "m4")
    alice.say(marker, "m5")
    await live.pushed(node(marker), "m5")        # m4 was applied before it


# --- version 1 only ---------------------------------------------------------------------------

async def version_1(live: Live, rec: Record) -> None:
    """pushrules_contract_version = 1: the module raises none of the version-2 events and no
    `at`; its peer is a recorder (a sidecar of an engine that only knows version 1)."""
    user = f"bob@{V1}"
    recorder = await ModuleRecorder(live.sockets[V1]).start()
    assert live.app is not None
    try:
        await until(lambda: recorder.hello is not None, WAIT, "the module's hello")
        bob = await registered(live, user)
        bob.send_raw("<inactive xmlns='urn:xmpp:csi:0'/>")
        await bookmark(bob, f"room@{muc(MEMORY)}", "never", "bob")
        alice = await sender(live, rec)
        alice.say(user, "g1", kind="groupchat")
        live.app.revoke(user, node(user), mid="revoke-v1")
        alice.say(f"{user}/phone", "m1")
        await until(lambda: any("id='m1'" in e.get("stanza", "")
                                for e in recorder.named("stanza-queued")), WAIT,
                    "the message after the others")
        await until(lambda: "revoke-v1" in bob.stanza_ids, WAIT, "the notice delivered")
        rec.marks["hello"] = recorder.hello
        rec.marks["events"] = list(recorder.events)
    finally:
        await recorder.stop()


# --- running them all -------------------------------------------------------------------------

async def _run_one(live: Live, rec: Record, fn: Scenario) -> None:
    await run_scenario(fn, live, rec, 240, SETTLE)
    assert live.app is not None
    serve = live.serves.get(rec.host)
    rec.outcomes = [o for user in rec.users for o in (serve.for_user(user) if serve else [])]
    nodes = {o["node"] for o in rec.outcomes} | {node(u, d) for u in rec.users
                                                 for d in ("phone", "desktop", "tablet")}
    rec.received = [r for r in live.app.received if r.publish.node in nodes]


async def _run_all(root: Path) -> dict[str, Record]:
    live = Live(root)
    records: dict[str, Record] = {}
    runs = []
    for host in STORES:
        for name, (locals_, fn) in SCENARIOS.items():
            rec = records[f"{name}/{STORES[host]}"] = Record([f"{u}@{host}" for u in locals_],
                                                                    host)
            runs.append((rec, fn))
    records["version-1"] = Record([f"bob@{V1}"], V1)
    runs.append((records["version-1"], version_1))
    for rec in records.values():
        for user in (*rec.users, f"alice@{rec.host}"):
            live.prosody.add_account(user)
    live.prosody.add_account(WITNESS)
    live.prosody.start()
    try:
        live.app = await RevokingAppServer(APP, live.prosody.port).start()
        live.witness = await live.device(f"{WITNESS}/w")
        for host in STORES:
            live.rooms[host] = await Room(muc(host), live.prosody.port).start()
        live.serves[MEMORY] = await Serve(live.sockets[MEMORY], "memory:",
                                          root / "memory.log").start()
        live.serves[SQLITE] = await Serve(live.sockets[SQLITE], f"sqlite:///{root}/v2.db",
                                          root / "sqlite.log").start()
        await asyncio.gather(*(_run_one(live, rec, fn) for rec, fn in runs))
    finally:
        for client in live.clients:
            await client.stop()
        for serve in live.serves.values():
            await serve.stop()
        for room in live.rooms.values():
            await room.stop()
        if live.app is not None:
            await live.app.stop()
        live.prosody.stop()
    for rec in records.values():
        serve = live.serves.get(rec.host)
        rec.marks["logs"] = serve.stderr() if serve else ""
        rec.marks["prosody log"] = live.prosody.log.read_text(errors="replace")
    return records


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Record]:
    need_prosody()
    return asyncio.run(_run_all(tmp_path_factory.mktemp("v2")))


def pushes(rec: Record) -> list[tuple[str, str, list[str], bool]]:
    """(node, rule, stanzas, urgent) of every push decided, in order."""
    return [(o["node"], o["rule"], o["stanzas"], o.get("urgent", False)) for o in rec.outcomes]


def assert_published_as_decided(rec: Record) -> None:
    """Every decided push reached the app server: from the user's host, to its node, with its
    secret, urgent (the high-priority element) exactly when the push is; in order per node
    (two registrations' publishes go out side by side)."""
    assert {o["status"] for o in rec.outcomes} <= {"delivered"}, rec.outcomes
    assert sorted(r.publish.node for r in rec.received) == sorted(o["node"] for o in rec.outcomes)
    for name in {o["node"] for o in rec.outcomes}:
        outcomes = [o for o in rec.outcomes if o["node"] == name]
        received = [r for r in rec.received if r.publish.node == name]
        for outcome, got in zip(outcomes, received, strict=True):
            assert got.sender == rec.host
            assert got.publish.options == {"secret": f"secret-{name}"}
            assert got.publish.urgent == outcome.get("urgent", False)
            assert got.publish.summary["message-count"] == str(len(outcome["stanzas"]))


def assert_probe(push: tuple[str, str, list[str], bool], phone: str) -> None:
    """The hibernation probe m0: pushed once, queued while hibernated or in the queue of the
    hibernation (which of the two depends on when Prosody read the cut)."""
    assert push in [(phone, rule, ["m0"], False) for rule in ("a/queued", "a/hibernation-start")]


def assert_timed(rec: Record) -> None:
    """Version 2 from the module: every event carries `at`, so every push line does."""
    times = [o["at"] for o in rec.outcomes]
    assert all(isinstance(t, int | float) for t in times) and times == sorted(times)


# --- the checks -------------------------------------------------------------------------------

@pytest.mark.parametrize("store", ["memory", "sqlite"])
def test_groupchat_to_a_bare_jid_pushes_as_the_chat_settings_say(live, store):
    rec = record(live, f"groupchat/{store}")
    user, offline_user = rec.users
    got = pushes(rec)
    assert_probe(got[0], node(user))
    assert got[1:] == [(node(user), "d/groupchat", [mid], False)
                       for mid in ("g1", "g4", "g5", "g7", "g8")] + [
        (node(offline_user), "d/groupchat", ["g9"], False)]
    assert_published_as_decided(rec)
    assert_timed(rec)


@pytest.mark.parametrize("store", ["memory", "sqlite"])
def test_a_call_rings_the_hibernated_phone_and_the_csi_inactive_desktop(live, store):
    rec = record(live, f"call-csi-inactive/{store}")
    [user] = rec.users
    phone, desktop = node(user), node(user, "desktop")
    got = pushes(rec)
    assert_probe(got[0], phone)
    # Prosody archives the propose (and the retract) before it delivers them: the archive path
    # raises them, rule e fans out to both registrations at once (in enable order).
    assert got[1:] == [(phone, "e/call", ["p1"], True), (desktop, "e/call", ["p1"], True),
                       (phone, "e/call-end", ["r1"], False),
                       (desktop, "e/call-end", ["r1"], False)]
    assert_published_as_decided(rec)


@pytest.mark.parametrize("store", ["memory", "sqlite"])
def test_a_call_does_not_ring_a_csi_active_desktop_nor_end_there(live, store):
    rec = record(live, f"call-csi-active/{store}")
    [user] = rec.users
    phone = node(user)
    got = pushes(rec)
    assert_probe(got[0], phone)
    assert got[1:] == [(phone, "e/call", ["p1"], True), (phone, "e/call-end", ["r1"], False),
                       (phone, "a/queued", ["m9"], False)]
    assert not [r for r in rec.received if r.publish.node == node(user, "desktop")]
    assert_published_as_decided(rec)


@pytest.mark.parametrize("store", ["memory", "sqlite"])
def test_remote_disable_from_the_app_server_stops_that_registration(live, store):
    rec = record(live, f"remote-disable/{store}")
    user, marker = rec.users
    phone, tablet = node(user), node(user, "tablet")
    by_node = {n: [s for o in rec.outcomes if o["node"] == n for s in o["stanzas"]]
               for n in (phone, tablet, node(marker))}
    # (a message with a body is archived with no live session (b/archive), then stored
    # offline, deduplicated; the notices have no body: offline storage only (c/offline))
    assert by_node == {phone: ["m1", "forged", "m2"],
                       tablet: ["m1", "forged", "m2", "revoke-phone", "m3"],
                       node(marker): ["app-mark", "m5"]}
    assert_published_as_decided(rec)
    logs = str(rec.marks["prosody log"])
    notice = "XEP-0357 remote disable notice from"
    assert f"{notice} {APP}: node {phone} of {user}" in logs
    assert f"{notice} {APP}: node {tablet} of {user}" in logs
    assert f"{notice} alice@{rec.host}/rd: node {phone} of {user}" in logs  # raised, a no-op


def test_version_1_only_raises_no_version_2_event(live):
    rec = record(live, "version-1")
    assert rec.marks["hello"]["version"] == 1
    events = rec.marks["events"]
    names = {e["event"] for e in events}
    assert names & {"csi-state", "chat-settings", "message/bare/groupchat",
                    "push-remote-disable"} == set()
    assert {"session-bind", "push-enable", "stanza-queued"} <= names
    assert not [e for e in events if "at" in e]
