"""A listening Unix socket that cannot be stolen or reached by other local users.

``open_listener(path)`` creates the socket 0600 (0660 with ``group``) before anyone can connect
(it is bound in a private directory, given its mode and group, then linked into place, which
fails instead of replacing a path that appeared meanwhile). An existing path is refused when it
is not a socket or when a process answers on it; a stale socket nobody answers on is replaced.
``Listener.close()`` removes the path only while it is still our socket (same device and inode).
``peer_uid(sock)`` is the connecting process's uid (SO_PEERCRED, Linux).
"""

from __future__ import annotations

import contextlib
import errno
import grp
import os
import socket
import stat
import struct
import tempfile
from dataclasses import dataclass
from pathlib import Path


class SocketPathError(OSError):
    """The socket path cannot be used; the message says why and what to do."""


@dataclass
class Listener:
    sock: socket.socket
    path: Path
    device: int
    inode: int

    def ours(self) -> bool:
        """Whether the path is still the socket we created."""
        try:
            st = os.lstat(self.path)
        except OSError:
            return False
        return (st.st_dev, st.st_ino) == (self.device, self.inode)

    def close(self) -> None:
        """Stop listening; remove the path if it is still ours (never another's socket)."""
        self.sock.close()
        if self.ours():
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)


def open_listener(path: str | os.PathLike[str], *, mode: int = 0o600,
                  group: str | int | None = None, backlog: int = 64) -> Listener:
    """Listen on a new Unix socket at ``path``; SocketPathError says why it cannot."""
    target = Path(path)
    gid = _gid(group, target) if group is not None else None
    if gid is not None and mode == 0o600:
        mode = 0o660
    _clear_stale(target)
    try:
        private = tempfile.mkdtemp(prefix=".pushrules-", dir=target.parent)
    except OSError as exc:
        raise SocketPathError(f"socket {target}: cannot create it in {target.parent}: "
                              f"{exc.strerror}") from None
    staged = Path(private) / "s"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(str(staged))  # the directory is 0700: nobody can connect before the chmod
        os.chmod(staged, mode)
        if gid is not None:
            os.chown(staged, -1, gid)
        try:
            os.link(staged, target)
        except FileExistsError:
            raise SocketPathError(f"socket {target}: the path appeared while it was being "
                                  "created (another serve starting?); not replaced") from None
        except OSError as exc:
            raise SocketPathError(f"socket {target}: cannot create it: {exc.strerror}") from None
        sock.listen(backlog)
        st = os.lstat(target)
        return Listener(sock, target, st.st_dev, st.st_ino)
    except BaseException:
        sock.close()
        raise
    finally:
        with contextlib.suppress(OSError):
            os.unlink(staged)
        with contextlib.suppress(OSError):
            os.rmdir(private)


def _clear_stale(target: Path) -> None:
    """Refuse a path that is not a socket or is answered on; remove a stale socket."""
    if not target.parent.is_dir():
        raise SocketPathError(f"socket {target}: directory {target.parent} does not exist")
    try:
        st = os.lstat(target)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise SocketPathError(f"socket {target}: the path exists and is not a socket; "
                              "refusing to replace it (remove it or choose another path)")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(1.0)
    try:
        probe.connect(str(target))
    except (ConnectionRefusedError, FileNotFoundError):
        pass  # stale: the process that made it is gone
    except OSError as exc:
        if exc.errno != errno.ECONNREFUSED:
            raise SocketPathError(f"socket {target}: exists and cannot be probed "
                                  f"({exc.strerror}); refusing to replace it") from None
    else:
        raise SocketPathError(f"socket {target}: another process is listening on it "
                              "(another pushrules serve?); refusing to take it over")
    finally:
        probe.close()
    with contextlib.suppress(FileNotFoundError):
        os.unlink(target)


def _gid(group: str | int, target: Path) -> int:
    if isinstance(group, int) or group.isdigit():
        return int(group)
    try:
        return grp.getgrnam(group).gr_gid
    except KeyError:
        raise SocketPathError(f"socket {target}: no such group {group!r}") from None


def peer_uid(sock: socket.socket) -> int | None:
    """The uid of the process at the other end (None where SO_PEERCRED is not available)."""
    option = getattr(socket, "SO_PEERCRED", None)
    if option is None:
        return None
    raw = sock.getsockopt(socket.SOL_SOCKET, option, struct.calcsize("3i"))
    _pid, uid, _gid_ = struct.unpack("3i", raw)
    return int(uid)
