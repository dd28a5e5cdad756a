"""sd_notify messages over a real unix datagram socket the test binds."""

from __future__ import annotations

import asyncio
import os
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from patrd.daemon import sdnotify
from patrd.daemon.sdnotify import Notifier


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[tuple[str, socket.socket]]:
    path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(1.0)
    yield str(path), sock
    sock.close()


def drain(sock: socket.socket) -> list[bytes]:
    messages = []
    sock.setblocking(False)
    try:
        while True:
            messages.append(sock.recv(4096))
    except BlockingIOError:
        pass
    finally:
        sock.settimeout(1.0)
    return messages


@pytest.mark.parametrize(
    ("value", "address"),
    [
        ("/run/systemd/notify", "/run/systemd/notify"),
        ("@abstract/name", "\0abstract/name"),
        ("@", None),
        ("relative/path", None),
    ],
)
def test_socket_address(value: str, address: str | None) -> None:
    assert sdnotify.socket_address(value) == address


@pytest.mark.parametrize(
    ("env", "interval"),
    [
        ({}, None),
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "junk"}, None),
        ({"WATCHDOG_USEC": "30000000"}, 15.0),
        ({"WATCHDOG_USEC": "1000000", "WATCHDOG_PID": "4242"}, 0.5),
        ({"WATCHDOG_USEC": "1000000", "WATCHDOG_PID": "1"}, None),  # meant for another process
        ({"WATCHDOG_USEC": "1000000", "WATCHDOG_PID": "x"}, None),
    ],
)
def test_watchdog_interval_is_half_the_timeout(env: dict[str, str], interval: float | None) -> None:
    assert sdnotify.watchdog_interval(env, pid=4242) == interval


def test_messages(receiver: tuple[str, socket.socket]) -> None:
    path, sock = receiver
    notifier = Notifier(path)
    assert notifier.enabled
    assert notifier.ready("2 deployments,\n 1 running")
    assert sock.recv(4096) == b"READY=1\nSTATUS=2 deployments, 1 running"
    assert notifier.watchdog()
    assert sock.recv(4096) == b"WATCHDOG=1"
    assert notifier.status("x" * 500)
    assert sock.recv(4096) == b"STATUS=" + b"x" * sdnotify.MAX_STATUS_CHARS
    assert notifier.stopping()
    assert sock.recv(4096) == b"STOPPING=1"
    notifier.close()


def test_abstract_namespace_socket() -> None:
    name = f"patrd-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(1.0)
        notifier = Notifier.from_environ({"NOTIFY_SOCKET": "@" + name})
        assert notifier.ready()
        assert sock.recv(4096) == b"READY=1"
        notifier.close()


def test_from_environ_removes_the_variable_and_absent_is_a_no_op() -> None:
    env = {"NOTIFY_SOCKET": "/nonexistent/notify", "OTHER": "1"}
    notifier = Notifier.from_environ(env)
    assert env == {"OTHER": "1"}, "children must not inherit NOTIFY_SOCKET"
    assert notifier.enabled
    quiet = Notifier.from_environ({})
    assert not quiet.enabled
    assert quiet.ready() is False


def test_a_vanished_manager_never_raises(tmp_path: Path) -> None:
    notifier = Notifier(str(tmp_path / "gone.sock"))
    assert notifier.ready() is False
    assert notifier.watchdog() is False  # logged once, then silent
    notifier.close()


async def test_pinger_follows_the_event_loop(receiver: tuple[str, socket.socket]) -> None:
    """Pings come every interval while the loop runs and stop while it is blocked."""
    path, sock = receiver
    notifier = Notifier(path)
    task = asyncio.create_task(sdnotify.watchdog_pinger(notifier, 0.05))
    await asyncio.sleep(0.27)
    running = drain(sock)
    assert 4 <= len(running) <= 7, running
    assert set(running) == {b"WATCHDOG=1"}

    time.sleep(0.4)  # the loop is stuck: no task runs, so no ping is sent
    assert drain(sock) == []
    await asyncio.sleep(0.12)
    assert len(drain(sock)) >= 1, "pings resume once the loop runs again"
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    notifier.close()


async def test_status_reporter_sends_changes_only(receiver: tuple[str, socket.socket]) -> None:
    path, sock = receiver
    notifier = Notifier(path)
    texts = iter(["1 deployments", "1 deployments", "2 deployments"])

    async def summarize() -> str:
        try:
            return next(texts)
        except StopIteration:
            raise RuntimeError("database unavailable") from None

    task = asyncio.create_task(
        sdnotify.status_reporter(notifier, summarize, 0.01, sent="1 deployments")
    )
    await asyncio.sleep(0.1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert drain(sock) == [
        b"STATUS=2 deployments",
        b"STATUS=status unavailable: database unavailable",
    ]
    notifier.close()


def test_notifier_socket_is_not_inherited(receiver: tuple[str, socket.socket]) -> None:
    path, _ = receiver
    notifier = Notifier(path)
    notifier.watchdog()
    assert notifier._sock is not None
    assert not os.get_inheritable(notifier._sock.fileno())
    notifier.close()
