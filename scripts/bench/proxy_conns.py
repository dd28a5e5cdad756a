"""Connection-heavy proxy benches: ``--close`` and ``--idle N`` (see scripts/bench/proxy).

Same servers as :mod:`scripts.bench.proxy_bench`, side by side in one run:
an nginx origin, nginx and Caddy as proxies, and patrd's proxy as the daemon
builds it (its workers), all serving the same ``localhost`` ECDSA P-256
certificate from patrd's local CA, each with its own defaults for session
resumption (tickets on everywhere).

``--close``: ``wrk -H 'Connection: close'``, so every request is a new
connection: connections (handshakes, over HTTPS) per second, median of
``--runs``, interleaved. wrk keeps the session of its last connection and
offers it on the next one (``SSL_clear``), so these are mostly resumed
handshakes, as with returning browsers; the ``resumed`` column is measured
apart: the share of 20 fresh connections, each offering the previous one's
session, that resumed.

``--idle N``: N keep-alive connections to each server in turn (one request
each, then held open), HTTP then HTTPS, each scheme on freshly started
servers (a heap grown by the first round would be reused by the second and
hide its cost: Caddy's HTTPS figure was 3.8 KB instead of 24 KB that way);
the server's RSS (the process tree) before and while holding them: bytes per
idle connection.

Two more targets put patrd's figures in context:

* ``patrd before`` (``--baseline DIR``): an older patrd source tree (``git
  archive REV patrd scripts | tar -x -C DIR``) served the same way, in the
  same run, so before and after share the machine's load;
* ``uvloop bare``: the floor of any Python server on uvloop and the ``ssl``
  module: as many processes as patrd has workers (``SO_REUSEPORT``), patrd's
  listener TLS context (SNI, tickets) terminated by patrd's TLS layer
  (:mod:`patrd.proxy.tls_server`), and a fixed 200 answer per request, no
  proxying. What patrd spends above it is its own.

``--close`` also reads the CPU time (user + system) of each server's
processes around every run: CPU milliseconds per connection, which a busy
machine disturbs much less than connections per second. ``cores`` is what the
server used (rate times CPU per connection) and ``wrk ms`` the client's own CPU
per connection. On a 2-core box the client, its threads always runnable
(wrk polls a connection in its TLS handshake on writability, so it spins
until the server's first flight comes), takes about one core whatever the
server does: each server gets about the other one, and its rate is about
that core divided by its CPU per connection.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

from scripts.bench.proxy_bench import (
    BODY,
    HOST,
    MiB,
    _nginx,
    _popen,
    bench_hosts,
    caddy_config,
    free_port,
    loadavg,
    make_certs,
    nginx_origin_config,
    nginx_proxy_config,
    process_tree,
    rss_bytes,
    stop_servers,
    wait_port,
    wrk,
)

PATRD = "patrd"
IDLE_TIMEOUT_S = 900  # --idle: every server keeps its idle clients longer than they take to open
BEFORE = "patrd before"
BARE = "uvloop bare"
RESUME_PROBES = 20


def start_servers(
    work: Path,
    idle: int,
    log: Any,
    procs: list[subprocess.Popen[bytes]],
    baseline: Path | None = None,
    bare: bool = True,
) -> tuple[dict[str, dict[str, int]], dict[str, int], Path]:
    """The origin, nginx, Caddy and patrd (the daemon's defaults): ports, pids, the CA file."""
    work.mkdir(parents=True, exist_ok=True)
    hosts = bench_hosts(50)
    cert, key = make_certs(work, hosts)
    origin = free_port()
    procs.append(_popen(_nginx(nginx_origin_config(work, origin)), log))
    ports: dict[str, dict[str, int]] = {}
    pids: dict[str, int] = {}
    ports["nginx"] = {"http": free_port(), "https": free_port()}
    conf = nginx_proxy_config(
        work, origin, ports["nginx"]["http"], ports["nginx"]["https"], cert, key
    )
    if idle:  # room for the idle clients in each worker (nginx's default is 512)
        text = conf.read_text().replace("worker_connections 8192", "worker_connections 32768")
        text = text.replace(
            "keepalive_requests", f"keepalive_timeout {IDLE_TIMEOUT_S}s;\n    keepalive_requests"
        )
        conf.write_text(text)
    procs.append(_popen(_nginx(conf), log))
    pids["nginx"] = procs[-1].pid
    ports["caddy"] = {"http": free_port(), "https": free_port()}
    conf = caddy_config(work, origin, ports["caddy"]["http"], ports["caddy"]["https"], cert, key)
    if idle:
        text = conf.read_text().replace(
            "    admin off\n",
            "    admin off\n    servers {\n        timeouts {\n"
            f"            idle {IDLE_TIMEOUT_S}s\n        }}\n    }}\n",
            1,
        )
        conf.write_text(text)
    procs.append(
        _popen(
            ["caddy", "run", "--config", str(conf), "--adapter", "caddyfile"],
            log,
            env={**os.environ, "HOME": str(work), "XDG_DATA_HOME": str(work)},
        )
    )
    pids["caddy"] = procs[-1].pid
    from patrd.proxy.front import ProxyRuntime

    runtime = ProxyRuntime()
    http_port, https_port = free_port(), free_port()
    spec: dict[str, Any] = {
        "http": http_port,
        "https": https_port,
        "origin": origin,
        "certs": str(work / "certs"),
        "hosts": hosts,
        "event_loop": str(runtime.event_loop),
        "workers": runtime.resolved_workers(),
        # The cap is on purpose (10,000 by default): held above the idle clients here.
        "max_connections": max(10000, idle * 2),
        **({"idle_timeout_s": IDLE_TIMEOUT_S} if idle else {}),
    }
    ports[PATRD] = {"http": http_port, "https": https_port}
    argv = [sys.executable, "-m", "scripts.bench.proxy_bench", "--serve-patrd", json.dumps(spec)]
    procs.append(_popen(argv, log))
    pids[PATRD] = procs[-1].pid
    if baseline is not None:
        old = {**spec, "http": free_port(), "https": free_port()}
        ports[BEFORE] = {"http": int(old["http"]), "https": int(old["https"])}
        # Its patrd (first on the path, in its workers too), this bench's scripts.
        tree = work / "baseline-path"
        tree.mkdir()
        (tree / "patrd").symlink_to(baseline.resolve() / "patrd")
        (tree / "scripts").symlink_to(Path(__file__).resolve().parent.parent)
        env = {**os.environ, "PYTHONPATH": str(tree)}
        argv = [sys.executable, "-m", "scripts.bench.proxy_bench", "--serve-patrd", json.dumps(old)]
        procs.append(
            subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=tree)
        )
        pids[BEFORE] = procs[-1].pid
    if bare:
        ports[BARE] = {"http": free_port(), "https": free_port()}
        spec_bare = {**ports[BARE], "certs": str(work / "certs"), "processes": spec["workers"]}
        argv = [sys.executable, "-m", "scripts.bench.proxy_conns", json.dumps(spec_bare)]
        procs.append(_popen(argv, log))
        pids[BARE] = procs[-1].pid
    for by_scheme in [{"http": origin}, *ports.values()]:
        for port in by_scheme.values():
            wait_port(port)
    time.sleep(1.0)
    return ports, pids, work / "local-ca" / "ca.pem"


def tree_rss(pid: int) -> int:
    return sum(rss_bytes(p) for p in process_tree(pid))


def tree_cpu_s(pid: int) -> float:
    """CPU seconds (user + system) of ``pid`` and its descendants so far."""
    ticks = 0
    for p in process_tree(pid):
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rpartition(")")[2].split()
            ticks += int(fields[11]) + int(fields[12])
        except (OSError, ValueError, IndexError):
            continue
    return ticks / os.sysconf("SC_CLK_TCK")


# --- the floor: a bare uvloop server ------------------------------------------------

_BARE_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 22\r\n"
_BARE_BODY = b"hello from the origin\n"


class _Bare(asyncio.Protocol):
    """A fixed 200 per request head; closes after it on ``Connection: close``."""

    __slots__ = ("transport",)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        if b"\r\n\r\n" in data:
            if b"close" in data.lower():
                self.transport.write(_BARE_HEAD + b"Connection: close\r\n\r\n" + _BARE_BODY)
                self.transport.close()
            else:
                self.transport.write(_BARE_HEAD + b"\r\n" + _BARE_BODY)


def serve_bare(spec: dict[str, Any]) -> None:
    """``processes`` uvloop processes on the same ports (SO_REUSEPORT), one ticket key."""
    from patrd.tls.tickets import new_ticket_key

    spec = {**spec, "ticket_key": new_ticket_key().hex()}
    children = [
        subprocess.Popen([sys.executable, "-m", "scripts.bench.proxy_conns", json.dumps(spec), "1"])
        for _ in range(max(0, int(spec["processes"]) - 1))
    ]
    try:
        _serve_bare_one(spec)
    finally:
        for child in children:
            child.terminate()
            child.wait(10)


def _serve_bare_one(spec: dict[str, Any]) -> None:
    from patrd.proxy.deadlines import Deadlines
    from patrd.proxy.runtime import run_event_loop
    from patrd.proxy.tls_server import TLSListener
    from patrd.tls.certstore import CertStore
    from patrd.tls.tickets import set_ticket_key

    async def main() -> None:
        certs = CertStore(Path(spec["certs"]))
        certs.load_all()
        tls = certs.listener_context()
        set_ticket_key(tls, bytes.fromhex(spec["ticket_key"]))
        loop = asyncio.get_running_loop()
        deadlines = Deadlines(loop)
        for scheme in ("http", "https"):
            factory: Callable[[], asyncio.Protocol] = _Bare
            if scheme == "https":  # TLS as patrd's proxy terminates it
                factory = TLSListener(tls, _Bare, deadlines, 30.0)
            await loop.create_server(
                factory, "127.0.0.1", int(spec[scheme]), reuse_port=True, backlog=1024
            )
        stop = asyncio.Event()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        await stop.wait()

    run_event_loop(main(), "uvloop")


# --- --close ------------------------------------------------------------------------


def resumed_share(port: int, ca: Path) -> float:
    """Of RESUME_PROBES new connections, each offering the last session: how many resumed."""
    client = ssl.create_default_context(cafile=str(ca))
    session = None
    resumed = 0
    for _ in range(RESUME_PROBES + 1):
        with (
            socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
            client.wrap_socket(raw, server_hostname=HOST, session=session) as tls,
        ):
            tls.sendall(f"GET / HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n".encode())
            while tls.recv(65536):
                pass
            if session is not None and tls.session_reused:
                resumed += 1
            session = tls.session
    return resumed / RESUME_PROBES


def bench_close(
    ports: dict[str, dict[str, int]], pids: dict[str, int], ca: Path, args: argparse.Namespace
) -> list[dict[str, Any]]:
    cells = [
        (scheme, target, f"{scheme}://{HOST}:{by_scheme[scheme]}/")
        for scheme in args.schemes.split(",")
        for target, by_scheme in ports.items()
    ]
    runs: dict[tuple[str, str], list[float]] = {(s, t): [] for s, t, _ in cells}
    cpu_ms: dict[tuple[str, str], list[float]] = {(s, t): [] for s, t, _ in cells}
    cores: dict[tuple[str, str], list[float]] = {(s, t): [] for s, t, _ in cells}
    client_ms: dict[tuple[str, str], list[float]] = {(s, t): [] for s, t, _ in cells}
    errors: dict[tuple[str, str], int] = {(s, t): 0 for s, t, _ in cells}
    for _, _, url in cells:  # warm-up
        wrk(url, 1, args.connections, close=True)
    for rep in range(args.runs):
        for scheme, target, url in cells:
            cpu_before = tree_cpu_s(pids[target])
            client_before = _children_cpu_s()
            run = wrk(url, args.duration, args.connections, close=True)
            per_conn = 1000 * (tree_cpu_s(pids[target]) - cpu_before) / max(1, run.requests)
            runs[(scheme, target)].append(run.rps)
            cpu_ms[(scheme, target)].append(per_conn)
            cores[(scheme, target)].append(run.rps * per_conn / 1000)
            client = 1000 * (_children_cpu_s() - client_before) / max(1, run.requests)
            client_ms[(scheme, target)].append(client)
            errors[(scheme, target)] += run.errors
            print(
                f"  run {rep + 1} {scheme:<5} {target:<12} {run.rps:>8.0f} conn/s "
                f"{per_conn:.3f} CPU ms/conn",
                flush=True,
            )
    rows = []
    for scheme, target, _ in cells:
        ordered = sorted(runs[(scheme, target)])
        rows.append(
            {
                "scheme": scheme,
                "target": target,
                "conn_per_s": ordered[(len(ordered) - 1) // 2],
                "runs": runs[(scheme, target)],
                "cpu_ms_per_conn": round(sorted(cpu_ms[(scheme, target)])[len(ordered) // 2], 3),
                "cpu_ms_runs": [round(v, 3) for v in cpu_ms[(scheme, target)]],
                "cores": round(statistics.median(cores[(scheme, target)]), 2),
                "client_cpu_ms_per_conn": round(statistics.median(client_ms[(scheme, target)]), 3),
                "errors": errors[(scheme, target)],
                "resumed": resumed_share(ports[target]["https"], ca) if scheme == "https" else None,
            }
        )
    for row in rows:
        peers = {r["target"]: r for r in rows if r["scheme"] == row["scheme"]}
        for other in ("caddy", "nginx"):
            peer = peers.get(other)
            row[f"ratio_to_{other}"] = row["conn_per_s"] / peer["conn_per_s"] if peer else None
            row[f"cpu_ratio_to_{other}"] = (
                row["cpu_ms_per_conn"] / peer["cpu_ms_per_conn"]
                if peer and peer["cpu_ms_per_conn"]
                else None
            )
    return rows


def _children_cpu_s() -> float:
    """CPU seconds of this process's reaped children (each wrk run, once it is done)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


# --- --idle -------------------------------------------------------------------------


async def _open_idle(
    port: int, n: int, tls: ssl.SSLContext | None
) -> list[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    """n connections, one keep-alive request each (its whole answer read); returned open."""
    request = f"GET / HTTP/1.1\r\nHost: {HOST}\r\n\r\n".encode()
    gate = asyncio.Semaphore(200)  # at most this many handshakes in flight

    async def one() -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        async with gate:
            try:
                async with asyncio.timeout(30):
                    reader, writer = await asyncio.open_connection(
                        "127.0.0.1", port, ssl=tls, server_hostname=HOST if tls else None
                    )
                    writer.write(request)
                    await reader.readuntil(BODY.encode())  # so that at_eof() tells a close
                    return reader, writer
            except (OSError, TimeoutError, asyncio.IncompleteReadError, ssl.SSLError):
                return None

    opened = await asyncio.gather(*(one() for _ in range(n)))
    return [pair for pair in opened if pair is not None]


async def _hold(pid: int, port: int, n: int, tls: ssl.SSLContext | None) -> dict[str, Any]:
    before = tree_rss(pid)
    started = time.monotonic()
    held = await _open_idle(port, n, tls)
    opened_s = time.monotonic() - started
    await asyncio.sleep(2.0)
    during = tree_rss(pid)
    alive = sum(1 for reader, _ in held if not reader.at_eof())  # the server closed none
    for _, w in held:
        w.close()
    await asyncio.sleep(0.5)
    return {
        "held": len(held),
        "alive": alive,
        "open_s": round(opened_s, 1),
        "rss_before_mib": round(before / MiB, 1),
        "rss_held_mib": round(during / MiB, 1),
        "bytes_per_conn": round((during - before) / len(held)) if held else None,
    }


def bench_idle(
    ports: dict[str, dict[str, int]],
    pids: dict[str, int],
    ca: Path,
    args: argparse.Namespace,
    scheme: str,
) -> list[dict[str, Any]]:
    client = ssl.create_default_context(cafile=str(ca))
    rows = []
    for target, by_scheme in ports.items():
        tls = client if scheme == "https" else None
        row = asyncio.run(_hold(pids[target], by_scheme[scheme], args.idle, tls))
        row = {"scheme": scheme, "target": target, **row}
        print(f"  {json.dumps(row)}", flush=True)
        rows.append(row)
        time.sleep(1.0)
    return rows


def idle_ratios(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    for row in rows:
        peers = {r["target"]: r["bytes_per_conn"] for r in rows if r["scheme"] == row["scheme"]}
        for other in ("caddy", "nginx"):
            mine, theirs = row["bytes_per_conn"], peers.get(other)
            row[f"ratio_to_{other}"] = round(mine / theirs, 2) if mine and theirs else None
    return rows


def run(args: argparse.Namespace) -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # the servers inherit it
    if args.idle and args.idle + 1000 > hard:
        raise SystemExit(f"--idle {args.idle}: the open-files limit is {hard}")
    work = Path(tempfile.mkdtemp(prefix="patrd-bench-conns-"))
    procs: list[subprocess.Popen[bytes]] = []
    log = (work / "servers.log").open("ab")
    out: dict[str, Any] = {"load_before": loadavg(), "cpus": os.cpu_count()}
    try:
        if args.close:
            ports, pids, ca = start_servers(work / "close", args.idle, log, procs, args.baseline)
            out["close"] = bench_close(ports, pids, ca, args)
            stop_servers(procs)
        if args.idle:
            # Fresh servers for each scheme: a heap grown by one round (Caddy's Go heap,
            # CPython's arenas) would otherwise be reused by the next and hide its cost.
            rows: list[dict[str, Any]] = []
            for scheme in args.schemes.split(","):
                where = work / f"idle-{scheme}"
                ports, pids, ca = start_servers(where, args.idle, log, procs, args.baseline)
                rows += bench_idle(ports, pids, ca, args, scheme)
                stop_servers(procs)
            out["idle"] = idle_ratios(rows)
        out["load_after"] = loadavg()
    finally:
        stop_servers(procs)
        log.close()
    print_tables(out, args)
    path = args.json or Path("var/bench") / f"proxy-conns-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(f"written: {path}")


def _r(value: float | None) -> str:
    return "" if value is None else f"{value:.2f}"


def print_tables(out: dict[str, Any], args: argparse.Namespace) -> None:
    print(f"\nload average before {out['load_before']}, after {out.get('load_after')}")
    if "close" in out:
        print(f"\n--close: wrk -c{args.connections} -d{args.duration}s, median of {args.runs}")
        print(
            f"{'scheme':<6} {'target':<12} {'conn/s':>8} {'/caddy':>7} {'/nginx':>7} "
            f"{'CPU ms':>7} {'/caddy':>7} {'/nginx':>7} {'cores':>6} {'wrk ms':>7} "
            f"{'resumed':>8} {'errors':>6}"
        )
        for r in out["close"]:
            resumed = "" if r["resumed"] is None else f"{r['resumed']:.0%}"
            print(
                f"{r['scheme']:<6} {r['target']:<12} {r['conn_per_s']:>8.0f} "
                f"{_r(r['ratio_to_caddy']):>7} {_r(r['ratio_to_nginx']):>7} "
                f"{r['cpu_ms_per_conn']:>7.3f} {_r(r['cpu_ratio_to_caddy']):>7} "
                f"{_r(r['cpu_ratio_to_nginx']):>7} {r['cores']:>6.2f} "
                f"{r['client_cpu_ms_per_conn']:>7.3f} {resumed:>8} {r['errors']:>6}"
            )
    if "idle" in out:
        print(f"\n--idle {args.idle}: RSS of each server's processes, before and holding them")
        print(
            f"{'scheme':<6} {'target':<12} {'held':>6} {'alive':>6} {'open s':>6} {'RSS MiB':>8} "
            f"{'held MiB':>8} {'B/conn':>7} {'/caddy':>7} {'/nginx':>7}"
        )
        for r in out["idle"]:
            print(
                f"{r['scheme']:<6} {r['target']:<12} {r['held']:>6} {r['alive']:>6} "
                f"{r['open_s']:>6} "
                f"{r['rss_before_mib']:>8} {r['rss_held_mib']:>8} {r['bytes_per_conn'] or 0:>7} "
                f"{_r(r['ratio_to_caddy']):>7} {_r(r['ratio_to_nginx']):>7}"
            )


if __name__ == "__main__":  # the bare floor server (started by start_servers)
    if len(sys.argv) > 2:
        _serve_bare_one(json.loads(sys.argv[1]))
    else:
        serve_bare(json.loads(sys.argv[1]))
