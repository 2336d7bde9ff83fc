"""A throwaway redis-server on 127.0.0.1 for tests and benchmarks: a free port, its own data
dir, stopped (and reaped) by whoever started it."""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

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
    ``stop()``/``start()`` (append-only file, fsync always) for come-back tests."""

    def __init__(self, *, persistent: bool = False, port: int | None = None,
                 data_dir: Path | None = None) -> None:
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

    def _start(self, timeout: float) -> None:
        args = [self.binary, "--bind", "127.0.0.1", "--port", str(self.port),
                "--daemonize", "no", "--dir", str(self.data_dir), "--save", "",
                "--protected-mode", "yes", "--loglevel", "warning",
                "--logfile", str(self.data_dir / "redis.log")]
        if self.persistent:
            args += ["--appendonly", "yes", "--appendfsync", "always"]
        else:
            args += ["--appendonly", "no"]
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
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
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
