"""The operating-system side of the proxy workers: listening sockets and processes.

:func:`bind_groups` binds each listening address once per worker with
``SO_REUSEPORT`` (after a probe bind without it, so that "address in use"
fails as it would for one socket); :func:`spawn` starts a worker process
(``python -m patrd.proxy.worker``) with its sockets inherited.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
from typing import Any, Final

from patrd.model.errors import PatrdError

__all__ = ["BACKLOG", "ProxyWorkerError", "bind_groups", "spawn", "wait_exit"]

BACKLOG: Final = 1024


class ProxyWorkerError(PatrdError):
    """A proxy worker process could not be started."""


def spawn(control_fd: int, fds: list[int]) -> subprocess.Popen[bytes]:
    """Start one worker (fork + exec: no waiting on the child, fine on the loop)."""
    try:
        return subprocess.Popen(
            [sys.executable, "-m", "patrd.proxy.worker", str(control_fd)],
            pass_fds=fds,
            stdin=subprocess.DEVNULL,
        )
    except OSError as exc:
        raise ProxyWorkerError(f"cannot start a proxy worker: {exc}") from exc


def wait_exit(proc: subprocess.Popen[bytes], timeout: float) -> None:
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout)


def bind_groups(host: str, port: int, n: int) -> list[list[socket.socket]]:
    """For each address ``host`` resolves to: ``n`` sockets listening on it (SO_REUSEPORT).

    A probe without ``SO_REUSEPORT`` binds first: a port already in use
    fails here (``OSError``), even if its owner allows sharing it.
    """
    infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    groups: list[list[socket.socket]] = []
    seen: set[tuple[Any, ...]] = set()
    try:
        for family, kind, proto, _, sockaddr in infos:
            if (family, sockaddr) in seen:
                continue
            seen.add((family, sockaddr))
            with socket.socket(family, kind, proto) as probe:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if family == socket.AF_INET6:
                    probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                try:
                    probe.bind(sockaddr)
                except OSError as exc:
                    raise OSError(
                        exc.errno,
                        f"error while attempting to bind on address {sockaddr!r}: {exc.strerror}",
                    ) from None
                actual = probe.getsockname()
            group: list[socket.socket] = []
            groups.append(group)
            for _ in range(n):
                sock = socket.socket(family, kind, proto)
                group.append(sock)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
                if family == socket.AF_INET6:
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                sock.bind(actual)
                sock.listen(BACKLOG)
                sock.setblocking(False)
                os.set_inheritable(sock.fileno(), False)  # passed explicitly (pass_fds)
    except BaseException:
        for group in groups:
            for sock in group:
                sock.close()
        raise
    return groups
