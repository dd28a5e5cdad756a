"""Network namespaces for firewall and isolation tests: nothing touches the root namespace.

* :func:`netns` creates a uniquely named namespace (``ip netns add``) with
  its loopback up, and deletes it afterwards (killing what still runs in it).
* :func:`veth` joins two namespaces with a veth pair and addresses.
* :func:`socket_in` creates a socket *inside* a namespace: a short-lived
  thread ``setns``-es itself into the namespace (the network namespace is
  per thread) and creates the socket there; the socket stays in that
  namespace and is used from the event loop like any other.

A whole Docker engine in a namespace: ``tests/support/private_docker.py``.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

CLONE_NEWNET = 0x40000000
NETNS_DIR = Path("/var/run/netns")


def run(*argv: str, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, check=check, timeout=timeout)


def in_ns(ns: str, *argv: str, check: bool = True, timeout: float = 30) -> str:
    """Run a command inside ``ns``; its stdout."""
    return run("ip", "netns", "exec", ns, *argv, check=check, timeout=timeout).stdout


def unique(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:8]}"


@contextlib.contextmanager
def netns(prefix: str = "ptd") -> Iterator[str]:
    name = unique(prefix)
    run("ip", "netns", "add", name)
    try:
        in_ns(name, "ip", "link", "set", "lo", "up")
        yield name
    finally:
        pids = run("ip", "netns", "pids", name, check=False).stdout.split()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(pid), signal.SIGKILL)
        run("ip", "netns", "del", name, check=False)


def veth(ns_a: str, addr_a: str, ns_b: str, addr_b: str) -> None:
    """A veth pair between two namespaces; ``addr_*`` in CIDR form ("10.9.0.1/24")."""
    a, b = unique("va"), unique("vb")
    run("ip", "link", "add", a, "type", "veth", "peer", "name", b)
    run("ip", "link", "set", a, "netns", ns_a)
    run("ip", "link", "set", b, "netns", ns_b)
    in_ns(ns_a, "ip", "addr", "add", addr_a, "dev", a)
    in_ns(ns_b, "ip", "addr", "add", addr_b, "dev", b)
    in_ns(ns_a, "ip", "link", "set", a, "up")
    in_ns(ns_b, "ip", "link", "set", b, "up")


def link_of(ns: str, address: str) -> str:
    """The interface of ``ns`` that holds ``address``."""
    out = in_ns(ns, "ip", "-o", "addr", "show", "to", address)
    return out.split()[1]


def socket_in(
    ns: str, family: int = socket.AF_INET, kind: int = socket.SOCK_STREAM
) -> socket.socket:
    """A new socket that lives in namespace ``ns``."""
    return sockets_in(ns, 1, family, kind)[0]


def sockets_in(
    ns: str, count: int, family: int = socket.AF_INET, kind: int = socket.SOCK_STREAM
) -> list[socket.socket]:
    """``count`` new sockets that live in namespace ``ns``."""
    result: list[socket.socket] = []
    errors: list[BaseException] = []

    def target() -> None:
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            fd = os.open(NETNS_DIR / ns, os.O_RDONLY)
            try:
                if libc.setns(fd, CLONE_NEWNET) != 0:
                    err = ctypes.get_errno()
                    raise OSError(err, os.strerror(err))
            finally:
                os.close(fd)
            result.extend(socket.socket(family, kind) for _ in range(count))
        except BaseException as exc:
            errors.append(exc)

    # A fresh thread each time: it ends in the namespace, nothing else runs there.
    thread = threading.Thread(target=target, name=f"setns-{ns}")
    thread.start()
    thread.join(10)
    if errors:
        raise errors[0]
    if len(result) != count:
        raise RuntimeError(f"setns into {ns} did not finish")
    return result


def listener_in(ns: str, host: str, port: int, backlog: int = 512) -> socket.socket:
    sock = socket_in(ns, socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(backlog)
    sock.setblocking(False)
    return sock
