"""patrd/proxy/deadlines.py: one timer per delay, connections expire in deadline order."""

from __future__ import annotations

import asyncio

from patrd.proxy.deadlines import Deadlines, Queue


class Conn:
    def __init__(self, name: str, log: list[str], deadlines: Deadlines | None = None) -> None:
        self.name = name
        self.log = log
        self.deadlines = deadlines
        self.again: float | None = None  # set a new deadline when told
        self.deadline_queue: Queue | None = None

    def deadline_passed(self) -> None:
        self.log.append(self.name)
        if self.again is not None and self.deadlines is not None:
            delay, self.again = self.again, None
            self.deadlines.set(self, delay)


async def test_expire_in_order_one_timer_per_delay() -> None:
    loop = asyncio.get_running_loop()
    deadlines = Deadlines(loop)
    log: list[str] = []
    a, b, c = Conn("a", log), Conn("b", log), Conn("c", log)
    deadlines.set(a, 0.05)
    deadlines.set(b, 0.05)
    deadlines.set(c, 0.02)
    assert len(deadlines) == 3
    timers = [q.timer for q in deadlines._queues.values()]
    assert len(timers) == 2 and all(t is not None for t in timers)
    await asyncio.sleep(0.03)
    assert log == ["c"]
    await asyncio.sleep(0.05)
    assert log == ["c", "a", "b"]
    assert len(deadlines) == 0


async def test_set_again_moves_the_deadline_and_clear_removes_it() -> None:
    deadlines = Deadlines(asyncio.get_running_loop())
    log: list[str] = []
    a, b = Conn("a", log), Conn("b", log)
    deadlines.set(a, 0.05)
    deadlines.set(b, 0.05)
    await asyncio.sleep(0.03)
    deadlines.set(a, 0.05)  # a moves behind b: its timer fires early and re-arms
    deadlines.clear(b)
    await asyncio.sleep(0.04)
    assert log == []
    await asyncio.sleep(0.04)
    assert log == ["a"]
    deadlines.clear(a)  # cleared twice: nothing


async def test_a_told_connection_may_set_a_new_deadline() -> None:
    deadlines = Deadlines(asyncio.get_running_loop())
    log: list[str] = []
    a = Conn("a", log, deadlines)
    a.again = 0.02
    deadlines.set(a, 0.02)
    await asyncio.sleep(0.1)
    assert log == ["a", "a"]
    assert len(deadlines) == 0


async def test_one_failing_callback_does_not_stop_the_others() -> None:
    loop = asyncio.get_running_loop()
    errors: list[object] = []
    loop.set_exception_handler(lambda _, ctx: errors.append(ctx.get("exception")))
    deadlines = Deadlines(loop)
    log: list[str] = []

    class Bad(Conn):
        def deadline_passed(self) -> None:
            raise RuntimeError("boom")

    deadlines.set(Bad("bad", log), 0.01)
    deadlines.set(Conn("good", log), 0.01)
    await asyncio.sleep(0.05)
    assert log == ["good"]
    assert len(errors) == 1 and isinstance(errors[0], RuntimeError)


async def test_close_cancels_everything() -> None:
    deadlines = Deadlines(asyncio.get_running_loop())
    log: list[str] = []
    deadlines.set(Conn("a", log), 0.01)
    deadlines.close()
    await asyncio.sleep(0.03)
    assert log == [] and len(deadlines) == 0


async def test_deadlines_set_at_the_same_loop_time_share_one_float() -> None:
    loop = asyncio.get_running_loop()
    deadlines = Deadlines(loop)
    log: list[str] = []
    a, b, c = Conn("a", log), Conn("b", log), Conn("c", log)
    now = loop.time()
    clock = loop.time
    loop.time = lambda: now  # type: ignore[method-assign]
    try:
        deadlines.set(a, 60.0)
        deadlines.set(b, 60.0)
    finally:
        loop.time = clock  # type: ignore[method-assign]
    deadlines.set(c, 60.0)
    [queue] = deadlines._queues.values()
    assert queue.entries[a] is queue.entries[b]  # one float: 32 bytes per idle connection
    assert queue.entries[a] == now + 60.0
    assert queue.entries[c] >= queue.entries[a]
    assert a.deadline_queue is queue and len(deadlines) == 3
    deadlines.clear(a)
    assert a.deadline_queue is None and len(deadlines) == 2
    deadlines.close()
    assert b.deadline_queue is None and c.deadline_queue is None and len(deadlines) == 0
