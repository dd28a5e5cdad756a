"""What one idle plain-HTTP keep-alive client connection costs inside patrd's proxy (issue 20).

Usage::

    .venv/bin/python -m scripts.bench.idle_conn_profile [--conns 5000] [--kinds route,404]
        [--peers 1] [--limits] [--trace] [--wrk 3]

Starts one real :class:`patrd.proxy.server.ProxyServer` (uvloop, one
process, no workers) in a subprocess on loopback, with one route to an origin
served by this process. For each kind of request (``route``: proxied to the
origin; ``404``: answered by the proxy itself, which leaves different state
behind), it opens ``--conns`` keep-alive connections that each make one
request, read the whole answer and then idle, and reports the server
process's growth per connection (after ``gc.collect()``):

* ``rss``: resident set size (``/proc/self/statm``);
* ``malloc``: glibc ``mallinfo2()`` in-use bytes (``uordblks + hblkhd``);
* ``pymalloc``: bytes in pymalloc's allocated blocks (``sys._debugmallocstats``),
  where Python objects under 512 bytes live (glibc does not see them);
* with ``--trace``: the top allocation sites by line (``tracemalloc``,
  started in the server before the connections; it adds its own memory to the
  figures above, so read those from a run without ``--trace``).

A warm-up of 300 connections (opened, used, closed) runs first, so the
figures are what one more idle connection costs, not first-use caches.
``--peers K`` spreads the client connections over K source addresses
(127.0.0.1 … 127.0.0.250, 127.0.1.1 …), as distinct clients would; ``--limits`` turns the
per-client limits on for loopback (by default loopback is exempt), so their
per-client counters count too.

``--wrk N``: the keep-alive CPU instead: N runs of ``wrk -t1 -c64 -d4s`` to
the proxied route, reporting the server process's CPU time (user + system,
``/proc/PID/stat``) per request, which a busy machine disturbs less than
requests per second.

``--bare``: a bare uvloop server as well (a protocol object per connection
answering each request head, nothing else): the floor of any Python server
on uvloop; what patrd spends above it is its own.

``--baseline DIR``: a second server runs the ``patrd`` package found under DIR
(``git archive REV patrd | tar -x -C DIR``), profiled after this tree's, or
with ``--wrk`` interleaved with it run by run (A/B on the same load).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import gc
import json
import os
import re
import subprocess
import sys
import tempfile
from typing import Any, cast

HOST = "idle.test"
ORIGIN_ANSWER = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello"


BARE = "uvloop bare"


# --- the server process -------------------------------------------------------------


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            [
                "arena",
                "ordblks",
                "smblks",
                "hblks",
                "hblkhd",
                "usmblks",
                "fsmblks",
                "uordblks",
                "fordblks",
                "keepcost",
            ]
        )
    ]


def _pymalloc_bytes() -> int:
    """Bytes in pymalloc's allocated blocks (``sys._debugmallocstats`` writes to fd 2)."""
    with tempfile.TemporaryFile() as out:
        saved = os.dup(2)
        try:
            os.dup2(out.fileno(), 2)
            sys._debugmallocstats()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        out.seek(0)
        text = out.read().decode("latin-1")
    found = re.search(r"# bytes in allocated blocks\s*=\s*([\d,]+)", text)
    return int(found.group(1).replace(",", "")) if found else 0


def _measure() -> dict[str, int]:
    gc.collect()
    libc = ctypes.CDLL("libc.so.6")
    libc.mallinfo2.restype = _MallInfo2
    info = libc.mallinfo2()
    with open("/proc/self/statm") as f:
        rss = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    return {"rss": rss, "malloc": info.uordblks + info.hblkhd, "pymalloc": _pymalloc_bytes()}


def _reply(answer: dict[str, Any]) -> None:
    print("@@", json.dumps(answer), flush=True)  # stdout has structlog's lines too


class _Bare(asyncio.Protocol):
    """The floor (``--bare``): a uvloop server answering each request head, no proxying."""

    def __init__(self, conns: list[_Bare]) -> None:
        self.conns = conns

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.conns.append(self)

    def data_received(self, data: bytes) -> None:
        if b"\r\n\r\n" in data:
            self.transport.write(ORIGIN_ANSWER)

    def connection_lost(self, exc: Exception | None) -> None:
        self.conns.remove(self)


async def _serve(spec: dict[str, Any]) -> None:
    import tracemalloc

    import patrd
    from patrd.proxy.router import Backend, Route, RouteStatus, RoutingTable
    from patrd.proxy.server import ProxyOptions, ProxyServer

    if spec["trace"]:
        tracemalloc.start(1)
    route = Route(
        host=HOST,
        path_prefix="/",
        deployment="idle",
        port=80,
        status=RouteStatus.RUNNING,
        backends=(Backend("idle-0", "127.0.0.1", spec["origin"]),),
    )
    extra: dict[str, Any] = {}
    if spec["limits"]:  # per-client limits on for loopback, never reached here
        extra = {
            "rate_limit_exempt": (),
            "max_connections_per_ip": 1_000_000,
            "rate_limit_rps": 1e9,
            "rate_limit_burst": 1_000_000_000,
        }
    options = ProxyOptions(max_connections=1_000_000, idle_timeout_s=900.0, **extra)
    proxy: ProxyServer | None = None
    bare: list[_Bare] = []
    if spec.get("bare"):
        server = await asyncio.get_running_loop().create_server(
            lambda: _Bare(bare), "127.0.0.1", 0, backlog=4096
        )
        port = int(server.sockets[0].getsockname()[1])
    else:
        proxy = ProxyServer(options, RoutingTable.build([route]))
        [(_, port)] = await proxy.start([("127.0.0.1", 0)])
    _reply({"port": port, "patrd": os.path.dirname(os.path.dirname(patrd.__file__))})
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    base: dict[str, int] = {}
    snapshot: Any = None
    while line := (await reader.readline()).decode().strip():
        if line == "snap":
            base = _measure()
            snapshot = tracemalloc.take_snapshot() if spec["trace"] else None
            _reply({"clients": len(proxy._clients if proxy else bare), **base})
        elif line == "diff":
            now = _measure()
            out: dict[str, Any] = {"clients": len(proxy._clients if proxy else bare)}
            out.update({key: now[key] - base[key] for key in now})
            if snapshot is not None:
                stats = tracemalloc.take_snapshot().compare_to(snapshot, "lineno")
                out["sites"] = [
                    [str(s.traceback[0]), s.size_diff, s.count_diff]
                    for s in stats[:14]
                    if s.size_diff
                ]
            _reply(out)
    if proxy is not None:
        await proxy.stop(2.0)


# --- the driver ---------------------------------------------------------------------


class _Origin(asyncio.Protocol):
    """Answers every request head with a fixed 200 (keep-alive)."""

    transport: asyncio.Transport

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        for _ in range(data.count(b"\r\n\r\n")):
            self.transport.write(ORIGIN_ANSWER)


async def _open(
    port: int, n: int, host: str, peers: int
) -> list[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    request = f"GET / HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()
    gate = asyncio.Semaphore(200)

    async def one(i: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        async with gate:
            k = i % peers  # 127.0.0.1 … 127.0.0.250, 127.0.1.1 …
            source = (f"127.0.{k // 250}.{1 + k % 250}", 0) if peers > 1 else None
            reader, writer = await asyncio.open_connection(
                "127.0.0.1", port, local_addr=source, limit=4096
            )
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(re.search(rb"Content-Length: (\d+)", head).group(1))  # type: ignore[union-attr]
            await reader.readexactly(length)
            return reader, writer

    return list(await asyncio.gather(*(one(i) for i in range(n))))


async def _close(held: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]]) -> None:
    for _, writer in held:
        writer.close()
    await asyncio.sleep(1.0)


class _Server:
    def __init__(self, name: str, origin: int, args: argparse.Namespace, tree: str | None) -> None:
        self.name = name
        spec = {"origin": origin, "trace": args.trace, "limits": args.limits, "bare": name == BARE}
        env = dict(os.environ)
        here = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        if tree is not None:  # its patrd first on the path (the current directory), then ours
            env["PYTHONPATH"] = here
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "scripts.bench.idle_conn_profile", "--serve", json.dumps(spec)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
            cwd=tree or here,
        )
        started = self.ask(None)
        self.port = int(started["port"])
        print(json.dumps({"server": name, "patrd": started["patrd"]}), flush=True)

    def ask(self, command: str | None) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        if command is not None:
            self.proc.stdin.write(command.encode() + b"\n")
            self.proc.stdin.flush()
        while True:
            line = self.proc.stdout.readline()
            if not line:
                raise RuntimeError("the server process ended")
            if line.startswith(b"@@ "):
                return dict(json.loads(line[3:]))

    def cpu_s(self) -> float:
        with open(f"/proc/{self.proc.pid}/stat") as f:
            fields = f.read().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


async def _profile(server: _Server, args: argparse.Namespace) -> None:
    for kind in args.kinds.split(","):
        host = HOST if kind == "route" else "nobody.test"  # 404: no route for it
        warm = await _open(server.port, 300, host, args.peers)
        await _close(warm)
        server.ask("snap")
        held = await _open(server.port, args.conns, host, args.peers)
        await asyncio.sleep(1.0)
        diff = server.ask("diff")
        n = args.conns
        row = {
            "server": server.name,
            "kind": kind,
            "conns": n,
            "server_clients": diff["clients"],
            "rss_per_conn": round(diff["rss"] / n),
            "malloc_per_conn": round(diff["malloc"] / n),
            "pymalloc_per_conn": round(diff["pymalloc"] / n),
            "malloc+pymalloc_per_conn": round((diff["malloc"] + diff["pymalloc"]) / n),
        }
        print(json.dumps(row), flush=True)
        for site, size, count in diff.get("sites", []):
            print(f"    {size / n:8.1f} B/conn {count / n:6.2f} blocks/conn  {site}")
        await _close(held)


async def _keepalive_cpu(servers: list[_Server], args: argparse.Namespace) -> None:
    for run in range(args.wrk):
        for server in servers:  # interleaved, so that the machine's noise spreads over all
            await _wrk_once(server, run)


async def _wrk_once(server: _Server, run: int) -> None:
    url = f"http://127.0.0.1:{server.port}/"
    before = server.cpu_s()
    wrk = await asyncio.create_subprocess_exec(  # the origin answers in this loop meanwhile
        *("wrk", "-t1", "-c64", "-d4s", "-H", f"Host: {HOST}", url),
        stdout=subprocess.PIPE,
    )
    out = (await wrk.communicate())[0].decode()
    used = server.cpu_s() - before
    found = re.search(r"(\d+) requests in", out)
    requests = int(found.group(1)) if found else 0
    print(
        json.dumps(
            {
                "server": server.name,
                "run": run,
                "requests": requests,
                "rps": round(requests / 4),
                "server_cpu_us_per_request": round(used / requests * 1e6, 2) if requests else None,
            }
        ),
        flush=True,
    )
    await asyncio.sleep(0.5)


async def _drive(args: argparse.Namespace) -> None:
    loop = asyncio.get_running_loop()
    origin = await loop.create_server(_Origin, "127.0.0.1", 0, backlog=4096)
    origin_port = int(origin.sockets[0].getsockname()[1])
    servers = [_Server("this tree", origin_port, args, None)]
    if args.bare:
        servers.append(_Server(BARE, origin_port, args, None))
    if args.baseline:
        servers.append(_Server("baseline", origin_port, args, args.baseline))
    try:
        if args.wrk:
            await _keepalive_cpu(servers, args)
        else:
            for server in servers:
                await _profile(server, args)
    finally:
        for server in servers:
            server.close()
        origin.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    parser.add_argument("--conns", type=int, default=5000)
    parser.add_argument("--kinds", default="route,404")
    parser.add_argument("--peers", type=int, default=1)
    parser.add_argument("--limits", action="store_true")
    parser.add_argument("--trace", action="store_true")
    parser.add_argument("--bare", action="store_true", help="also a bare uvloop server (floor)")
    parser.add_argument(
        "--baseline", help="also serve the patrd package under this directory (A/B)"
    )
    parser.add_argument("--wrk", type=int, default=0, help="keep-alive CPU: this many wrk runs")
    args = parser.parse_args()
    from patrd.proxy.runtime import run_event_loop

    if args.serve:
        run_event_loop(_serve(json.loads(args.serve)), "uvloop")
        return
    with contextlib.suppress(KeyboardInterrupt):
        run_event_loop(_drive(args), "uvloop")


if __name__ == "__main__":
    main()
