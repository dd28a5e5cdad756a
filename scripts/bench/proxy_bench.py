"""patrd's proxy against nginx and Caddy, side by side (see scripts/bench/proxy).

One run starts, on loopback:

* an **origin**: nginx serving a small static body (plain HTTP);
* **nginx as proxy** (``proxy_pass`` with an upstream keep-alive pool);
* **Caddy as proxy** (``reverse_proxy``, Caddy's defaults);
* **patrd's proxy**, built the way the daemon builds it
  (:func:`patrd.proxy.front.build_proxy`: the real ``ProxyServer``, and its
  worker processes when ``workers`` > 1) with a real ``RoutingTable`` of
  ``--hosts`` hostnames (the benchmarked one among them) and a ``CertStore``
  holding a certificate per hostname from patrd's local CA.

Each proxy listens for HTTP and HTTPS; all three serve the same
``localhost`` certificate. ``wrk --latency`` measures every (scheme,
concurrency, target) cell ``--runs`` times, interleaved (run 1 of every
cell, then run 2...), so that noise from the rest of the machine spreads over
all targets; the table shows the median run by requests/s. ``direct`` is
plain HTTP to the origin: the ceiling the ratios are taken against.

Several patrd variants can run in one bench (``--patrd uvloop:2 --patrd
asyncio:1``): each is its own proxy on its own ports.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

HOST = "localhost"  # the benchmarked hostname (wrk resolves it, sends it as Host and SNI)
BODY = "hello from the origin\n"
MiB = 1024 * 1024
BASELINE = "patrd baseline"


@dataclass(frozen=True, slots=True)
class Variant:
    """One patrd proxy configuration: event loop and worker processes."""

    event_loop: str
    workers: int

    @property
    def name(self) -> str:
        if self.workers == 0:
            return f"patrd {self.event_loop} in-proc"
        return f"patrd {self.event_loop}x{self.workers}"

    @classmethod
    def parse(cls, text: str) -> Variant:
        loop, _, workers = text.partition(":")
        if loop not in ("uvloop", "asyncio") or not workers.isdigit():
            raise argparse.ArgumentTypeError(
                f"{text!r}: expected uvloop|asyncio:N (N=0: in-process)"
            )
        return cls(loop, int(workers))


@dataclass(slots=True)
class Run:
    rps: float
    p50_ms: float
    p99_ms: float
    non_2xx: int
    socket_errors: int
    requests: int

    @property
    def errors(self) -> int:
        return self.non_2xx + self.socket_errors


@dataclass(slots=True)
class Cell:
    scheme: str
    connections: int
    target: str
    url: str
    runs: list[Run] = field(default_factory=list)

    def median(self) -> Run:
        ordered = sorted(self.runs, key=lambda r: r.rps)
        return ordered[(len(ordered) - 1) // 2]


# --- certificates ----------------------------------------------------------------


def bench_hosts(count: int) -> list[str]:
    """``count`` hostnames shaped like deployment URLs, ``localhost`` in the middle."""
    names = [f"{8000 + i}-app{i:02d}.bench.localhost" for i in range(count - 1)]
    names.insert(len(names) // 2, HOST)
    return names


def make_certs(work: Path, hosts: list[str]) -> tuple[Path, Path]:
    """Every hostname's pair in patrd's cert store layout; the localhost pair for the others."""
    from patrd.tls.certstore import CertStore, generate_key
    from patrd.tls.localca import LocalCA

    ca = LocalCA(work / "local-ca")
    store = CertStore(work / "certs")
    for name in hosts:
        key = generate_key()
        store.write(name, key, ca.issue(name, key))
    cert, key_file = work / "localhost.crt", work / "localhost.key"
    pem = (work / "certs" / f"{HOST}.pem").read_bytes()
    key_end = pem.index(b"-----END PRIVATE KEY-----") + len(b"-----END PRIVATE KEY-----\n")
    key_file.write_bytes(pem[:key_end])
    cert.write_bytes(pem[key_end:])
    os.chmod(key_file, 0o600)
    return cert, key_file


# --- the servers ------------------------------------------------------------------


def nginx_origin_config(work: Path, port: int) -> Path:
    return _nginx_config(
        work / "origin",
        f"""
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location / {{ default_type text/plain; return 200 "{BODY.strip()}\\n"; }}
    }}""",
    )


def nginx_proxy_config(
    work: Path, origin: int, http_port: int, https_port: int, cert: Path, key: Path
) -> Path:
    location = """
        location / {
            proxy_pass http://origin;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $remote_addr;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_set_header X-Forwarded-Host $host;
        }"""
    return _nginx_config(
        work / "nginx-proxy",
        f"""
    upstream origin {{ server 127.0.0.1:{origin}; keepalive 256; }}
    server {{
        listen 127.0.0.1:{http_port} backlog=4096;
        {location}
    }}
    server {{
        listen 127.0.0.1:{https_port} ssl backlog=4096;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        ssl_protocols TLSv1.2 TLSv1.3;
        {location}
    }}""",
    )


def _nginx_config(directory: Path, servers: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "nginx.conf"
    path.write_text(
        f"""
worker_processes auto;
pid {directory}/nginx.pid;
error_log {directory}/error.log warn;
events {{ worker_connections 8192; }}
http {{
    access_log off;
    keepalive_requests 1000000;
    client_body_temp_path {directory}/body;
    proxy_temp_path {directory}/proxy;
    fastcgi_temp_path {directory}/fastcgi;
    uwsgi_temp_path {directory}/uwsgi;
    scgi_temp_path {directory}/scgi;
    {servers}
}}
"""
    )
    return path


def caddy_config(
    work: Path, origin: int, http_port: int, https_port: int, cert: Path, key: Path
) -> Path:
    path = work / "Caddyfile"
    path.write_text(
        f"""
{{
    admin off
    auto_https off
    log {{
        output discard
    }}
}}
http://{HOST}:{http_port} {{
    bind 127.0.0.1
    reverse_proxy 127.0.0.1:{origin}
}}
https://{HOST}:{https_port} {{
    bind 127.0.0.1
    tls {cert} {key}
    reverse_proxy 127.0.0.1:{origin}
}}
"""
    )
    return path


# --- patrd's proxy, in its own process ------------------------------------------


def bench_routes(spec: dict[str, Any]) -> list[Any]:
    """One route per hostname; the benchmarked one goes to the origin."""
    from patrd.proxy.router import Backend, Route, RouteStatus

    origin = int(spec["origin"])
    return [
        Route(
            host=name,
            path_prefix="/",
            deployment=name.split(".")[0],
            port=80,
            status=RouteStatus.RUNNING,
            # The others go to addresses nobody calls: they only fill the table.
            backends=(
                Backend(f"{name}-0", "127.0.0.1", origin)
                if name == HOST
                else Backend(f"{name}-0", f"10.99.{i // 250}.{i % 250 + 1}", 80),
            ),
        )
        for i, name in enumerate(spec["hosts"])
    ]


async def serve_patrd(spec: dict[str, Any]) -> None:
    """The daemon's proxy path: ``build_proxy`` with a CertStore and a RoutingTable.

    Prints one line of JSON (the bound addresses) once listening; stops on SIGTERM.
    """
    from patrd.proxy.front import EventLoop, ProxyRuntime, build_proxy
    from patrd.proxy.router import RoutingTable
    from patrd.proxy.server import ProxyOptions
    from patrd.tls.certstore import CertStore

    certs = CertStore(Path(spec["certs"]))
    certs.load_all()
    routes = bench_routes(spec)
    # The daemon's defaults; loopback is exempt from the per-client limits.
    proxy = build_proxy(
        ProxyOptions(
            max_connections=int(spec.get("max_connections", 10000)),
            idle_timeout_s=float(spec.get("idle_timeout_s", ProxyOptions().idle_timeout_s)),
        ),
        ProxyRuntime(event_loop=EventLoop(spec["event_loop"]), workers=int(spec["workers"])),
        certs=certs,
        challenges=None,
        log_level="warning",
    )
    proxy.set_table(RoutingTable.build(routes))
    bound = await proxy.start(
        [("127.0.0.1", int(spec["http"]))], tls_listens=[("127.0.0.1", int(spec["https"]))]
    )
    print(json.dumps({"http": bound, "https": proxy.https_bound}), flush=True)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    await proxy.stop(2.0)


async def serve_baseline(spec: dict[str, Any]) -> None:
    """An older patrd (``--baseline DIR``): its ProxyServer in-process, as its daemon ran it."""
    from patrd.proxy.router import RoutingTable
    from patrd.proxy.server import ProxyOptions, ProxyServer
    from patrd.tls.certstore import CertStore

    certs = CertStore(Path(spec["certs"]))
    certs.load_all()
    proxy = ProxyServer(ProxyOptions(), RoutingTable.build(bench_routes(spec)))
    await proxy.start(
        [("127.0.0.1", int(spec["http"]))],
        [("127.0.0.1", int(spec["https"]))],
        certs.listener_context(),
    )
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    await proxy.stop(2.0)


# Runs serve_baseline with the baseline tree's patrd first on the path.
_BASELINE_BOOT = """
import asyncio, json, sys
spec = json.loads(sys.argv[1])
sys.path[:0] = [spec["baseline"], spec["repo"]]
from scripts.bench.proxy_bench import serve_baseline
asyncio.run(serve_baseline(spec))
"""


def run_patrd_host(spec: dict[str, Any]) -> None:
    """Like the daemon: in-process on the configured loop, else asyncio supervising workers."""
    from patrd.kit import log_setup as logs
    from patrd.proxy.front import run_event_loop

    logs.configure("warning", "logfmt")
    run_event_loop(serve_patrd(spec), spec["event_loop"] if spec["workers"] == 0 else "asyncio")


# --- measuring --------------------------------------------------------------------


def wait_port(port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wrk(url: str, duration: int, connections: int, *, close: bool = False) -> Run:
    """``close``: a new connection per request (``Connection: close``)."""
    threads = min(2, connections)
    out = subprocess.run(
        [
            "wrk",
            f"-t{threads}",
            f"-c{connections}",
            f"-d{duration}s",
            "--timeout",
            "5s",
            "--latency",
            *(["-H", "Connection: close"] if close else []),
            url,
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=duration + 60,
    ).stdout
    rps = re.search(r"Requests/sec:\s+([0-9.]+)", out)
    total = re.search(r"(\d+) requests in", out)
    if rps is None or total is None:
        raise RuntimeError(f"unexpected wrk output:\n{out}")
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)

    def pct(label: str) -> float:
        m = re.search(rf"^\s+{label}%\s+([0-9.]+)(us|ms|s)\s*$", out, re.M)
        if m is None:
            return float("nan")
        value, unit = float(m.group(1)), m.group(2)
        return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value

    return Run(
        rps=float(rps.group(1)),
        p50_ms=pct("50"),
        p99_ms=pct("99"),
        non_2xx=int(non_2xx.group(1)) if non_2xx else 0,
        socket_errors=sum(int(g) for g in sock.groups()) if sock else 0,
        requests=int(total.group(1)),
    )


def process_tree(pid: int) -> list[int]:
    """``pid`` and its descendants."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rpartition(")")[2].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    tree, todo = [], [pid]
    while todo:
        p = todo.pop()
        tree.append(p)
        todo.extend(children.get(p, []))
    return tree


def rss_bytes(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def proxy_rss(pid: int) -> dict[str, int]:
    """RSS of the patrd host process and of its worker processes.

    ``proxy``: what the proxy itself takes. With workers, their sum: the host
    process stands in for the daemon (the control plane, which also holds the
    certificate store). In-process, the whole host process.
    """
    tree = process_tree(pid)
    host = rss_bytes(pid)
    workers = sum(rss_bytes(p) for p in tree if p != pid)
    return {
        "host": host,
        "workers": workers,
        "processes": len(tree),
        "proxy": workers if len(tree) > 1 else host,
    }


def loadavg() -> str:
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


# --- the bench --------------------------------------------------------------------


def build_cells(
    schemes: list[str],
    concurrency: list[int],
    ports: dict[str, dict[str, int]],
    origin: int,
) -> list[Cell]:
    cells = []
    for c in concurrency:
        if "http" in schemes or "https" in schemes:
            cells.append(Cell("http", c, "direct", f"http://{HOST}:{origin}/"))
        for scheme in schemes:
            for target, by_scheme in ports.items():
                cells.append(Cell(scheme, c, target, f"{scheme}://{HOST}:{by_scheme[scheme]}/"))
    return cells


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--duration", type=int, default=3, help="seconds per wrk run")
    parser.add_argument("--runs", type=int, default=3, help="runs per cell (median shown)")
    parser.add_argument(
        "--concurrency", default="1,64,256", help="wrk connections, comma separated"
    )
    parser.add_argument("--schemes", default="http,https")
    parser.add_argument(
        "--patrd",
        type=Variant.parse,
        action="append",
        help="patrd proxy variant EVENT_LOOP:WORKERS (repeatable; default: the daemon's defaults)",
    )
    parser.add_argument(
        "--baseline",
        type=Path,
        help="also run an older patrd's proxy from this source tree (in-process, asyncio; "
        "with --close/--idle: as its daemon would, workers), "
        "e.g. from: git archive REV patrd scripts | tar -x -C DIR",
    )
    parser.add_argument("--no-nginx", action="store_true", help="skip nginx as proxy")
    parser.add_argument("--no-caddy", action="store_true", help="skip Caddy")
    parser.add_argument("--hosts", type=int, default=50, help="hostnames in patrd's table")
    parser.add_argument("--json", type=Path, help="default: var/bench/proxy-<time>.json")
    parser.add_argument(
        "--close", action="store_true", help="a new connection per request (proxy_conns.py)"
    )
    parser.add_argument("--idle", type=int, default=0, help="hold N idle keep-alive connections")
    parser.add_argument("--connections", type=int, default=64, help="wrk connections for --close")
    parser.add_argument("--serve-patrd", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_patrd:
        run_patrd_host(json.loads(args.serve_patrd))
        return
    if args.close or args.idle:
        from scripts.bench.proxy_conns import run

        run(args)
        return
    if args.patrd is None:
        from patrd.proxy.front import ProxyRuntime

        default = ProxyRuntime()
        args.patrd = [Variant(default.event_loop, default.resolved_workers())]
    schemes = [s for s in args.schemes.split(",") if s]
    concurrency = [int(c) for c in args.concurrency.split(",") if c]
    started = datetime.datetime.now()
    json_path = args.json or Path("var/bench") / f"proxy-{started:%Y%m%d-%H%M%S}.json"

    work = Path(tempfile.mkdtemp(prefix="patrd-bench-proxy-"))
    hosts = bench_hosts(args.hosts)
    cert, key = make_certs(work, hosts)
    origin = free_port()
    ports: dict[str, dict[str, int]] = {}
    procs: list[subprocess.Popen[bytes]] = []
    patrd_pids: dict[str, int] = {}
    log = (work / "servers.log").open("ab")
    results: dict[str, Any] = {}
    cells: list[Cell] = []
    try:
        procs.append(_popen(_nginx(nginx_origin_config(work, origin)), log))
        if not args.no_nginx:
            ports["nginx"] = {"http": free_port(), "https": free_port()}
            conf = nginx_proxy_config(
                work, origin, ports["nginx"]["http"], ports["nginx"]["https"], cert, key
            )
            procs.append(_popen(_nginx(conf), log))
        if not args.no_caddy:
            ports["caddy"] = {"http": free_port(), "https": free_port()}
            conf = caddy_config(
                work, origin, ports["caddy"]["http"], ports["caddy"]["https"], cert, key
            )
            procs.append(
                _popen(
                    ["caddy", "run", "--config", str(conf), "--adapter", "caddyfile"],
                    log,
                    env={**os.environ, "HOME": str(work), "XDG_DATA_HOME": str(work)},
                )
            )
        for variant in args.patrd:
            spec = {
                "http": free_port(),
                "https": free_port(),
                "origin": origin,
                "certs": str(work / "certs"),
                "hosts": hosts,
                "event_loop": variant.event_loop,
                "workers": variant.workers,
            }
            ports[variant.name] = {"http": spec["http"], "https": spec["https"]}
            proc = _popen(
                [
                    sys.executable,
                    "-m",
                    "scripts.bench.proxy_bench",
                    "--serve-patrd",
                    json.dumps(spec),
                ],
                log,
            )
            procs.append(proc)
            patrd_pids[variant.name] = proc.pid
        if args.baseline is not None:
            spec = {
                "http": free_port(),
                "https": free_port(),
                "origin": origin,
                "certs": str(work / "certs"),
                "hosts": hosts,
                "baseline": str(args.baseline.resolve()),
                "repo": str(Path.cwd()),
            }
            ports[BASELINE] = {"http": spec["http"], "https": spec["https"]}
            proc = _popen([sys.executable, "-c", _BASELINE_BOOT, json.dumps(spec)], log)
            procs.append(proc)
            patrd_pids[BASELINE] = proc.pid
        for by_scheme in [{"http": origin}, *ports.values()]:
            for port in by_scheme.values():
                wait_port(port)
        time.sleep(1.0)  # workers settle; then the idle footprint
        rss_idle = {name: proxy_rss(pid) for name, pid in patrd_pids.items()}

        cells = build_cells(schemes, concurrency, ports, origin)
        load_before = loadavg()
        print(
            f"{len(cells)} cells x {args.runs} runs x {args.duration:g}s "
            f"(load average {load_before}); patrd table: {len(hosts)} hostnames",
            flush=True,
        )
        for cell in cells:  # warm-up: pools, TLS sessions, page cache
            if cell.connections == max(concurrency):
                wrk(cell.url, 1, cell.connections)
        for rep in range(args.runs):
            for cell in cells:
                cell.runs.append(wrk(cell.url, args.duration, cell.connections))
                _progress(rep, cell)
        time.sleep(2.0)
        rss_after = {name: proxy_rss(pid) for name, pid in patrd_pids.items()}
        results = {
            "rss_idle": rss_idle,
            "rss_after_load": rss_after,
            "load_before": load_before,
            "load_after": loadavg(),
        }
    finally:
        stop_servers(procs)
        log.close()
    print()
    report = summarize(cells, [*(v.name for v in args.patrd), BASELINE])
    print_table(report, args, results)
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(
        json.dumps(
            {
                "started": started.isoformat(timespec="seconds"),
                "tool": "wrk --latency (-t2; -t1 at one connection)",
                "duration_s": args.duration,
                "runs": args.runs,
                "cpus": os.cpu_count(),
                "hosts_in_table": len(hosts),
                "variants": [asdict(v) for v in args.patrd],
                "baseline": str(args.baseline) if args.baseline else None,
                **results,
                "cells": report,
            },
            indent=2,
        )
    )
    print(f"written: {json_path}")


def _nginx(conf: Path) -> list[str]:
    return ["nginx", "-c", str(conf), "-g", "daemon off;"]  # in the foreground: ours to stop


def stop_servers(procs: list[subprocess.Popen[bytes]]) -> None:
    """SIGTERM to each still running, then wait (15 s each) or kill; empties ``procs``."""
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
    procs.clear()


def _popen(argv: list[str], log: Any, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    return subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env)


def _progress(rep: int, cell: Cell) -> None:
    r = cell.runs[-1]
    print(
        f"  run {rep + 1} {cell.scheme:<5} c{cell.connections:<4} {cell.target:<20} "
        f"{r.rps:>9.0f} rps  p99 {r.p99_ms:7.2f} ms  errors {r.errors}",
        flush=True,
    )


def summarize(cells: list[Cell], variants: list[str]) -> list[dict[str, Any]]:
    """Median per cell with its ratios: to direct, and patrd's to Caddy and nginx."""
    med = {(c.scheme, c.connections, c.target): c.median() for c in cells}
    rows = []
    for cell in cells:
        m = med[(cell.scheme, cell.connections, cell.target)]
        direct = med.get(("http", cell.connections, "direct"))
        row: dict[str, Any] = {
            "scheme": cell.scheme,
            "connections": cell.connections,
            "target": cell.target,
            **asdict(m),
            "errors": m.errors,
            "errors_all_runs": sum(r.errors for r in cell.runs),
            "rps_runs": [r.rps for r in cell.runs],
            "ratio_to_direct": m.rps / direct.rps if direct else None,
        }
        if cell.target in variants:
            for other in ("caddy", "nginx"):
                o = med.get((cell.scheme, cell.connections, other))
                row[f"ratio_to_{other}"] = m.rps / o.rps if o else None
                row[f"p99_{other}_ms"] = o.p99_ms if o else None
        rows.append(row)
    return rows


def _ratio(value: float | None) -> str:
    return "" if value is None else f"{value:.2f}"


def print_table(
    rows: list[dict[str, Any]], args: argparse.Namespace, extra: dict[str, Any]
) -> None:
    print(
        f"wrk -t2 -d{args.duration:g}s --latency (c1: -t1), median of {args.runs} runs by rps; "
        f"loopback, {os.cpu_count()} CPUs; origin: nginx, static body"
    )
    header = (
        f"{'scheme':<6} {'conns':>5} {'target':<18} {'rps':>9} {'p50 ms':>8} {'p99 ms':>8} "
        f"{'errors':>6} {'/direct':>7} {'/caddy':>7} {'/nginx':>7}"
    )
    print(header)
    print("-" * len(header))
    for r in rows:
        print(
            f"{r['scheme']:<6} {r['connections']:>5} {r['target']:<18} {r['rps']:>9.0f} "
            f"{r['p50_ms']:>8.2f} {r['p99_ms']:>8.2f} {r['errors_all_runs']:>6} "
            f"{_ratio(r['ratio_to_direct']):>7} {_ratio(r.get('ratio_to_caddy')):>7} "
            f"{_ratio(r.get('ratio_to_nginx')):>7}"
        )
    for name, rss in extra.get("rss_idle", {}).items():
        after = extra["rss_after_load"][name]
        print(
            f"{name}: proxy RSS idle {rss['proxy'] / MiB:.1f} MiB, after the load "
            f"{after['proxy'] / MiB:.1f} MiB ({rss['processes'] - 1} worker processes; "
            f"the host process {rss['host'] / MiB:.1f} MiB)"
        )
    print(f"load average before {extra.get('load_before')}, after {extra.get('load_after')}")
    for verdict in targets(rows, extra):
        print(verdict)


def targets(rows: list[dict[str, Any]], extra: dict[str, Any]) -> Iterator[str]:
    """The issue's targets at 64 connections, one line each."""
    for r in rows:
        if r.get("ratio_to_caddy") is None or r["connections"] != 64:
            continue
        name = f"{r['target']} {r['scheme']} c64"
        checks = [
            (f"{r['ratio_to_caddy']:.2f}x Caddy (>= 1.3)", r["ratio_to_caddy"] >= 1.3),
            (
                f"{_ratio(r.get('ratio_to_nginx'))}x nginx (>= 0.35)",
                r.get("ratio_to_nginx") is None or r["ratio_to_nginx"] >= 0.35,
            ),
            (
                f"p99 {r['p99_ms']:.2f} ms vs Caddy {r['p99_caddy_ms']:.2f}",
                r["p99_ms"] <= r["p99_caddy_ms"],
            ),
            (f"{r['errors_all_runs']} errors", r["errors_all_runs"] == 0),
        ]
        yield f"target {name}: " + "; ".join(
            f"{text} {'ok' if ok else 'MISSED'}" for text, ok in checks
        )
    for name, rss in extra.get("rss_idle", {}).items():
        total = rss["proxy"] / MiB
        yield f"target {name} idle RSS: {total:.1f} MiB (<= 80) {'ok' if total <= 80 else 'MISSED'}"


if __name__ == "__main__":
    main()
