"""A throwaway redis-server on 127.0.0.1 for tests and benchmarks: a free port, its own data
dir, stopped (and reaped) by whoever started it."""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from pushrules.model.errors import PushrulesError


class RedisServerMissing(PushrulesError, RuntimeError):
    """redis-server is not installed (Debian: apt-get install redis-server)."""


class PortTaken(PushrulesError, RuntimeError):
    """Another program listens on the port redis-server was given."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class LocalRedis:
    """``with LocalRedis() as server: server.url``. ``persistent=True`` keeps data across
    ``stop()``/``start()`` (append-only file, fsync always) for come-back tests.
    ``cluster_node_timeout`` (ms) makes it a Redis Cluster node (see LocalRedisCluster)."""

    def __init__(self, *, persistent: bool = False, port: int | None = None,
                 data_dir: Path | None = None, cluster_node_timeout: int | None = None) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RedisServerMissing("redis-server not found on PATH "
                                     "(Debian: apt-get install redis-server)")
        self.binary = binary
        self.persistent = persistent
        self._fixed_port = port is not None
        self.port = port or free_port()
        self._tmp = None if data_dir else tempfile.TemporaryDirectory(prefix="pushrules-redis-")
        self.data_dir = data_dir or Path(self._tmp.name)  # type: ignore[union-attr]
        self.process: subprocess.Popen[bytes] | None = None
        self.cluster_node_timeout = cluster_node_timeout
        self.bus_port = 0
        """The cluster bus port (cluster nodes only): picked, not port + 10000, which may be
        taken or above 65535."""

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> None:
        """Start and wait until it answers. A picked port that another program took meanwhile
        (``free_port`` cannot reserve it) gets a second and third try on new ports; the first
        start's port is kept for later restarts."""
        for attempt in range(3):
            try:
                self._start(timeout)
                self._fixed_port = True
                return
            except PortTaken:
                if self._fixed_port or attempt == 2:
                    raise
                self.port = free_port()
                self.bus_port = 0

    def _start(self, timeout: float) -> None:
        args = [self.binary, "--bind", "127.0.0.1", "--port", str(self.port),
                "--daemonize", "no", "--dir", str(self.data_dir), "--save", "",
                "--protected-mode", "yes", "--loglevel", "warning",
                "--logfile", str(self.data_dir / "redis.log")]
        if self.persistent:
            args += ["--appendonly", "yes", "--appendfsync", "always"]
        else:
            args += ["--appendonly", "no"]
        if self.cluster_node_timeout is not None:
            self.bus_port = self.bus_port or free_port()
            args += ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                     "--cluster-node-timeout", str(self.cluster_node_timeout),
                     "--cluster-port", str(self.bus_port),
                     # A failed master stops only its own slots, not the whole cluster.
                     "--cluster-require-full-coverage", "no"]
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL)
        client = redis.Redis(host="127.0.0.1", port=self.port, socket_connect_timeout=0.2,
                             socket_timeout=0.5, retry=Retry(NoBackoff(), 0))
        deadline = time.monotonic() + timeout
        try:
            while True:
                if self.process.poll() is not None:
                    log = (self.data_dir / "redis.log")
                    tail = log.read_text()[-500:] if log.exists() else ""
                    kind = PortTaken if "Address already in use" in tail else RuntimeError
                    raise kind(f"redis-server on port {self.port} exited with "
                                       f"{self.process.returncode}: {tail}")
                try:
                    # Ours, not another server that answers on the same port.
                    if client.info("server")["process_id"] == self.process.pid:
                        return
                except (redis.ConnectionError, redis.TimeoutError):
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"redis-server on port {self.port} did not answer "
                                       f"within {timeout}s")
                time.sleep(0.02)
        except BaseException:
            self.stop()
            raise
        finally:
            client.close()

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        process.send_signal(signal.SIGCONT)  # a paused one acts on SIGTERM only once resumed
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def pause(self) -> None:
        """SIGSTOP: alive but silent (a hung machine); ``resume()`` continues it."""
        if self.process is not None:
            self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        if self.process is not None:
            self.process.send_signal(signal.SIGCONT)

    def kill(self) -> None:
        """SIGKILL, as a machine loss: no shutdown, no last save."""
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.kill()
            process.wait()

    def close(self) -> None:
        self.stop()
        if self._tmp is not None:
            self._tmp.cleanup()

    def __enter__(self) -> LocalRedis:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class LocalRedisCluster:
    """``with LocalRedisCluster() as cluster: cluster.url``: a real Redis Cluster of
    ``masters`` masters with ``replicas`` replicas each (default 3 + 3), every node a
    redis-server on 127.0.0.1 with its own port, bus port and data dir, joined by
    ``redis-cli --cluster create``. ``node_timeout`` (ms) is how long a master may be silent
    before its replica takes over: it bounds the outage of a failover. The nodes run with
    ``cluster-require-full-coverage no``: a failed master stops only its own slots."""

    def __init__(self, *, masters: int = 3, replicas: int = 1, node_timeout: int = 1000) -> None:
        cli = shutil.which("redis-cli")
        if cli is None:
            raise RedisServerMissing("redis-cli not found on PATH (Debian: apt-get install "
                                     "redis-tools, which redis-server depends on)")
        self.cli = cli
        self.replicas = replicas
        self._tmp = tempfile.TemporaryDirectory(prefix="pushrules-cluster-")
        root = Path(self._tmp.name)
        self.nodes = []
        for index in range(masters * (1 + replicas)):
            (root / f"node{index}").mkdir()
            self.nodes.append(LocalRedis(data_dir=root / f"node{index}",
                                         cluster_node_timeout=node_timeout))

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"127.0.0.1:{node.port}" for node in self.nodes)

    def start(self, timeout: float = 60.0) -> None:
        try:
            for node in self.nodes:
                node.start()
            create = subprocess.run(
                [self.cli, "--cluster", "create",
                 *(f"127.0.0.1:{node.port}" for node in self.nodes),
                 "--cluster-replicas", str(self.replicas), "--cluster-yes"],
                capture_output=True, text=True, timeout=timeout, check=False)
            if create.returncode != 0:
                raise RuntimeError(f"redis-cli --cluster create failed ({create.returncode}): "
                                   f"{(create.stdout + create.stderr)[-800:]}")
            self.wait_healthy(timeout)
        except BaseException:
            self.stop()
            raise

    def _client(self, node: LocalRedis) -> Any:
        # Any: redis-py leaves execute_command unannotated.
        return redis.Redis(host="127.0.0.1", port=node.port, socket_connect_timeout=0.5,
                           socket_timeout=1.0, retry=Retry(NoBackoff(), 0),
                           decode_responses=True)

    def _ask(self, node: LocalRedis, *command: str) -> str:
        client = self._client(node)
        try:
            return str(client.execute_command(*command))
        finally:
            client.close()

    def _node_healthy(self, node: LocalRedis) -> bool:
        info = dict(line.split(":", 1) for line in
                    self._ask(node, "CLUSTER", "INFO").split() if ":" in line)
        if info.get("cluster_state") != "ok" or info.get("cluster_slots_ok") != "16384":
            return False
        client = self._client(node)
        try:
            replication = client.info("replication")
        finally:
            client.close()
        if replication["role"] != "master":
            return bool(replication["master_link_status"] == "up")
        # The master's side too: a replica it still counts as syncing is not waited on by the
        # cluster store (only "online" ones are), so a test pausing it would prove nothing.
        return all(value.get("state") == "online" for key, value in replication.items()
                   if key.startswith("slave") and isinstance(value, dict))

    def wait_healthy(self, timeout: float = 60.0) -> float:
        """Wait until every running node says the cluster is ok (all slots served) and every
        running replica is in sync with its master; the seconds it took."""
        start = time.monotonic()
        while True:
            try:
                if all(self._node_healthy(node) for node in self.running()):
                    return time.monotonic() - start
            except (redis.ConnectionError, redis.TimeoutError, KeyError):
                pass
            if time.monotonic() - start > timeout:
                raise RuntimeError(f"redis cluster on ports "
                                   f"{[n.port for n in self.nodes]} not healthy in {timeout}s")
            time.sleep(0.05)

    def running(self) -> list[LocalRedis]:
        return [node for node in self.nodes if node.process is not None]

    def masters(self) -> dict[int, LocalRedis]:
        """Each running master by port, as a running node sees the cluster."""
        by_port = {node.port: node for node in self.running()}
        table = self._ask(self.running()[0], "CLUSTER", "NODES")
        ports = set()
        for line in table.splitlines():
            fields = line.split()
            flags = fields[2].split(",")
            if "master" in flags and "fail" not in flags and len(fields) > 8:
                ports.add(int(fields[1].split("@")[0].rsplit(":", 1)[1]))
        return {port: by_port[port] for port in sorted(ports) if port in by_port}

    def replicas_of(self, master: LocalRedis) -> list[LocalRedis]:
        """The running replicas of ``master``."""
        lines = [line.split() for line in
                 self._ask(self.running()[0], "CLUSTER", "NODES").splitlines()]
        port_of = {f[0]: int(f[1].split("@")[0].rsplit(":", 1)[1]) for f in lines}
        ports = {port_of[f[0]] for f in lines
                 if "slave" in f[2] and port_of.get(f[3]) == master.port}
        return [node for node in self.running() if node.port in ports]

    def master_of(self, key: str) -> LocalRedis:
        """The running master that serves ``key``'s slot now."""
        node = self.running()[0]
        slot = int(self._ask(node, "CLUSTER", "KEYSLOT", key))
        for line in self._ask(node, "CLUSTER", "NODES").splitlines():
            fields = line.split()
            if "master" not in fields[2] or "fail" in fields[2]:
                continue
            for span in fields[8:]:
                low, _, high = span.partition("-")
                if not low.isdigit():
                    continue
                if int(low) <= slot <= int(high or low):
                    port = int(fields[1].split("@")[0].rsplit(":", 1)[1])
                    return next(n for n in self.nodes if n.port == port)
        raise RuntimeError(f"no running master serves slot {slot} (key {key!r})")

    def move_slot(self, key: str, to: LocalRedis) -> int:
        """Reshard: move ``key``'s slot, with its keys, to the master ``to`` (the steps of
        ``redis-cli --cluster reshard`` for one slot); the slot's number."""
        migration = self.migrate_slot(key, to)
        migration.finish()
        return migration.slot

    def migrate_slot(self, key: str, to: LocalRedis) -> SlotMigration:
        """Open the migration of ``key``'s slot to the master ``to`` (IMPORTING on ``to``,
        MIGRATING on its master); its keys move as the caller says (``SlotMigration``)."""
        return SlotMigration(self, self.master_of(key), to,
                             int(self._ask(to, "CLUSTER", "KEYSLOT", key)))

    def errorstats(self) -> dict[str, int]:
        """Errors the running nodes answered since they started (or ``reset_stats``), by
        prefix: {"ASK": 3, "TRYAGAIN": 12, ...} (``INFO errorstats``)."""
        totals: dict[str, int] = {}
        for node in self.running():
            client = self._client(node)
            try:
                stats = client.info("errorstats")
            finally:
                client.close()
            for name, value in stats.items():
                error = name.removeprefix("errorstat_")
                totals[error] = totals.get(error, 0) + int(value["count"])
        return totals

    def reset_stats(self) -> None:
        for node in self.running():
            self._ask(node, "CONFIG", "RESETSTAT")

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    def close(self) -> None:
        self.stop()
        self._tmp.cleanup()

    def __enter__(self) -> LocalRedisCluster:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _on_source(client: Any, key: str) -> bool:
    """Whether the migrating slot's source still holds ``key``: one it does not hold (moved,
    or never written: a user's first commit may not have come yet) is answered ASK."""
    try:
        return bool(client.exists(key))
    except redis.exceptions.AskError:
        return False


class SlotMigration:
    """One slot moving from master ``source`` to master ``target`` as ``redis-cli --cluster
    reshard`` moves it, at the caller's pace: ``move_keys(n)`` MIGRATEs the next n keys (while
    some keys are on each side, commands on the slot meet ASK and TRYAGAIN), ``finish()``
    moves the rest and assigns the slot to ``target`` on every master."""

    def __init__(self, cluster: LocalRedisCluster, source: LocalRedis, target: LocalRedis,
                 slot: int) -> None:
        self.cluster, self.source, self.target, self.slot = cluster, source, target, slot
        self._ids = {node.port: cluster._ask(node, "CLUSTER", "MYID")
                     for node in (source, target)}
        cluster._ask(target, "CLUSTER", "SETSLOT", str(slot), "IMPORTING",
                     self._ids[source.port])
        cluster._ask(source, "CLUSTER", "SETSLOT", str(slot), "MIGRATING",
                     self._ids[target.port])

    def move_keys(self, count: int) -> int:
        """MIGRATE up to ``count`` of the slot's keys still on the source; how many moved."""
        client = self.cluster._client(self.source)
        try:
            keys = client.execute_command("CLUSTER", "GETKEYSINSLOT", self.slot, count)
        finally:
            client.close()
        return self.move(keys)

    def move(self, keys: list[str]) -> int:
        """MIGRATE these keys of the slot (those still on the source); how many moved."""
        client = self.cluster._client(self.source)
        try:
            here = [key for key in keys if _on_source(client, key)]
            if here:
                client.execute_command("MIGRATE", "127.0.0.1", self.target.port, "", 0, 5000,
                                       "KEYS", *here)
            return len(here)
        finally:
            client.close()

    def finish(self) -> None:
        while self.move_keys(100):
            pass
        for node in self.cluster.masters().values():
            self.cluster._ask(node, "CLUSTER", "SETSLOT", str(self.slot), "NODE",
                              self._ids[self.target.port])
