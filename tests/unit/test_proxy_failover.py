"""Connect failures that fail over, marks, the next instance (patrd/proxy/failover.py)."""

from __future__ import annotations

import errno
import socket
import ssl

import pytest

from patrd.proxy.failover import MAX_FAILOVERS, expire, next_backends, not_reached, usable
from patrd.proxy.router import Backend

A, B, C, D = (Backend(instance=f"web-{i}", host="10.0.0.1", port=8000 + i) for i in range(4))


def key(b: Backend) -> tuple[str, int]:
    return (b.host, b.port)


@pytest.mark.parametrize(
    "exc",
    [
        ConnectionRefusedError(errno.ECONNREFUSED, "refused"),
        ConnectionResetError(errno.ECONNRESET, "reset"),
        OSError(errno.EHOSTUNREACH, "no route to host"),
        OSError(errno.ENETUNREACH, "network is unreachable"),
        OSError(errno.ETIMEDOUT, "timed out"),
        TimeoutError(),  # the proxy's own connect timeout
    ],
)
def test_failures_that_reached_no_application(exc: BaseException) -> None:
    assert not_reached(exc)


@pytest.mark.parametrize(
    "exc",
    [
        ssl.SSLCertVerificationError(1, "certificate verify failed"),
        socket.gaierror(socket.EAI_NONAME, "name unknown"),
        OSError(errno.EMFILE, "too many open files"),
        OSError("no errno"),
        ValueError("not an OSError"),
    ],
)
def test_other_failures_are_not_failed_over(exc: BaseException) -> None:
    assert not not_reached(exc)


def test_marks_run_out() -> None:
    down = {key(A): 10.0, key(B): 12.0}
    expire(down, 10.0)
    assert down == {key(B): 12.0}
    expire(down, 20.0)
    assert down == {}


def test_new_requests_avoid_marked_instances_unless_all_are() -> None:
    assert usable((A, B, C), {key(B)}) == (A, C)
    assert usable((A, B, C), set()) == (A, B, C)
    assert usable((A, B), {key(A), key(B)}) == (A, B)  # try rather than 502 untried


def test_next_backends_skips_what_failed_and_what_is_down() -> None:
    assert next_backends((A, B, C, D), {key(A), key(C)}, [key(A)]) == (B, D)
    assert next_backends((A, B), {key(A), key(B)}, [key(A)]) == ()  # the only other is down


def test_failover_is_bounded() -> None:
    backends = (A, B, C, D)
    tried: list[tuple[str, int]] = []
    attempts = 0
    nxt: tuple[Backend, ...] = backends
    while nxt:
        attempts += 1
        tried.append(key(nxt[0]))  # it failed too
        nxt = next_backends(backends, set(tried), tried)
    assert attempts == 1 + MAX_FAILOVERS == 3
    assert tried == [key(A), key(B), key(C)]
