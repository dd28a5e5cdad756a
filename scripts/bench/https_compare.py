"""HTTPS through patrd's proxy, nginx and Caddy, against direct (see scripts/bench/https).

One upstream (nginx serving a small static body on 127.0.0.1) and, in front
of it, three TLS-terminating proxies, each with the same certificate for
``localhost`` (wrk sends SNI from the URL's host): patrd's ``ProxyServer``
(the daemon's proxy code, in its own process, certificate from a
``CertStore`` with the SNI callback), nginx (``proxy_pass`` with an upstream
keep-alive pool) and Caddy (``reverse_proxy``). ``direct`` is plain HTTP to
the upstream. Each target gets a warm-up, then ``wrk --latency``; the table
shows requests/s, the ratio to direct, and p50/p99 latency.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from patrd.proxy.router import Backend, Route, RouteStatus, RoutingTable
from patrd.proxy.server import ProxyOptions, ProxyServer
from patrd.tls.certstore import CertStore
from tests.support.daemon import free_port

HOST = "localhost"
BODY = "hello from the upstream\n"


def write_cert(directory: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, HOST)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(HOST)]), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    os.chmod(key_path, 0o600)
    return cert_path, key_path


def nginx_config(work: Path, upstream: int, tls_port: int, cert: Path, key: Path) -> Path:
    path = work / "nginx.conf"
    path.write_text(
        f"""
worker_processes 1;
pid {work}/nginx.pid;
error_log {work}/nginx-error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {work}/nginx-body;
    proxy_temp_path {work}/nginx-proxy;
    fastcgi_temp_path {work}/nginx-fastcgi;
    uwsgi_temp_path {work}/nginx-uwsgi;
    scgi_temp_path {work}/nginx-scgi;
    server {{
        listen 127.0.0.1:{upstream};
        location / {{ default_type text/plain; return 200 "{BODY.strip()}\\n"; }}
    }}
    upstream origin {{ server 127.0.0.1:{upstream}; keepalive 64; }}
    server {{
        listen 127.0.0.1:{tls_port} ssl;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        ssl_protocols TLSv1.2 TLSv1.3;
        location / {{
            proxy_pass http://origin;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $remote_addr;
            proxy_set_header X-Forwarded-Proto https;
        }}
    }}
}}
"""
    )
    return path


def caddy_config(work: Path, upstream: int, tls_port: int, cert: Path, key: Path) -> Path:
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
https://{HOST}:{tls_port} {{
    bind 127.0.0.1
    tls {cert} {key}
    reverse_proxy 127.0.0.1:{upstream}
}}
"""
    )
    return path


def patrd_store(cert: Path, key: Path) -> CertStore:
    store = CertStore(cert.parent / "patrd-certs")
    store.install(*store.write(HOST, key.read_bytes(), cert.read_bytes()))
    return store


async def serve_patrd(port: int, upstream: int, store: CertStore) -> None:
    """patrd's proxy alone: the same ProxyServer and CertStore the daemon runs."""
    table = RoutingTable.build(
        [
            Route(
                host=HOST,
                path_prefix="/",
                deployment="bench",
                port=upstream,
                status=RouteStatus.RUNNING,
                backends=(Backend("bench-0", "127.0.0.1", upstream),),
            )
        ]
    )
    # Defaults, as the daemon's; loopback is exempt from the per-client limits.
    proxy = ProxyServer(ProxyOptions(), table)
    await proxy.start([], tls_listens=[("127.0.0.1", port)], ssl_context=store.listener_context())
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    await proxy.stop(1.0)


def wait_port(port: int, timeout: float = 15.0) -> None:
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port}")


def wrk(url: str, duration: int, connections: int) -> dict[str, float]:
    out = subprocess.run(
        ["wrk", "-t2", f"-c{connections}", f"-d{duration}s", "--latency", url],
        capture_output=True,
        text=True,
        check=True,
        timeout=duration + 30,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([0-9.]+)", out).group(1))  # type: ignore[union-attr]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    socket_errors = re.search(r"Socket errors: (.*)", out)

    def pct(label: str) -> float:
        m = re.search(rf"^\s+{label}%\s+([0-9.]+)(us|ms|s)\s*$", out, re.M)
        if m is None:
            return float("nan")
        value, unit = float(m.group(1)), m.group(2)
        return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value

    return {
        "rps": rps,
        "p50_ms": pct("50"),
        "p99_ms": pct("99"),
        "non_2xx": float(errors.group(1)) if errors else 0.0,
        "socket_errors": 0.0 if socket_errors is None else 1.0,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--duration", type=int, default=10, help="seconds per target")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--json", type=Path, default=Path("var/bench-https.json"))
    parser.add_argument("--serve-patrd", nargs=4, metavar=("PORT", "UPSTREAM", "CERT", "KEY"))
    args = parser.parse_args()
    if args.serve_patrd:
        port, upstream, cert, key = args.serve_patrd
        asyncio.run(serve_patrd(int(port), int(upstream), patrd_store(Path(cert), Path(key))))
        return

    work = Path(tempfile.mkdtemp(prefix="patrd-bench-https-"))
    cert, key = write_cert(work)
    upstream, p_patrd, p_nginx, p_caddy = (free_port() for _ in range(4))
    procs: list[subprocess.Popen[bytes]] = []
    log = (work / "servers.log").open("ab")
    try:
        procs.append(
            subprocess.Popen(
                [
                    "nginx",
                    "-c",
                    str(nginx_config(work, upstream, p_nginx, cert, key)),
                    "-g",
                    "daemon off;",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        )
        procs.append(
            subprocess.Popen(
                [
                    "caddy",
                    "run",
                    "--config",
                    str(caddy_config(work, upstream, p_caddy, cert, key)),
                    "--adapter",
                    "caddyfile",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, "HOME": str(work), "XDG_DATA_HOME": str(work)},
            )
        )
        procs.append(
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "scripts.bench.https_compare",
                    "--serve-patrd",
                    str(p_patrd),
                    str(upstream),
                    str(cert),
                    str(key),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        )
        for port in (upstream, p_nginx, p_caddy, p_patrd):
            wait_port(port)
        targets = {
            "direct (http)": f"http://{HOST}:{upstream}/",
            "patrd https": f"https://{HOST}:{p_patrd}/",
            "nginx https": f"https://{HOST}:{p_nginx}/",
            "caddy https": f"https://{HOST}:{p_caddy}/",
        }
        results: dict[str, dict[str, float]] = {}
        for name, url in targets.items():
            wrk(url, 2, args.connections)  # warm-up: pools, sessions, JIT-free but fair
            results[name] = wrk(url, args.duration, args.connections)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
        log.close()
    direct = results["direct (http)"]["rps"]
    print(f"wrk -t2 -c{args.connections} -d{args.duration}s, loopback, one upstream (nginx)")
    print(
        f"{'target':<15} {'req/s':>10} {'vs direct':>10} {'p50 ms':>8} {'p99 ms':>8} {'non-2xx':>8}"
    )
    for name, r in results.items():
        print(
            f"{name:<15} {r['rps']:>10.0f} {r['rps'] / direct:>10.2f} "
            f"{r['p50_ms']:>8.2f} {r['p99_ms']:>8.2f} {r['non_2xx']:>8.0f}"
        )
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(
        json.dumps(
            {
                "tool": "wrk",
                "threads": 2,
                "connections": args.connections,
                "duration_s": args.duration,
                "cpus": os.cpu_count(),
                "results": {
                    k: {**v, "ratio_to_direct": v["rps"] / direct} for k, v in results.items()
                },
            },
            indent=2,
        )
    )
    print(f"written: {args.json}")


if __name__ == "__main__":
    main()
