"""sd_notify(3) without libsystemd: READY, STATUS, WATCHDOG and STOPPING.

systemd starts a ``Type=notify`` service with ``$NOTIFY_SOCKET`` naming a unix
*datagram* socket: a path, or an abstract address written with a leading
``@``. A message is newline-separated ``KEY=VALUE`` lines in one datagram.
Without the variable every call here is a no-op, so the daemon behaves the
same in a terminal.

The watchdog: with ``WatchdogSec=`` systemd sets ``$WATCHDOG_USEC`` (and
``$WATCHDOG_PID``); the service must send ``WATCHDOG=1`` more often than
that or it is killed (SIGABRT) and, with ``Restart=on-failure``, restarted.
patrd pings from a task on its own event loop every ``WATCHDOG_USEC / 2``,
so a blocked or frozen loop (the thing that would make the daemon useless)
stops the pings; a thread would keep pinging for a dead loop.

Sending never raises: a daemon must not fail because its supervisor went
away. The first failure is logged, later ones are not.
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Awaitable, Callable, Mapping, MutableMapping

import structlog

NOTIFY_SOCKET = "NOTIFY_SOCKET"
WATCHDOG_USEC = "WATCHDOG_USEC"
WATCHDOG_PID = "WATCHDOG_PID"
MAX_STATUS_CHARS = 200  # systemctl status shows one line; keep it short

log = structlog.get_logger("patrd.daemon.sdnotify")


def socket_address(value: str) -> str | None:
    """``$NOTIFY_SOCKET`` → an address for ``sendto``; None when it is unusable.

    ``@name`` is Linux's abstract namespace (a leading NUL byte); anything else
    must be an absolute path (systemd never passes a relative one).
    """
    if value.startswith("@") and len(value) > 1:
        return "\0" + value[1:]
    if value.startswith("/"):
        return value
    return None


def watchdog_interval(environ: Mapping[str, str], pid: int) -> float | None:
    """Seconds between ``WATCHDOG=1`` pings (half the timeout), or None when off.

    ``$WATCHDOG_PID``, when set, names the process the watchdog is meant for:
    a child that inherited the variables must not ping for its parent.
    """
    usec = environ.get(WATCHDOG_USEC, "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    owner = environ.get(WATCHDOG_PID, "")
    if owner and (not owner.isdigit() or int(owner) != pid):
        return None
    return int(usec) / 1_000_000 / 2


class Notifier:
    """Messages to the service manager; all methods are no-ops when it is absent."""

    def __init__(self, address: str | None) -> None:
        self._address = address
        self._sock: socket.socket | None = None
        self._failed = False

    @classmethod
    def from_environ(cls, environ: MutableMapping[str, str] | None = None) -> Notifier:
        """Read ``$NOTIFY_SOCKET`` and remove it, so child processes do not inherit it."""
        env = os.environ if environ is None else environ
        raw = env.pop(NOTIFY_SOCKET, "")
        address = socket_address(raw) if raw else None
        if raw and address is None:
            log.warning("notify_socket_ignored", value=raw, reason="not a path or @abstract name")
        return cls(address)

    @property
    def enabled(self) -> bool:
        return self._address is not None

    def send(self, *lines: str) -> bool:
        """One datagram of ``KEY=VALUE`` lines; True when it was handed to the kernel."""
        if self._address is None:
            return False
        data = "\n".join(lines).encode("utf-8", "replace")
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                self._sock.setblocking(False)
            self._sock.sendto(data, self._address)
        except OSError as exc:
            if not self._failed:
                self._failed = True
                log.warning("notify_failed", error=str(exc), message=lines[0] if lines else "")
            return False
        return True

    def ready(self, status: str = "") -> bool:
        return self.send("READY=1", *_status_lines(status))

    def status(self, text: str) -> bool:
        return self.send(*_status_lines(text))

    def watchdog(self) -> bool:
        return self.send("WATCHDOG=1")

    def stopping(self, status: str = "") -> bool:
        return self.send("STOPPING=1", *_status_lines(status))

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def _status_lines(text: str) -> tuple[str, ...]:
    if not text:
        return ()
    one_line = " ".join(text.split())[:MAX_STATUS_CHARS]
    return (f"STATUS={one_line}",)


async def watchdog_pinger(notifier: Notifier, interval_s: float) -> None:
    """``WATCHDOG=1`` every ``interval_s`` for as long as this event loop runs tasks."""
    log.info("watchdog", interval_s=interval_s)
    while True:
        notifier.watchdog()
        await asyncio.sleep(interval_s)


async def status_reporter(
    notifier: Notifier,
    summarize: Callable[[], Awaitable[str]],
    interval_s: float,
    *,
    sent: str = "",
) -> None:
    """``STATUS=<summary>`` whenever the summary changes (checked every ``interval_s``).

    ``sent`` is the status already sent (with ``READY=1``), so it is not repeated.
    """
    last = sent
    while True:
        await asyncio.sleep(interval_s)
        try:
            text = await summarize()
        except Exception as exc:  # a summary is cosmetic: never let it kill the task
            text = f"status unavailable: {exc}"
        if text != last:
            notifier.status(text)
            last = text
