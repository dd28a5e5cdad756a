"""Connection deadlines in one FIFO queue per delay: a timer per queue, not per connection.

Every client connection of the proxy has at most one deadline (header,
body, keep-alive idle, send...), and most are idle keep-alive connections
waiting on the same ``idle_timeout_s``. A timer per connection (an asyncio
or uvloop ``TimerHandle``, its libuv timer, its bound callback) cost about
600 bytes per idle connection and a timer created and cancelled per
connection (``scripts/bench/proxy --idle``, ``--close``).

Here a deadline is ``now + delay``; connections with the same ``delay`` are
kept in one insertion-ordered dict, so its order is the order of their
deadlines (time only goes forward). Setting a deadline moves the connection
to the end of its delay's queue (two dict operations). Each queue has one
timer, armed for its first entry; when it fires it expires every entry whose
deadline has passed and re-arms for the next one. A moved entry leaves its
queue's timer armed for an earlier time: it then fires early and re-arms
(lazily, as the per-connection timer did before). The proxy has a handful of
distinct delays (its options, per-route timeouts, the linger time), hence a
handful of timers.
"""

from __future__ import annotations

import asyncio
from typing import Protocol

__all__ = ["Deadlines", "Expiring"]


class Expiring(Protocol):
    """A connection with a deadline: told once when it passes."""

    def deadline_passed(self) -> None: ...


class _Queue:
    __slots__ = ("entries", "timer")

    def __init__(self) -> None:
        self.entries: dict[Expiring, float] = {}  # insertion order = deadline order
        self.timer: asyncio.TimerHandle | None = None


class Deadlines:
    """The deadlines of the proxy's connections (one event loop)."""

    __slots__ = ("_loop", "_queues", "_where")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._queues: dict[float, _Queue] = {}
        self._where: dict[Expiring, _Queue] = {}  # the queue each connection is in

    def __len__(self) -> int:
        return len(self._where)

    def set(self, conn: Expiring, delay: float) -> None:
        """``conn``'s deadline is ``delay`` seconds from now (replacing any earlier one)."""
        queue = self._queues.get(delay)
        if queue is None:
            queue = self._queues[delay] = _Queue()
        where = self._where
        old = where.get(conn)
        if old is queue:
            entries = queue.entries
            del entries[conn]  # to the end: its deadline is the latest now
        else:
            if old is not None:
                del old.entries[conn]
            where[conn] = queue
            entries = queue.entries
        loop = self._loop
        entries[conn] = deadline = loop.time() + delay
        if queue.timer is None:
            queue.timer = loop.call_at(deadline, self._fire, queue)

    def clear(self, conn: Expiring) -> None:
        """``conn`` has no deadline any more."""
        queue = self._where.pop(conn, None)
        if queue is not None:
            del queue.entries[conn]

    def close(self) -> None:
        """Cancel the timers; no deadline passes any more."""
        for queue in self._queues.values():
            if queue.timer is not None:
                queue.timer.cancel()
                queue.timer = None
            queue.entries.clear()
        self._where.clear()

    def _fire(self, queue: _Queue) -> None:
        queue.timer = None
        now = self._loop.time()
        expired: list[Expiring] = []
        following = 0.0
        for conn, deadline in queue.entries.items():
            if deadline > now:
                following = deadline
                break
            expired.append(conn)
        entries, where = queue.entries, self._where
        for conn in expired:
            del entries[conn]
            del where[conn]
        if entries:
            queue.timer = self._loop.call_at(following, self._fire, queue)
        # Last: a connection told may set a new deadline (into this queue, too).
        for conn in expired:
            try:
                conn.deadline_passed()
            except Exception as exc:  # one connection's failure is not the others'
                self._loop.call_exception_handler(
                    {"message": "deadline callback failed", "exception": exc}
                )
