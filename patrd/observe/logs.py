"""Aggregated logs of a deployment: every instance, both streams, merged by timestamp.

* Lines come from Docker's logs endpoint (``timestamps=1``; the engine
  adapter demultiplexes stdout and stderr). Each line is tagged with its
  instance (``web-0``), container, revision and stream.
* :func:`read_logs` answers a bounded query: per container the newest
  ``tail`` lines in ``[since, until]``, merged (``heapq.merge``) with the kept
  lines of removed instances, and the newest ``tail`` of the merge returned.
* :class:`Follower` streams: it starts a follow reader per running container
  and a watcher that lists the deployment's containers every second, so new
  instances (rollouts, autoscaling, restarts) join the stream; a reader whose
  container stopped is restarted from the last timestamp it delivered when
  the container runs again. Lines pass a short reorder buffer (``HOLD_S``) so
  that lines of different instances leave in timestamp order.
* :class:`LogKeeper` keeps the logs of removed instances: the controller calls
  :meth:`LogKeeper.on_remove` before it removes a container; the keeper stops
  it (the same graceful stop, so shutdown lines are kept too), copies the
  newest ``logs.keep_bytes_per_instance`` bytes into
  ``<data_dir>/logs/<deployment id>/<removed at>-<container>.jsonl`` and the
  controller then removes the container. Files are dropped after
  ``logs.retention_s``, when the deployment is deleted, and oldest first when
  all of them pass ``logs.keep_bytes_total``.
"""

from __future__ import annotations

import asyncio
import calendar
import contextlib
import heapq
import json
import os
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import structlog

from patrd.model import checks as c
from patrd.model.errors import EngineError, StoreError
from patrd.model.instances import ContainerState, Instance
from patrd.model.naming import instance_name
from patrd.model.sections import setting

DEFAULT_TAIL = 1000  # lines, when neither tail nor since is given
MAX_TAIL = 100_000
HOLD_S = 1.5  # follow: reorder buffer (covers a joining instance's first lines)
WATCH_S = 0.5  # follow: how often new containers are looked for
QUEUE_MAX = 10_000  # follow: lines buffered before readers wait (backpressure)
KEEP_TAIL_LINES = 50_000  # lines read from a removed container (then cut to bytes)


@dataclass(frozen=True)
class LogsConfig:
    """``[logs]``: logs of removed instances kept by patrd (:class:`LogKeeper`)."""

    retention_s: float = setting(
        7 * 24 * 3600.0, c.positive(), "how long logs of removed instances are kept"
    )
    keep_bytes_per_instance: int = setting(
        1024 * 1024, c.integer(0), "the newest bytes kept of each removed instance"
    )
    keep_bytes_total: int = setting(
        256 * 1024 * 1024, c.integer(0), "all deployments; oldest files go first"
    )


@dataclass(frozen=True, slots=True)
class LogLine:
    ts_ns: int
    instance: str
    container: str  # short id (12)
    revision: int
    stream: str  # stdout | stderr
    text: str
    kept: bool = False  # from a removed instance (patrd's own copy)

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "t": format_ts(self.ts_ns),
            "instance": self.instance,
            "container": self.container,
            "revision": self.revision,
            "stream": self.stream,
            "line": self.text,
        }
        if self.kept:
            body["removed"] = True
        return body

    def to_text(self) -> str:
        return f"{format_ts(self.ts_ns)} {self.instance} {self.stream}: {self.text}"


@dataclass(frozen=True, slots=True)
class LogQuery:
    tail: int | None = DEFAULT_TAIL
    since_ns: int | None = None
    until_ns: int | None = None
    instance: str | None = None  # instance name (web-0) or container id prefix

    def wants(self, instance: str, container: str) -> bool:
        if self.instance is None:
            return True
        return self.instance == instance or container.startswith(self.instance)

    def in_range(self, ts_ns: int) -> bool:
        if self.since_ns is not None and ts_ns < self.since_ns:
            return False
        return self.until_ns is None or ts_ns <= self.until_ns


# --- parsing ------------------------------------------------------------------------

_epoch_cache: dict[bytes, int] = {}


def parse_ts(raw: bytes) -> int:
    """Docker's RFC 3339 (nano) UTC timestamp → nanoseconds since the epoch."""
    head = raw[:19]  # 2024-05-01T12:34:56
    seconds = _epoch_cache.get(head)
    if seconds is None:
        seconds = calendar.timegm(time.strptime(head.decode(), "%Y-%m-%dT%H:%M:%S"))
        if len(_epoch_cache) > 4096:
            _epoch_cache.clear()
        _epoch_cache[head] = seconds
    rest = raw[19:]
    fraction = 0
    if rest[:1] == b".":
        digits = rest[1:].rstrip(b"Z")
        end = 0
        while end < len(digits) and 48 <= digits[end] <= 57:
            end += 1
        frac = digits[:end][:9]
        fraction = int(frac.ljust(9, b"0")) if frac else 0
        rest = digits[end:]
    offset = 0
    if rest[:1] in (b"+", b"-") and len(rest) >= 6:  # not UTC (Docker always sends Z)
        sign = 1 if rest[:1] == b"+" else -1
        offset = sign * (int(rest[1:3]) * 3600 + int(rest[4:6]) * 60)
    return (seconds - offset) * 1_000_000_000 + fraction


def format_ts(ts_ns: int) -> str:
    seconds, nanos = divmod(ts_ns, 1_000_000_000)
    base = datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{base}.{nanos:09d}Z"


def parse_frame(stream: str, payload: bytes, inst: Instance) -> LogLine | None:
    ts, sep, rest = payload.partition(b" ")
    if not sep:
        return None
    try:
        ts_ns = parse_ts(ts)
    except ValueError:
        return None
    return LogLine(
        ts_ns=ts_ns,
        instance=instance_name(inst.deployment, inst.slot),
        container=inst.container_id[:12],
        revision=inst.revision,
        stream=stream,
        text=rest.rstrip(b"\r\n").decode("utf-8", "replace"),
    )


# --- engine and store, as this module sees them ------------------------------------------


class LogEngine(Protocol):
    def logs(
        self,
        container_id: str,
        *,
        since: float | None = None,
        until: float | None = None,
        tail: int | None = None,
        follow: bool = False,
    ) -> AsyncIterator[tuple[str, bytes]]: ...

    async def stop(self, container_id: str, stop_timeout_s: int) -> None: ...

    async def list_instances(self, deployment_id: str | None = None) -> list[Instance]: ...


async def container_lines(
    engine: LogEngine, inst: Instance, query: LogQuery, *, follow: bool = False
) -> AsyncIterator[LogLine]:
    since = query.since_ns / 1e9 if query.since_ns is not None else None
    until = query.until_ns / 1e9 if query.until_ns is not None and not follow else None
    async for stream, payload in engine.logs(
        inst.container_id, since=since, until=until, tail=query.tail, follow=follow
    ):
        line = parse_frame(stream, payload, inst)
        if line is not None and query.in_range(line.ts_ns):
            yield line


async def read_logs(
    engine: LogEngine,
    instances: Sequence[Instance],
    query: LogQuery,
    keeper: LogKeeper | None = None,
    deployment_id: str = "",
) -> list[LogLine]:
    """The newest ``query.tail`` lines of every instance (and kept ones), in timestamp order."""

    async def one(inst: Instance) -> list[LogLine]:
        try:
            return [line async for line in container_lines(engine, inst, query)]
        except EngineError:
            return []  # removed meanwhile: its kept copy (if any) stands in

    wanted = [
        i for i in instances if query.wants(instance_name(i.deployment, i.slot), i.container_id)
    ]
    per_container = list(await asyncio.gather(*(one(i) for i in wanted)))
    if keeper is not None and deployment_id:
        live = {i.container_id[:12] for i in instances}
        per_container += [
            lines
            for lines in await keeper.read(deployment_id, query)
            if lines and lines[0].container not in live
        ]
    merged = heapq.merge(*per_container, key=lambda line: line.ts_ns)
    if query.tail is None:
        return list(merged)
    return list(deque(merged, maxlen=query.tail))


class Follower:
    """Lines of a deployment as they are written, new instances included."""

    def __init__(
        self,
        engine: LogEngine,
        deployment_id: str,
        query: LogQuery,
        *,
        after: dict[str, int] | None = None,
        alive: Callable[[], Awaitable[bool]] | None = None,
        watch_s: float = WATCH_S,
        hold_s: float = HOLD_S,
    ) -> None:
        self._engine = engine
        self._deployment_id = deployment_id
        self._query = query
        self._last: dict[str, int] = dict(after or {})  # container id → last ts delivered
        self._alive = alive
        self._watch_s = watch_s
        self._hold_ns = int(hold_s * 1e9)
        self._queue: asyncio.Queue[LogLine] = asyncio.Queue(QUEUE_MAX)
        self._readers: dict[str, asyncio.Task[None]] = {}
        self._ended = False

    async def lines(self) -> AsyncIterator[LogLine]:
        watcher = asyncio.create_task(self._watch(), name="logs-watch")
        heap: list[tuple[int, int, LogLine]] = []
        seq = 0
        try:
            while not (self._ended and not heap and self._queue.empty()):
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(0.1):
                        line = await self._queue.get()
                        heapq.heappush(heap, (line.ts_ns, seq, line))
                        seq += 1
                while not self._queue.empty():
                    line = self._queue.get_nowait()
                    heapq.heappush(heap, (line.ts_ns, seq, line))
                    seq += 1
                horizon = time.time_ns() - self._hold_ns
                while heap and (heap[0][0] <= horizon or self._ended):
                    yield heapq.heappop(heap)[2]
        finally:
            watcher.cancel()
            for task in self._readers.values():
                task.cancel()
            await asyncio.gather(watcher, *self._readers.values(), return_exceptions=True)

    async def _watch(self) -> None:
        try:
            while True:
                if self._alive is not None and not await self._alive():
                    return
                with contextlib.suppress(EngineError):
                    for inst in await self._engine.list_instances(self._deployment_id):
                        self._ensure_reader(inst)
                await asyncio.sleep(self._watch_s)
        finally:
            self._ended = True

    def _ensure_reader(self, inst: Instance) -> None:
        cid = inst.container_id
        task = self._readers.get(cid)
        if task is not None and not task.done():
            return
        if inst.state is not ContainerState.RUNNING:
            return
        if not self._query.wants(instance_name(inst.deployment, inst.slot), cid):
            return
        self._readers[cid] = asyncio.create_task(self._read(inst), name=f"logs-{cid[:12]}")

    async def _read(self, inst: Instance) -> None:
        cid = inst.container_id
        last = self._last.get(cid)
        since = last if last is not None else self._query.since_ns
        query = LogQuery(tail=None, since_ns=since, until_ns=self._query.until_ns)
        with contextlib.suppress(EngineError):
            async for line in container_lines(self._engine, inst, query, follow=True):
                if last is not None and line.ts_ns <= last:
                    continue  # delivered before this reader (re)started
                last = line.ts_ns
                self._last[cid] = last
                await self._queue.put(line)


# --- kept logs of removed instances --------------------------------------------------------


class LogKeeper:
    """Copies of removed instances' logs under ``<data_dir>/logs`` (bounded)."""

    def __init__(
        self, engine: LogEngine, directory: Path, config: LogsConfig, stop_timeout_s: int
    ) -> None:
        self._engine = engine
        self.directory = directory
        self._config = config
        self._stop_timeout_s = stop_timeout_s
        self.kept = 0  # files written since start
        self._log = structlog.get_logger("patrd.kit.log_setup")

    async def on_remove(self, inst: Instance) -> None:
        """Stop ``inst`` and keep its newest lines; never raises (removal goes on)."""
        if self._config.keep_bytes_per_instance <= 0:
            return
        try:
            async with asyncio.timeout(self._stop_timeout_s + 30):
                await self._engine.stop(inst.container_id, self._stop_timeout_s)
                lines: deque[bytes] = deque()
                size = 0
                limit = self._config.keep_bytes_per_instance
                async for stream, payload in self._engine.logs(
                    inst.container_id, tail=KEEP_TAIL_LINES
                ):
                    line = parse_frame(stream, payload, inst)
                    if line is None:
                        continue
                    encoded = json.dumps(
                        {"t": line.ts_ns, "s": line.stream, "m": line.text}, ensure_ascii=False
                    ).encode()
                    lines.append(encoded)
                    size += len(encoded) + 1
                    while size > limit and lines:
                        size -= len(lines.popleft()) + 1
            if lines:
                await asyncio.to_thread(self._write, inst, list(lines))
                self.kept += 1
        except (EngineError, OSError, TimeoutError) as exc:
            self._log.warning(
                "logs_not_kept", container=inst.container_name, error=str(exc) or repr(exc)
            )

    def _write(self, inst: Instance, lines: list[bytes]) -> None:
        folder = self.directory / inst.deployment_id
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        removed_ms = int(time.time() * 1000)
        path = folder / f"{removed_ms}-{inst.container_id[:12]}.jsonl"
        meta = {
            "instance": instance_name(inst.deployment, inst.slot),
            "container": inst.container_id[:12],
            "revision": inst.revision,
            "removed_at": removed_ms / 1000,
        }
        tmp = path.with_suffix(".tmp")
        with tmp.open("wb") as f:
            f.write(json.dumps(meta).encode() + b"\n")
            f.write(b"\n".join(lines) + b"\n")
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)

    async def read(self, deployment_id: str, query: LogQuery) -> list[list[LogLine]]:
        return await asyncio.to_thread(self._read, deployment_id, query)

    def _read(self, deployment_id: str, query: LogQuery) -> list[list[LogLine]]:
        folder = self.directory / deployment_id
        if not folder.is_dir():
            return []
        out: list[list[LogLine]] = []
        cutoff = time.time() - self._config.retention_s
        for path in sorted(folder.glob("*.jsonl")):
            try:
                with path.open("rb") as f:
                    meta = json.loads(f.readline())
                    if float(meta["removed_at"]) < cutoff:
                        continue
                    if not query.wants(meta["instance"], meta["container"]):
                        continue
                    lines = []
                    for raw in f:
                        item = json.loads(raw)
                        ts = int(item["t"])
                        if not query.in_range(ts):
                            continue
                        lines.append(
                            LogLine(
                                ts_ns=ts,
                                instance=str(meta["instance"]),
                                container=str(meta["container"]),
                                revision=int(meta["revision"]),
                                stream=str(item["s"]),
                                text=str(item["m"]),
                                kept=True,
                            )
                        )
            except (OSError, ValueError, KeyError):
                continue  # a damaged or vanishing file: skip it
            if query.tail is not None:
                lines = lines[-query.tail :]
            out.append(lines)
        return out

    async def trim(self, known: Iterable[str]) -> int:
        """Drop expired files, those of deleted deployments, and the oldest over the cap."""
        return await asyncio.to_thread(self._trim, set(known))

    def _trim(self, known: set[str]) -> int:
        if not self.directory.is_dir():
            return 0
        removed = 0
        cutoff = time.time() - self._config.retention_s
        files: list[tuple[float, int, Path]] = []
        for folder in self.directory.iterdir():
            if not folder.is_dir():
                continue
            for path in folder.iterdir():
                try:
                    stat = path.stat()
                except FileNotFoundError:
                    continue
                if folder.name not in known or stat.st_mtime < cutoff:
                    path.unlink(missing_ok=True)
                    removed += 1
                else:
                    files.append((stat.st_mtime, stat.st_size, path))
            if folder.name not in known:
                with contextlib.suppress(OSError):
                    folder.rmdir()
        total = sum(size for _, size, _ in files)
        for _, size, path in sorted(files):
            if total <= self._config.keep_bytes_total:
                break
            path.unlink(missing_ok=True)
            total -= size
            removed += 1
        return removed

    async def run(self, known: Callable[[], Awaitable[Iterable[str]]], every_s: float) -> None:
        while True:
            try:
                removed = await self.trim(await known())
                if removed:
                    self._log.info("kept_logs_trimmed", files=removed)
            except (OSError, StoreError) as exc:
                self._log.warning("kept_logs_trim_failed", error=str(exc))
            await asyncio.sleep(every_s)
