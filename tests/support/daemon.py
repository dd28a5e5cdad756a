"""A real ``patrd serve`` process for integration tests, and a small API client.

The daemon runs as a subprocess (so tests can SIGTERM or ``kill -9`` it) on a
fresh data dir, a unix socket in the test's tmp dir and a free loopback port.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from tests.support.waits import until, until_sync

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Daemon:
    workdir: Path
    base_domain: str = "test.localhost"
    proxy_port: int = field(default_factory=free_port)
    https_port: int = field(default_factory=free_port)  # never 443: tests share the host
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0
    # Extra environment, a command prefix (e.g. nsenter into a test netns) and
    # config overrides (section → key → value) for the next start().
    env: dict[str, str] = field(default_factory=dict)
    command_prefix: list[str] = field(default_factory=list)
    config: dict[str, dict[str, Any]] = field(default_factory=dict)
    # More state for failure messages (e.g. a swarm node's dockerd that died).
    reports: list[Callable[[], str]] = field(default_factory=list)

    @property
    def socket(self) -> Path:
        return self.workdir / "api.sock"

    @property
    def data_dir(self) -> Path:
        return self.workdir / "data"

    @property
    def log_path(self) -> Path:
        return self.workdir / "patrd.log"

    def config_path(self) -> Path:
        path = self.workdir / "config.toml"
        path.write_text(
            '[daemon]\nlog_level = "debug"\n'
            "[docker]\nstop_timeout_s = 5\nready_timeout_s = 20\nresync_interval_s = 5\n"
            "[proxy]\ndrain_timeout_s = 15\n"
            # Never a restrictive ruleset in the machine's root namespace: a test
            # enables the firewall only for a daemon it runs inside its own netns.
            "[firewall]\nenabled = false\n"
        )
        if self.config:
            _merge_toml(path, self.config)
        if self.config.get("firewall", {}).get("enabled") and not any(
            arg.startswith("--net=") for arg in self.command_prefix
        ):
            raise RuntimeError("firewall.enabled in a test daemon needs a netns command prefix")
        return path

    def start(self) -> None:
        assert self.proc is None or self.proc.poll() is not None, "already running"
        self.starts += 1
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [
                *self.command_prefix,
                sys.executable,
                "-m",
                "patrd",
                "serve",
                "--config",
                str(self.config_path()),
                "--data-dir",
                str(self.data_dir),
                "--api-socket",
                str(self.socket),
                "--http-listen",
                f"127.0.0.1:{self.proxy_port}",
                "--https-listen",
                f"127.0.0.1:{self.https_port}",
                "--base-domain",
                self.base_domain,
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=REPO,
            env={**os.environ, **self.env} if self.env else None,
        )
        log.close()

        def answering() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"patrd exited {self.proc.returncode}:\n{self.log_tail()}")
            return self.socket.exists() and _health(self.socket)

        until_sync(answering, 30, "patrd answering on its socket", self, interval=0.05)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise

    def kill9(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def log_tail(self, lines: int = 60) -> str:
        more = "".join(f"\n{text}" for report in self.reports if (text := report()))
        if not self.log_path.exists():
            return more.lstrip("\n")
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:]) + more

    def url(self, name: str, port: int = 80) -> str:
        return f"http://127.0.0.1:{self.proxy_port}"

    def host(self, name: str, port: int = 80) -> str:
        return f"{port}-{name}.{self.base_domain}"


def _merge_toml(path: Path, overrides: dict[str, dict[str, Any]]) -> None:
    """Rewrite a flat two-level TOML file with ``overrides`` merged in."""
    import tomllib

    merged = tomllib.loads(path.read_text())
    for section, values in overrides.items():
        merged.setdefault(section, {}).update(values)
    lines = []
    for section, values in merged.items():
        lines.append(f"[{section}]")
        lines.extend(f"{key} = {json.dumps(value)}" for key, value in values.items())
    path.write_text("\n".join(lines) + "\n")


def _health(sock: Path) -> bool:
    try:
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(1)
            s.connect(str(sock))
            s.sendall(b"GET /v1/health HTTP/1.0\r\nHost: patrd\r\n\r\n")
            data = s.recv(64)
        return data.startswith(b"HTTP/1.") and b" 200 " in data
    except OSError:
        return False


class Api:
    """Async client of the daemon's unix-socket API."""

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Api:
        self._session = aiohttp.ClientSession(
            connector=aiohttp.UnixConnector(path=str(self.daemon.socket))
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._session is not None:
            await self._session.close()

    async def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        assert self._session is not None
        data = None if body is None else json.dumps(body)
        for attempt in range(50):
            try:
                async with self._session.request(
                    method,
                    f"http://patrd{path}",
                    data=data,
                    headers={"Content-Type": "application/json"},
                ) as resp:
                    text = await resp.text()
                    return resp.status, json.loads(text) if text else None
            except (aiohttp.ClientConnectionError, FileNotFoundError):
                if attempt == 49:
                    raise
                await asyncio.sleep(0.1)  # daemon restarting
        raise AssertionError("unreachable")

    async def ok(self, method: str, path: str, body: Any = None) -> Any:
        status, data = await self.call(method, path, body)
        assert 200 <= status < 300, (method, path, status, data)
        return data

    async def wait_status(self, name: str, status: str, timeout: float = 60) -> dict[str, Any]:
        async def shown() -> dict[str, Any] | None:
            code, body = await self.call("GET", f"/v1/deployments/{name}")
            return dict(body) if code == 200 and body["status"] == status else None

        found: dict[str, Any] = await until(shown, timeout, f"{name} {status}", self.daemon)
        return found

    async def wait_gone(self, name: str, timeout: float = 60) -> None:
        async def gone() -> bool:
            return (await self.call("GET", f"/v1/deployments/{name}"))[0] == 404

        await until(gone, timeout, f"{name} gone", self.daemon)


def patrctl(
    daemon: Daemon, *args: str, stdin: str | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """The real CLI (this venv's ``patrctl``) against ``daemon``'s socket; ``stdin`` is
    sent as its input (else it reads nothing)."""
    feed: dict[str, Any] = {"input": stdin} if stdin is not None else {"stdin": subprocess.DEVNULL}
    return subprocess.run(
        [str(Path(sys.executable).parent / "patrctl"), "--socket", str(daemon.socket), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        **feed,
    )


def wait_tcp_api(daemon: Daemon, port: int, timeout: float = 20) -> None:
    """Wait until the daemon's TCP API listener on ``port`` answers ``/v1/health``."""

    def answers() -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/health", timeout=1):
                return True
        except OSError:
            return False

    until_sync(answers, timeout, "the TCP API answering", daemon, interval=0.05)


def registry_addr(d: Daemon) -> str:
    """HOST:PORT of the node registry a daemon's config runs (``[registry] listen``)."""
    return str(d.config["registry"]["listen"])


def docker_json(*args: str) -> Any:
    out = subprocess.run(["docker", *args], capture_output=True, text=True, check=True).stdout
    return json.loads(out) if out.strip() else None


def containers_of(name: str, all_states: bool = True) -> list[str]:
    """Container ids Docker has for deployment ``name`` (by label)."""
    args = ["docker", "ps", "-q", "--no-trunc", "--filter", f"label=patrd.deployment={name}"]
    if all_states:
        args.insert(2, "-a")
    out = subprocess.run(args, capture_output=True, text=True, check=True).stdout
    return sorted(out.split())


def networks_of(name: str) -> list[str]:
    out = subprocess.run(
        ["docker", "network", "ls", "-q", "--filter", f"label=patrd.deployment={name}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return out.split()


def force_cleanup(names: list[str]) -> None:
    """Last resort after a failed test: nothing of ours stays in Docker."""
    for name in names:
        ids = containers_of(name)
        if ids:
            subprocess.run(["docker", "rm", "-f", *ids], capture_output=True, check=False)
        for net in networks_of(name):
            subprocess.run(["docker", "network", "rm", net], capture_output=True, check=False)
        for volume in volumes_of(name):
            subprocess.run(["docker", "volume", "rm", volume], capture_output=True, check=False)


def volumes_of(name: str) -> list[str]:
    out = subprocess.run(
        ["docker", "volume", "ls", "-q", "--filter", f"label=patrd.deployment={name}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return sorted(out.split())


@contextlib.contextmanager
def running_daemon(
    workdir: Path, config: dict[str, dict[str, Any]] | None = None
) -> Iterator[Daemon]:
    """A started daemon in ``workdir`` (``config`` overrides its TOML); stopped on exit."""
    daemon = Daemon(workdir)
    if config is not None:
        daemon.config = config
    daemon.start()
    try:
        yield daemon
    finally:
        daemon.stop()


@contextlib.contextmanager
def running_tcp_daemon(
    workdir: Path, token: str, config: dict[str, dict[str, Any]] | None = None
) -> Iterator[tuple[Daemon, int]]:
    """A started daemon whose API also listens on a free loopback TCP port, ``token``
    its admin token (``config`` adds other sections); the daemon and that port."""
    port = free_port()
    (workdir / "token").write_text(token + "\n")
    api = {"tcp_listen": f"127.0.0.1:{port}", "token_file": str(workdir / "token")}
    with running_daemon(workdir, {"api": api, **(config or {})}) as daemon:
        wait_tcp_api(daemon, port)
        yield daemon, port
