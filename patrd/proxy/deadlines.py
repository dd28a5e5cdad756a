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

Which queue a connection is in is kept on the connection itself
(``deadline_queue``, a slot of the proxy's client), not in a dict here: a
dict entry per connection cost about 50 bytes per idle connection.
"""

from __future__ import annotations

import asyncio
from typing import Protocol

__all__ = ["Deadlines", "Expiring", "Queue"]


class Expiring(Protocol):
    """A connection with a deadline: told once when it passes."""

    # The queue its deadline is in (None: no deadline); set by Deadlines only.
    deadline_queue: Queue | None

    def deadline_passed(self) -> None: ...


class Queue:
    """The connections with one delay, in deadline order (inside :class:`Deadlines`)."""

    __slots__ = ("entries", "last", "now", "timer")

    def __init__(self) -> None:
        self.entries: dict[Expiring, float] = {}  # insertion order = deadline order
        self.timer: asyncio.TimerHandle | None = None
        # The last deadline set and the loop time it was set at: deadlines set
        # at the same loop time share one float (uvloop's clock moves by whole
        # milliseconds), 32 bytes less per idle connection.
        self.now = -1.0
        self.last = 0.0


class Deadlines:
    """The deadlines of the proxy's connections (one event loop)."""

    __slots__ = ("_count", "_loop", "_queues")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._queues: dict[float, Queue] = {}
        self._count = 0  # connections with a deadline

    def __len__(self) -> int:
        return self._count

    def now(self) -> float:
        """The loop's time."""
        return self._loop.time()

    def set(self, conn: Expiring, delay: float) -> None:
        """``conn``'s deadline is ``delay`` seconds from now (replacing any earlier one)."""
        queue = self._queues.get(delay)
        if queue is None:
            queue = self._queues[delay] = Queue()
        old = conn.deadline_queue
        if old is queue:
            entries = queue.entries
            del entries[conn]  # to the end: its deadline is the latest now
        else:
            if old is not None:
                del old.entries[conn]
            else:
                self._count += 1
            conn.deadline_queue = queue
            entries = queue.entries
        loop = self._loop
        now = loop.time()
        if now == queue.now:
            deadline = queue.last
        else:
            queue.now = now
            deadline = queue.last = now + delay
        entries[conn] = deadline
        if queue.timer is None:
            queue.timer = loop.call_at(deadline, self._fire, queue)

    def clear(self, conn: Expiring) -> None:
        """``conn`` has no deadline any more."""
        queue = conn.deadline_queue
        if queue is not None:
            conn.deadline_queue = None
            del queue.entries[conn]
            self._count -= 1

    def close(self) -> None:
        """Cancel the timers; no deadline passes any more."""
        for queue in self._queues.values():
            if queue.timer is not None:
                queue.timer.cancel()
                queue.timer = None
            for conn in queue.entries:
                conn.deadline_queue = None
            queue.entries.clear()
        self._count = 0

    def _fire(self, queue: Queue) -> None:
        queue.timer = None
        now = self._loop.time()
        expired: list[Expiring] = []
        following = 0.0
        for conn, deadline in queue.entries.items():
            if deadline > now:
                following = deadline
                break
            expired.append(conn)
        entries = queue.entries
        for conn in expired:
            del entries[conn]
            conn.deadline_queue = None
        self._count -= len(expired)
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
