"""Composition root: build the parts from Config, start them in order, stop them in reverse.

Start: store → engine → controller (adopts what is running) → proxy → API.
Stop (SIGTERM/SIGINT): API closes → proxy drains in-flight requests (bounded)
→ controller stops → engine and store close. Containers keep running: a
restarted daemon adopts them.

Under systemd (``Type=notify``, patrd/daemon/sdnotify.py): ``READY=1`` once the API,
proxy and reconciler are up, ``STATUS=`` with a summary, ``WATCHDOG=1`` from a
supervised task on the event loop, ``STOPPING=1`` when a signal arrives.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import functools
import os
import secrets
import signal
import sys
from collections import Counter
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import structlog

from patrd import __version__
from patrd.api.app import build_app, serve_api
from patrd.api.nodes import NodesView
from patrd.api.observe import Observability
from patrd.api.registry_hook import RegistryHook
from patrd.api.runs import ExecEngine, Runs
from patrd.control.autoscale import Autoscaler
from patrd.control.controller import Controller
from patrd.control.nodes import LocalNodes, SwarmNodes
from patrd.control.options import ControllerOptions
from patrd.daemon import sdnotify
from patrd.daemon.supervisor import Stage, Supervisor
from patrd.daemon.tls_wiring import RouteFanout, build_tls
from patrd.dashboard.web import Dashboard
from patrd.engine.diskguard import DiskCollector, DiskGuard, guarded_paths
from patrd.engine.docker import DockerEngine
from patrd.engine.hardening import Hardening
from patrd.engine.imagegc import ImageCollector
from patrd.engine.protocol import Engine
from patrd.engine.swarm import SwarmEngine
from patrd.engine.swarm_backend import SwarmBackend
from patrd.engine.swarm_images import loopback_registry
from patrd.engine.swarm_node import NodeDocker
from patrd.firewall.apply import EngineBridges, FirewallError, FirewallKeeper
from patrd.firewall.fence_gate import ProxyGate
from patrd.kit import log_setup as logs
from patrd.model import cron
from patrd.model.errors import EngineError, PatrdError, StoreError
from patrd.model.instances import Instance, RegistryAuth
from patrd.notify.dispatcher import Dispatcher, NotifyCollector
from patrd.observe.agent import NodeFigures
from patrd.observe.agent_client import AgentVolumes, SwarmFigures, WithAgents
from patrd.observe.agent_wire import TOKEN_FILE, ensure_token
from patrd.observe.counters import CgroupReader
from patrd.observe.history import History
from patrd.observe.logs import LogEngine, LogKeeper
from patrd.observe.metrics import Sampler
from patrd.observe.nodehealth import NodeCollector, NodeWatcher, node_config
from patrd.observe.prometheus import Exposition, Sources
from patrd.proxy.front import EventLoop, ProxyRuntime, build_proxy
from patrd.registry.auth import Credential, ensure_credential, htpasswd_path
from patrd.registry.node import RegistryProcess, load_or_create_secret
from patrd.registry.poll import TagPoller
from patrd.run.jobs import JobScheduler
from patrd.run.oneoff import OneOffRunner
from patrd.run.swarm_exec import SwarmExec
from patrd.settings.config import Config
from patrd.state import upkeep
from patrd.state.offsite import OffsiteBackups, Paths
from patrd.state.store import Store
from patrd.state.vault import Vault

SYNC_WAIT_S = 10.0
LOGS_TRIM_INTERVAL_S = 600.0  # kept logs: retention and size cap
# Supervised tasks stop in this order (patrd/daemon/supervisor.py): first what starts
# new work (pollers, schedules, autoscale, TLS, GC ...: the default stage), then
# the controller, last the outbox (notifications) and the registry. STOPPING=1
# is already sent then, so the watchdog pinger stops in the first stage.
# The timeouts add up to the single 10 s bound stop() had before stages.
STOP_STAGES = (Stage("intake", 2.0), Stage("controller", 5.0), Stage("last", 3.0))  # 10 s in all
STATUS_INTERVAL_S = 5.0  # how often the sd_notify STATUS= summary is refreshed


async def serve(config: Config) -> int:
    logs.configure(config.daemon.log_level, config.daemon.log_format)
    log = structlog.get_logger("patrd.daemon.compose")
    try:
        return await _serve(config, log)
    except PatrdError as exc:
        log.error("startup_failed", error=str(exc))
        print(f"patrd: {exc}", file=sys.stderr)
        return 1


async def _serve(config: Config, log: structlog.typing.FilteringBoundLogger) -> int:
    config.daemon.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    lock = _lock_data_dir(config.daemon.data_dir)
    notifier = sdnotify.Notifier.from_environ()
    notifier.status("starting")
    try:
        async with AsyncExitStack() as stack:
            store = await Store.open(config.daemon.database)
            store.keep_revisions = config.history.keep_revisions
            store.keep_releases = config.images.keep_releases
            stack.push_async_callback(store.close)
            if store.migrated_from is not None:
                version, copy = store.migrated_from
                log.info("database_migrated", from_version=version, copy=str(copy))

            engine = DockerEngine(
                config.docker.socket,
                owner=await store.owner_id(),
                hardening=Hardening(
                    capabilities=config.docker.capabilities, pids_limit=config.docker.pids_limit
                ),
                network_pool=(config.docker.network_pool, config.docker.network_prefix),
            )
            stack.push_async_callback(engine.close)
            try:
                log.info("docker", version=await engine.ping())
            except EngineError as exc:
                log.warning("docker_unavailable", error=str(exc), note="will keep retrying")

            # engine.backend = "swarm": the controller's instances are
            # Swarm services across the nodes; all else speaks to this node's engine.
            workload: Engine = engine
            swarm: SwarmBackend | None = None
            if config.engine.swarm:
                swarm = await _swarm_backend(config, engine, await store.owner_id())
                stack.push_async_callback(swarm.close)
                workload = swarm

            # The firewall goes up before the proxy listens (or, when disabled,
            # a table left by an earlier run is removed). It stays loaded when
            # patrd stops: the host keeps its fence while patrd restarts.
            firewall = FirewallKeeper(config, EngineBridges(engine))
            with contextlib.suppress(FirewallError):  # logged; retried by firewall.run
                log.info("firewall", result=(await firewall.sync()).value)

            tls = build_tls(config, store)  # certificates: ACME or the local CA
            await tls.controller.load()
            # In worker processes or in this one (patrd/proxy/front.py).
            proxy = build_proxy(
                config.proxy,
                ProxyRuntime(EventLoop(config.proxy.event_loop), config.proxy.workers),
                certs=tls.certs,
                challenges=tls.challenges,
                log_level=config.daemon.log_level,
                log_format=config.daemon.log_format,
            )
            vault = await Vault.open(store, config.daemon.secrets_key)
            # Notifications read events from here on: primed before the controller
            # or the node watcher can write one (patrd/notify/dispatcher.py).
            notify = Dispatcher(store, config.notify, vault)
            await notify.prime()
            # Logs of removed instances are kept (patrd/observe/logs.py). On a
            # swarm the backend reads every task's log through the manager.
            logs_engine: LogEngine = swarm if swarm is not None else engine
            keeper = LogKeeper(
                logs_engine,
                config.daemon.data_dir / "logs",
                config.logs,
                config.docker.stop_timeout_s,
            )
            # Pinned releases: pulled images no release keeps are removed; pulls
            # stop while the disk is low (patrd/engine/imagegc.py, patrd/engine/diskguard.py).
            images = ImageCollector(
                store, engine, config.images.keep_releases, config.images.gc_interval_s
            )
            disk_guard = DiskGuard(
                guarded_paths(engine, str(config.daemon.data_dir)),
                config.disk.min_free,
                on_low=images.wake,
            )
            credential = await asyncio.to_thread(_registry_credential, config)
            controller = Controller(
                store,
                workload,
                RouteFanout(proxy, tls.controller),
                ControllerOptions(
                    base_domain=config.proxy.base_domain,
                    stop_timeout_s=config.docker.stop_timeout_s,
                    ready_timeout_s=config.docker.ready_timeout_s,
                    resync_interval_s=config.docker.resync_interval_s,
                    drain_timeout_s=config.proxy.drain_timeout_s,
                    redirect_default_urls=config.tls.redirect_default_urls,
                    config_root=config.daemon.config_root,
                    config_rollout=swarm is not None,
                    local_registry=config.registry.host,
                    on_remove=keeper.on_remove,
                    pull_guard=disk_guard.refusal,
                    pause_timeout_s=config.proxy.pause_timeout_s,
                    security_policy=config.security,
                    local_registry_auth=RegistryAuth(
                        server=config.registry.host,
                        username=credential.username,
                        password=credential.password,
                    )
                    if credential
                    else None,
                ),
                vault=vault,
            )
            nodes: NodesView = LocalNodes(engine, engine.docker.system.info)
            figures: SwarmFigures | None = None  # swarm: instances' figures from every node
            execs: ExecEngine = engine  # swarm: exec on any node (patrd/run/swarm_exec.py)
            if swarm is not None:
                figures, execs = await _agents(config, stack, swarm, await store.owner_id())
                drains = SwarmNodes(swarm, controller, proxy, config.proxy.drain_timeout_s)
                nodes = WithAgents(drains, figures)
            supervisor = Supervisor(STOP_STAGES)
            stack.push_async_callback(supervisor.stop)
            supervisor.start("controller", controller.run, stage="controller")
            supervisor.start("image-gc", images.run)
            supervisor.start("disk-guard", lambda: disk_guard.run(config.disk.check_interval_s))
            # exec, one-off runs and scheduled jobs (patrd/run/oneoff.py, patrd/run/jobs.py).
            oneoffs = OneOffRunner(store, engine, controller.options, vault)
            jobs = JobScheduler(store, oneoffs, cron.node_timezone())
            runs = Runs(store=store, engine=execs, runner=oneoffs, jobs=jobs)
            supervisor.start("jobs", jobs.run)  # also sweeps one-offs nobody attends
            if config.firewall.enabled:
                supervisor.start("firewall", firewall.run)
            supervisor.start("tls", tls.controller.run)
            hook = _registry_hook(config, supervisor)
            if config.registry.poll_interval_s > 0:
                poller = TagPoller(
                    store=store,
                    engine=engine,
                    wake=controller.wake,
                    interval_s=config.registry.poll_interval_s,
                    local_registry=config.registry.host,
                    vault=vault,
                )
                supervisor.start("registry-poll", poller.run)
            watchdog_s = sdnotify.watchdog_interval(os.environ, os.getpid())
            if watchdog_s is not None and notifier.enabled:
                supervisor.start("watchdog", lambda: sdnotify.watchdog_pinger(notifier, watchdog_s))
            upkeep_options = upkeep.UpkeepOptions(database=config.daemon.database)
            supervisor.start("store-upkeep", lambda: upkeep.run(store, upkeep_options))
            observe = await _observability(
                config, stack, supervisor, store, engine, controller, keeper, logs_engine, figures
            )
            backups = _offsite(config, stack, supervisor, store, engine, controller)
            observe.exposition = Exposition(
                Sources(
                    store=store,
                    instances=controller,
                    sampler=observe.sampler,
                    proxy=proxy,
                    autoscale=observe.autoscale_stats,
                    certs=tls.controller,
                    firewall=firewall if config.firewall.enabled else None,
                    backups=backups.stats if backups is not None else None,
                )
            )
            await observe.exposition.collector.prime()
            observe.exposition.add(DiskCollector(disk_guard, config.disk.min_free))
            # Notifications and the node's own health (patrd/notify/, patrd/observe/nodehealth.py).
            supervisor.start("notify-tail", notify.tail, stage="last")
            supervisor.start("notify-send", notify.drain, stage="last")
            node = NodeWatcher(
                store, await node_config(config.node, engine), config.daemon.data_dir
            )
            supervisor.start("node-health", node.run)
            observe.exposition.add(NotifyCollector(notify))
            observe.exposition.add(NodeCollector(node))
            if not await controller.wait_synced(SYNC_WAIT_S):
                log.warning("initial_sync_slow", waited_s=SYNC_WAIT_S)

            # The firewall fails closed (patrd/firewall/fence_gate.py): with firewall.enabled
            # the listeners open only once the nft table is loaded.
            bound: list[tuple[str, int]] = []

            async def open_listeners() -> None:
                bound[:] = await proxy.start(
                    [(x.host, x.port) for x in config.proxy.http_listen],
                    tls_listens=[(x.host, x.port) for x in config.tls.https_listen],
                )

            gate = ProxyGate(firewall, open_listeners, proxy.stop)
            await gate.open_if_fenced()
            stack.push_async_callback(gate.stop)
            if config.firewall.enabled:
                supervisor.start("proxy-gate", gate.run)

            token = _read_token(config.api.token_file) if config.api.tcp_listen else None
            # The socket and the TCP listener serve the same API; only the
            # token (the socket trusts its peers) and the dashboard differ.
            app = functools.partial(
                build_app,
                store,
                controller,
                config,
                tls=tls.controller,
                firewall=firewall,
                vault=vault,
                observe=observe,
                backups=backups,
                proxy_closed=gate.closed_reason,
                notify=notify,
                node=node,
                resolver=controller,
                runs=runs,
                image_ports=engine,
                nodes=nodes,
            )
            runner = await serve_api(
                app(token=None),
                socket_path=config.api.socket,
                socket_mode=config.api.socket_mode,
                tcp=None,
            )
            stack.push_async_callback(runner.cleanup)
            if config.api.tcp_listen is not None:
                tcp_runner = await serve_api(
                    app(
                        token=token,
                        # The web console on /ui/ (patrd/dashboard/).
                        dashboard=Dashboard(config.dashboard) if config.dashboard.enabled else None,
                    ),
                    socket_path=None,
                    socket_mode=config.api.socket_mode,
                    tcp=(config.api.tcp_listen.host, config.api.tcp_listen.port),
                )
                stack.push_async_callback(tcp_runner.cleanup)
                if config.dashboard.enabled:
                    log.info("dashboard", url=f"http://{config.api.tcp_listen}/ui/")
            if hook is not None:
                # The registry's notifications: only /v1/registry/events answers
                # without a token here (a random one nobody knows guards the rest).
                hook_runner = await serve_api(
                    build_app(
                        store,
                        controller,
                        config,
                        token=secrets.token_urlsafe(32),
                        trust_unix_peers=False,
                        registry_hook=hook,
                    ),
                    socket_path=None,
                    socket_mode=config.api.socket_mode,
                    tcp=(config.registry.webhook_listen.host, config.registry.webhook_listen.port),
                )
                stack.push_async_callback(hook_runner.cleanup)

            proxy_urls = [f"http://{_fmt(h, p)}" for h, p in bound]
            if gate.is_open:
                proxy_urls += [f"https://{_fmt(h, p)}" for h, p in proxy.https_bound]
            else:
                proxy_urls = [f"closed ({gate.closed_reason()})"]
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
            if proxy.https_bound:
                issuer = (
                    f"ACME ({config.acme.directory_url})"
                    if config.acme.enabled
                    else f"the local CA (curl --cacert {tls.local_ca.cert_path})"
                )
                print(f"patrd: HTTPS certificates from {issuer}", flush=True)
            ready_status = await _summary(store)
            notifier.ready(ready_status)
            supervisor.start(
                "sd-status",
                lambda: sdnotify.status_reporter(
                    notifier, lambda: _summary(store), STATUS_INTERVAL_S, sent=ready_status
                ),
            )
            await _wait_for_signal()
            notifier.stopping("stopping: draining in-flight requests")
            log.info("stopping", note="containers keep running")
        log.info("stopped")
        return 0
    finally:
        notifier.close()
        os.close(lock)


class _ListedInstances:
    """The sampler's engine: containers as the controller last listed them, stats from Docker."""

    def __init__(self, controller: Controller, engine: DockerEngine) -> None:
        self._controller = controller
        self._engine = engine

    async def list_instances(self, deployment_id: str | None = None) -> list[Instance]:
        listed = self._controller.listed_instances()
        return [i for i in listed if deployment_id in (None, i.deployment_id)]

    async def stats(self, container_id: str) -> dict[str, Any]:
        return await self._engine.stats(container_id)


async def _observability(
    config: Config,
    stack: AsyncExitStack,
    supervisor: Supervisor,
    store: Store,
    engine: DockerEngine,
    controller: Controller,
    keeper: LogKeeper,
    logs_engine: LogEngine,
    remote: SwarmFigures | None,
) -> Observability:
    """Metrics sampler + history, autoscaler, kept-logs trimming."""
    history = await History.open(config.daemon.data_dir / "metrics.db")
    stack.push_async_callback(history.close)
    sampler = Sampler(
        _ListedInstances(controller, engine),
        store,
        CgroupReader(config.metrics.cgroup_root),
        config.metrics.interval_s,
        history,
        remote,
    )
    supervisor.start("metrics", sampler.run)
    autoscaler = Autoscaler(store, controller, sampler, config.autoscale)
    if config.autoscale.enabled:
        supervisor.start("autoscale", autoscaler.run)

    async def known() -> list[str]:
        return [r.id for r in await store.list_deployments()]

    supervisor.start("logs-trim", lambda: keeper.run(known, LOGS_TRIM_INTERVAL_S))
    return Observability(
        engine=logs_engine,
        keeper=keeper,
        sampler=sampler,
        history=history,
        autoscale_stats=autoscaler.stats,
    )


def _offsite(
    config: Config,
    stack: AsyncExitStack,
    supervisor: Supervisor,
    store: Store,
    engine: DockerEngine,
    controller: Controller,
) -> OffsiteBackups | None:
    """Off-site backups to restic ([backup], patrd/state/offsite.py); the schedule is supervised."""
    if not config.backup.enabled:
        return None
    service = OffsiteBackups(
        config.backup,
        Paths(
            data_dir=config.daemon.data_dir,
            database=config.daemon.database,
            secrets_key=config.daemon.secrets_key,
        ),
        store,
        engine,
        controller.wake,
    )
    stack.push_async_callback(service.close)
    supervisor.start("backup", service.run_schedule)
    return service


async def _agents(
    config: Config, stack: AsyncExitStack, swarm: SwarmBackend, owner: str
) -> tuple[SwarmFigures, SwarmExec]:
    """Tasks on other nodes: their agents' figures (patrd/observe/agent_client.py),
    volumes and exec (patrd/run/swarm_exec.py), with the token this manager made;
    this node's tasks are read and exec'd here, in-process."""
    token = await asyncio.to_thread(ensure_token, config.daemon.data_dir / TOKEN_FILE)
    node_docker = NodeDocker(config.docker.socket)
    stack.push_async_callback(node_docker.close)
    local = NodeFigures(node_docker, CgroupReader(config.metrics.cgroup_root))
    port = config.engine.agent_port
    figures = SwarmFigures(swarm, local, token, port)
    stack.push_async_callback(figures.close)
    swarm.node_volumes = AgentVolumes(swarm, token, port, owner)
    return figures, SwarmExec(swarm, node_docker, token, port)


async def _swarm_backend(config: Config, engine: DockerEngine, owner: str) -> SwarmBackend:
    """The Swarm engine on ``docker.socket``; refuses unless that engine manages a swarm."""
    swarm = SwarmEngine(
        config.docker.socket,
        owner=owner,
        hardening=Hardening(
            capabilities=config.docker.capabilities, pids_limit=config.docker.pids_limit
        ),
    )
    try:
        version = await swarm.ping()
    except EngineError as exc:
        await swarm.close()
        raise EngineError(f"engine.backend = swarm: {exc}") from exc
    log = structlog.get_logger("patrd.daemon.compose")
    log.info("swarm", version=version)
    registry = ("", "")
    if config.registry.enabled:
        registry = (config.registry.host, config.registry.nodes_host)
        if loopback_registry(config.registry.nodes_host):
            log.warning(
                "swarm_registry_loopback",
                address=config.registry.nodes_host,
                note="other nodes cannot pull registry 'local' images from a loopback "
                "address: set registry.listen or registry.swarm_address (README: Swarm: "
                "images on every node)",
            )
    return SwarmBackend(swarm, engine, owner, node_registry=registry)


async def _summary(store: Store) -> str:
    """The one-line ``STATUS=`` that ``systemctl status patrd`` shows."""
    try:
        records = await store.list_deployments()
    except StoreError as exc:
        return f"database unavailable: {exc}"
    counts = Counter(r.status.value for r in records)
    text = f"{len(records)} deployments, {counts['running']} running"
    return text + "".join(f", {counts[s]} {s}" for s in ("deploying", "errored") if counts[s])


def _registry_hook(config: Config, supervisor: Supervisor) -> RegistryHook | None:
    """Start the node registry (supervised) and say how its notifications are checked."""
    if not config.registry.enabled:
        return None
    secret = load_or_create_secret(config.daemon.data_dir / "registry-webhook.secret")
    listen = config.registry.webhook_listen
    url = f"http://{_fmt(listen.host, listen.port)}/v1/registry/events"
    htpasswd = config.registry.htpasswd_file
    if htpasswd is None and config.registry.auth:
        htpasswd = htpasswd_path(config.daemon.data_dir)
    process = RegistryProcess(config.registry, config.daemon.data_dir, url, secret, htpasswd)
    supervisor.start("registry", process.run, stage="last")
    return RegistryHook(secret=secret, host=config.registry.host)


def _registry_credential(config: Config) -> Credential | None:
    """The generated node-registry credential (made on first start), when patrd owns auth."""
    r = config.registry
    if not r.enabled or not r.auth or r.htpasswd_file is not None:
        return None
    return ensure_credential(config.daemon.data_dir)


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
