"""Composition root: build the parts from Config, start them in order, stop them in reverse.

Start: store → engine → controller (adopts what is running) → proxy → API.
Stop (SIGTERM/SIGINT): API closes → proxy drains in-flight requests (bounded)
→ controller stops → engine and store close. Containers keep running: a
restarted daemon adopts them.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import signal
import sys
from contextlib import AsyncExitStack
from pathlib import Path

import structlog

from patrd import __version__, logs
from patrd.api.app import build_app, serve_api
from patrd.config import Config
from patrd.controller import Controller, ControllerOptions
from patrd.engine import DockerEngine
from patrd.errors import EngineError, PatrdError
from patrd.proxy.server import ProxyOptions, ProxyServer
from patrd.store import Store
from patrd.supervisor import Supervisor

SYNC_WAIT_S = 10.0


async def serve(config: Config) -> int:
    logs.configure(config.daemon.log_level, config.daemon.log_format)
    log = structlog.get_logger("patrd.daemon")
    try:
        return await _serve(config, log)
    except PatrdError as exc:
        log.error("startup_failed", error=str(exc))
        print(f"patrd: {exc}", file=sys.stderr)
        return 1


async def _serve(config: Config, log: structlog.typing.FilteringBoundLogger) -> int:
    config.daemon.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    lock = _lock_data_dir(config.daemon.data_dir)
    try:
        async with AsyncExitStack() as stack:
            store = await Store.open(config.daemon.database)
            stack.push_async_callback(store.close)

            engine = DockerEngine(config.docker.socket, owner=await store.owner_id())
            stack.push_async_callback(engine.close)
            try:
                log.info("docker", version=await engine.ping())
            except EngineError as exc:
                log.warning("docker_unavailable", error=str(exc), note="will keep retrying")

            proxy = ProxyServer(
                ProxyOptions(
                    max_header_bytes=config.proxy.max_header_bytes,
                    max_body_bytes=config.proxy.max_body_bytes,
                    header_timeout_s=config.proxy.header_timeout_s,
                    idle_timeout_s=config.proxy.idle_timeout_s,
                    drain_timeout_s=config.proxy.drain_timeout_s,
                )
            )
            controller = Controller(
                store,
                engine,
                proxy,
                ControllerOptions(
                    base_domain=config.proxy.base_domain,
                    stop_timeout_s=config.docker.stop_timeout_s,
                    ready_timeout_s=config.docker.ready_timeout_s,
                    resync_interval_s=config.docker.resync_interval_s,
                    drain_timeout_s=config.proxy.drain_timeout_s,
                ),
            )
            supervisor = Supervisor()
            stack.push_async_callback(supervisor.stop)
            supervisor.start("controller", controller.run)
            if not await controller.wait_synced(SYNC_WAIT_S):
                log.warning("initial_sync_slow", waited_s=SYNC_WAIT_S)

            bound = await proxy.start([(x.host, x.port) for x in config.proxy.http_listen])
            stack.push_async_callback(proxy.stop)

            token = _read_token(config.api.token_file) if config.api.tcp_listen else None
            runner = await serve_api(
                build_app(store, controller, config, token=None),
                socket_path=config.api.socket,
                socket_mode=config.api.socket_mode,
                tcp=None,
            )
            stack.push_async_callback(runner.cleanup)
            if config.api.tcp_listen is not None:
                tcp_runner = await serve_api(
                    build_app(store, controller, config, token=token),
                    socket_path=None,
                    socket_mode=config.api.socket_mode,
                    tcp=(config.api.tcp_listen.host, config.api.tcp_listen.port),
                )
                stack.push_async_callback(tcp_runner.cleanup)

            proxy_urls = [f"http://{_fmt(h, p)}" for h, p in bound]
            log.info(
                "ready",
                version=__version__,
                api=f"unix:{config.api.socket}",
                api_tcp=str(config.api.tcp_listen or ""),
                proxy=",".join(proxy_urls),
                base_domain=config.proxy.base_domain,
            )
            print(
                f"patrd {__version__}: API on unix:{config.api.socket}"
                + (f" and http://{config.api.tcp_listen}" if config.api.tcp_listen else "")
                + f"; proxy on {', '.join(proxy_urls)}; "
                f"deployments at http://<port>-<name>.{config.proxy.base_domain}",
                flush=True,
            )
            await _wait_for_signal()
            log.info("stopping", note="containers keep running")
        log.info("stopped")
        return 0
    finally:
        os.close(lock)


def _fmt(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _lock_data_dir(data_dir: Path) -> int:
    """Two daemons on one data dir would fight over the same containers."""
    fd = os.open(data_dir / "patrd.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise PatrdError(f"another patrd is running on data dir {data_dir}") from None
    return fd


def _read_token(path: Path | None) -> str:
    if path is None:
        raise PatrdError("api.token_file is required when api.tcp_listen is set")
    try:
        token = path.read_text().strip()
    except OSError as exc:
        raise PatrdError(f"cannot read api.token_file {path}: {exc.strerror}") from None
    if len(token) < 16:
        raise PatrdError(f"api.token_file {path}: token must be at least 16 characters")
    return token


async def _wait_for_signal() -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
