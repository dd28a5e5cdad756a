"""The daemon's command line: ``patrd serve``, ``patrd restore`` and ``patrd agent``.

The daemon's modules are imported only when a command runs (``patrctl``,
which shares the ``patrd.cli`` package, must not pay for them at start).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from patrd import __version__

if TYPE_CHECKING:
    from patrd.settings.config import Config

AGENT_PORT = 7950  # patrd/observe/agent_wire.py DEFAULT_PORT (not imported: aiohttp)
DaemonServe = Callable[["Config"], Coroutine[Any, Any, int]]


def build_daemon_parser() -> argparse.ArgumentParser:

    parser = argparse.ArgumentParser(prog="patrd", description="The patrd daemon.")
    parser.add_argument("--version", action="version", version=f"patrd {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    serve = sub.add_parser("serve", help="run the daemon in the foreground")
    serve.add_argument("--config", required=True, type=Path, metavar="FILE", help="TOML config")
    serve.add_argument("--data-dir", metavar="DIR", help="overrides daemon.data_dir")
    serve.add_argument("--api-socket", metavar="PATH", help="overrides api.socket")
    serve.add_argument(
        "--http-listen",
        action="append",
        default=[],
        metavar="HOST:PORT",
        help="overrides proxy.http_listen; repeatable",
    )
    serve.add_argument("--base-domain", metavar="DOMAIN", help="overrides proxy.base_domain")
    serve.add_argument(
        "--https-listen",
        action="append",
        default=[],
        metavar="HOST:PORT",
        help='overrides tls.https_listen; repeatable; "off" for no HTTPS',
    )
    serve.add_argument("--log-level", metavar="LEVEL", help="debug, info, warning or error")
    serve.add_argument("--log-format", metavar="FORMAT", help="logfmt, json or console")
    restore = sub.add_parser(
        "restore", help="unpack a backup (patrctl backup) onto an empty data dir"
    )
    restore.add_argument("file", type=Path, nargs="?", metavar="FILE", help="the backup tar")
    restore.add_argument(
        "--snapshot",
        metavar="RUN",
        help="instead of FILE: the state of an off-site backup run (or latest) from the "
        "[backup] repository of --config",
    )
    restore.add_argument("--config", type=Path, metavar="FILE", help="use its daemon.data_dir")
    restore.add_argument("--data-dir", metavar="DIR", help="restore here (wins over --config)")
    add_agent_parser(sub)  # patrd agent: on each swarm node (patrd/observe/agent.py)
    return parser


def add_agent_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    agent = sub.add_parser(
        "agent", help="on each swarm node: serve its instances' figures to the manager"
    )
    agent.add_argument(
        "--listen",
        default=f"0.0.0.0:{AGENT_PORT}",
        metavar="HOST:PORT",
        help=f"where the manager reaches it (default 0.0.0.0:{AGENT_PORT}: engine.agent_port)",
    )
    agent.add_argument(
        "--token-file",
        required=True,
        type=Path,
        metavar="FILE",
        help="a copy of the manager's <data_dir>/agent.token",
    )
    agent.add_argument(
        "--docker", default="unix:///var/run/docker.sock", metavar="URL", help="this node's engine"
    )
    agent.add_argument("--cgroup-root", default="/sys/fs/cgroup", type=Path, metavar="DIR")
    agent.add_argument(
        "--fence-allow",
        metavar="CIDR[,CIDR...]",
        help="fence this node's published task ports: only these sources (the address "
        "the manager's patrd dials from) reach them; without it they are open to all",
    )
    agent.add_argument(
        "--fence-interval",
        default=2.0,
        type=float,
        metavar="SECONDS",
        help="how often the fence is checked against this node's tasks (default 2)",
    )
    agent.add_argument("--log-level", default="info", metavar="LEVEL")
    agent.add_argument("--log-format", default="logfmt", metavar="FORMAT")


def daemon_main(argv: Sequence[str] | None = None) -> int:
    """``patrd serve``: load the config, then run the daemon until it stops."""
    try:
        args = build_daemon_parser().parse_args(argv)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 2
    if args.command == "restore":
        return restore_main(args)
    if args.command == "agent":
        from patrd.observe.agent import agent_main

        return agent_main(args)

    from patrd.model.errors import ConfigError
    from patrd.settings.config import Overrides, load

    overrides = Overrides(
        data_dir=args.data_dir,
        api_socket=args.api_socket,
        http_listen=tuple(args.http_listen),
        base_domain=args.base_domain,
        https_listen=tuple(args.https_listen),
        log_level=args.log_level,
        log_format=args.log_format,
    )
    try:
        config = load(args.config, overrides)
    except ConfigError as exc:
        print(f"patrd: {exc}", file=sys.stderr)
        return 2

    from patrd.proxy.runtime import run_event_loop

    serve = _daemon_serve()
    # The daemon's own loop is asyncio's, unless the proxy runs inside it
    # (proxy.workers = 0): then it is proxy.event_loop.
    loop = config.proxy.event_loop if config.proxy.workers == 0 else "asyncio"
    try:
        return run_event_loop(serve(config), loop)
    except KeyboardInterrupt:
        return 130


def _daemon_serve() -> DaemonServe:
    # Imported by name: patrd/cli/ sits below patrd/daemon/ (the composition root)
    # in the house's layers, and patrctl must not pay for the daemon's imports.
    module = importlib.import_module("patrd.daemon.compose")
    return cast(DaemonServe, module.serve)


def restore_main(args: argparse.Namespace) -> int:
    """``patrd restore FILE --data-dir DIR | --config FILE``: offline, onto an empty dir."""
    from patrd.model.errors import ConfigError, PatrdError
    from patrd.settings.config import load
    from patrd.state.archive import SECRETS_WARNING, restore
    from patrd.state.migrations import MIGRATIONS

    if not args.data_dir and args.config is None:
        print("patrd: restore needs --data-dir DIR or --config FILE", file=sys.stderr)
        return 2
    key_file: Path | None = None
    backup = None  # the [backup] section: where --snapshot comes from
    if args.config is not None:
        try:
            loaded = load(args.config)
        except ConfigError as exc:
            print(f"patrd: {exc}", file=sys.stderr)
            return 2
        daemon, backup = loaded.daemon, loaded.backup
        data_dir, key_file = daemon.data_dir, daemon.secrets_key_file
    if args.data_dir:
        data_dir = Path(args.data_dir).absolute()
    if (args.file is None) == (args.snapshot is None):
        print("patrd: restore needs FILE or --snapshot RUN (one of them)", file=sys.stderr)
        return 2
    try:
        if args.snapshot is not None:
            from patrd.state.offsite_restore import restore_from_repository

            result = restore_from_repository(backup, args.snapshot, data_dir, key_file)
        else:
            result = restore(args.file, data_dir, key_file)
    except PatrdError as exc:
        print(f"patrd: restore: {exc}", file=sys.stderr)
        return 1
    manifest, db = result.manifest, result.database
    print(
        f"restored {len(manifest.files)} files into {result.data_dir} "
        f"(backup of patrd {manifest.patrd_version}, schema v{db.schema_version}, "
        f"{db.deployments} deployments)"
    )
    if result.secrets_key is not None:
        print(f"secrets key written to {result.secrets_key}")
    if db.schema_version < len(MIGRATIONS):
        print(f"patrd starts by migrating it to schema v{len(MIGRATIONS)} (a copy is kept)")
    print("start patrd on this data dir: every deployment converges on start")
    print(f"patrd: note: {SECRETS_WARNING}; delete copies you no longer need", file=sys.stderr)
    return 0
