"""Command-line entry points: ``patrctl`` (the API client) and ``patrd`` (the daemon).

This module only assembles: the connection flags shared by every verb, the
verbs (each module registers its own subparsers and handlers), and the exit
codes. ``patrd serve`` / ``patrd restore`` are ``patrd/cli/serve.py``.

Exit codes: 0 success, 1 an error (one line on stderr:
``patrctl: <message> (field: <field>)``), 2 a usage error, 130 interrupted.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from patrd import __version__
from patrd.cli import (
    access,
    backup,
    data,
    deployments,
    firewall,
    notify,
    observe,
    urls,
)
from patrd.cli import exec as cli_exec  # `exec` would shadow the builtin
from patrd.cli.client import (
    DEFAULT_SOCKET,
    AddVerb,
    ApiError,
    CliError,
    Handler,
    UsageError,
    make_client,
)
from patrd.cli.parser import VerbParser
from patrd.cli.serve import daemon_main

__all__ = ["daemon_main", "main", "parse_args"]

# In the order ``patrctl --help`` lists them.
VERB_MODULES: tuple[Callable[[AddVerb, argparse.ArgumentParser], None], ...] = (
    deployments.add_parsers,  # create … delete
    backup.add_parsers,  # `backup FILE` and off-site `backup list|run|restore`
    firewall.add_parsers,  # `firewall show`
    urls.add_parsers,  # `url …` and `certs`
    data.add_parsers,  # `secret …`, `config …`, `volumes`, `registry`
    observe.add_parsers,  # `logs`, `metrics`
    access.add_parsers,  # `token …`, `audit`
    notify.add_parsers,  # `notify …`, `node`, `status`
    cli_exec.add_parsers,  # `exec`, `run`, `job …`
)


def build_parser() -> argparse.ArgumentParser:
    # Connection flags and --json are accepted before or after the verb.
    common = VerbParser(add_help=False)
    conn = common.add_argument_group("connection")
    conn.add_argument(
        "--socket",
        metavar="PATH",
        default=argparse.SUPPRESS,
        help=f"API unix socket (env PATRD_SOCKET, default {DEFAULT_SOCKET})",
    )
    conn.add_argument(
        "--url",
        metavar="URL",
        default=argparse.SUPPRESS,
        help="API over TCP instead, e.g. http://10.0.0.2:7070",
    )
    conn.add_argument(
        "--token-file",
        metavar="FILE",
        default=argparse.SUPPRESS,
        help="file holding the bearer token for --url (or env PATRD_TOKEN)",
    )
    common.add_argument(
        "--json",
        action="store_true",
        default=argparse.SUPPRESS,
        help="print the API's JSON instead of text",
    )

    parser = VerbParser(
        prog="patrctl",
        description="Manage deployments on a patrd daemon.",
        parents=[common],
    )
    parser.add_argument("--version", action="version", version=f"patrctl {__version__}")
    sub = parser.add_subparsers(dest="verb", required=True, metavar="VERB")

    def verb(name: str, help_text: str, handler: Handler) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text, parents=[common])
        p.set_defaults(handler=handler)
        return p

    for add_parsers in VERB_MODULES:
        add_parsers(verb, common)
    return parser


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Parse, and fill the flags shared by every verb (SUPPRESSed when absent)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    for key, default in (("socket", None), ("url", None), ("token_file", None), ("json", False)):
        if not hasattr(args, key):
            setattr(args, key, default)
    if args.socket is not None and args.url is not None:
        parser.error("give --socket or --url, not both")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """``patrctl``: returns the exit status."""
    try:
        args = parse_args(argv)
    except SystemExit as exc:  # argparse: --help (0) or a usage error (2)
        return exc.code if isinstance(exc.code, int) else 2
    try:
        client = make_client(socket_path=args.socket, url=args.url, token_file=args.token_file)
        handler: Handler = args.handler
        return handler(client, args)
    except UsageError as exc:
        print(exc.line(), file=sys.stderr)
        return 2
    except ApiError as exc:
        line = exc.line()
        if exc.status == 401:
            line += (
                "; give the token with --token-file FILE or the PATRD_TOKEN environment variable"
            )
        print(line, file=sys.stderr)
        return 1
    except CliError as exc:
        print(exc.line(), file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `patrctl events -f | head`
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
