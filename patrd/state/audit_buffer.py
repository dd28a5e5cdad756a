"""Refused API calls go to the audit log in batches.

A refusal (a missing or wrong token, a scope too small) costs the caller
nothing, so a hostile client could make every one of its requests a
synchronous SQLite transaction (an fsync each, ``synchronous=FULL``) and slow
every write of the daemon. Refusals are therefore queued and written
together, one transaction every ``flush_s``; at most ``max_pending`` wait,
beyond that they are counted and one summary row says how many were not
recorded. Accepted mutating calls are not buffered: they are written as
they finish (patrd/api/access.py).
"""

from __future__ import annotations

import asyncio
import time

import structlog

from patrd.model.errors import PatrdError
from patrd.state.tokens import AccessStore, AuditRow

log = structlog.get_logger("patrd.audit")

FLUSH_S = 0.25
MAX_PENDING = 1000


class RefusalBuffer:
    def __init__(
        self, access: AccessStore, *, flush_s: float = FLUSH_S, max_pending: int = MAX_PENDING
    ) -> None:
        self._access = access
        self._flush_s = flush_s
        self._max_pending = max_pending
        self._rows: list[AuditRow] = []
        self._dropped = 0
        self._task: asyncio.Task[None] | None = None
        self._writing = False

    def add(self, row: AuditRow) -> None:
        """Queue ``row`` (no await: the refusal is answered at once)."""
        if len(self._rows) >= self._max_pending:
            self._dropped += 1
        else:
            self._rows.append(row)
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._flush_later())

    @property
    def pending(self) -> int:
        return len(self._rows)

    async def flush(self) -> None:
        rows, self._rows = self._rows, []
        dropped, self._dropped = self._dropped, 0
        if dropped:
            log.warning("audit.refusals_not_recorded", count=dropped)
            rows.append(
                AuditRow(
                    time.time(),
                    "patrd",
                    "-",
                    "-",
                    None,
                    0,
                    f"{dropped} more refused calls were not recorded "
                    f"(over {self._max_pending} within {self._flush_s} s)",
                )
            )
        try:
            await self._access.append_audit_rows(rows)
        except PatrdError as exc:
            log.error("audit.write_failed", rows=len(rows), error=str(exc))

    async def close(self) -> None:
        """Write what is queued (the daemon is stopping)."""
        task, self._task = self._task, None
        if task is not None:
            if not self._writing:
                task.cancel()  # only ever while it sleeps: this flush writes its rows
            await asyncio.gather(task, return_exceptions=True)
        await self.flush()

    async def _flush_later(self) -> None:
        await asyncio.sleep(self._flush_s)
        self._writing = True
        try:
            await self.flush()
        finally:
            self._writing = False
