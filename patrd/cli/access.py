"""``patrctl token …`` and ``patrctl audit``: scoped API tokens and the audit log.

A verb module: it registers its subparsers and handlers (``add_parsers``). A new
token is printed once, on standard output, and never again; everything else
goes to standard error so that ``patrctl token create ci --scope deploy >
ci.token`` leaves only the token in the file.
"""

from __future__ import annotations

import argparse
import sys
import urllib.parse
from typing import Any

from patrd.cli.client import AddVerb, Client, JsonObject
from patrd.cli.output import print_json, render_table

SCOPES = ("read", "deploy", "write", "admin")


def add_parsers(verb: AddVerb, common: argparse.ArgumentParser) -> None:
    p = verb("token", "scoped API tokens for the TCP listener (admin)", cmd_token)
    sub = p.add_subparsers(dest="token_verb", required=True, metavar="ACTION")

    def action(name: str, help_text: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=help_text, description=help_text, parents=[common])

    a = action("create", "create a token; it is printed once and stored only hashed")
    a.add_argument("name", metavar="NAME")
    a.add_argument("--scope", required=True, choices=SCOPES, help="what the token may do")
    a.add_argument("--expires", metavar="DURATION", help="e.g. 30d, 12h, 2w (default: never)")
    a.add_argument(
        "--deployment",
        dest="deployments",
        action="extend",
        nargs="+",
        metavar="NAME",
        help="limit the token to these deployments; repeatable (default: all)",
    )
    action("list", "the tokens: scope, deployments, expiry, last use (never the values)")
    a = sub.add_parser(  # "delete" works too, as for everything else patrctl removes
        "revoke",
        aliases=["delete"],
        help="revoke a token; it stops working at once",
        description="revoke (delete) a token; it stops working at once",
        parents=[common],
    )
    a.add_argument("name", metavar="NAME")

    p = verb("audit", "the audit log: who changed what, and the refused calls (admin)", cmd_audit)
    p.add_argument("--since", metavar="WHEN", help="RFC 3339 time or a duration back (1h, 7d)")
    p.add_argument("--who", metavar="WHO", help="uid:1000, token:NAME, token_file, dashboard:ADDR")
    p.add_argument("--deployment", metavar="NAME", help="calls naming this deployment")
    p.add_argument("--limit", type=int, metavar="N", help="the newest N entries (default 100)")


def cmd_token(client: Client, args: argparse.Namespace) -> int:
    action = args.token_verb
    if action == "create":
        body: dict[str, Any] = {"name": args.name, "scope": args.scope}
        if args.expires:
            body["expires_in"] = args.expires
        if args.deployments:
            body["deployments"] = args.deployments
        data = client.request("POST", "/v1/tokens", body=body)
        if args.json:
            print_json(data)
            return 0
        print(data["token"])
        print(
            f"token {data['name']} ({data['scope']}"
            f"{'; ' + ', '.join(data['deployments']) if data['deployments'] else ''}"
            f"{'; expires ' + data['expires_at'] if data['expires_at'] else ''}): "
            "shown once, store it now",
            file=sys.stderr,
        )
        return 0
    if action in ("revoke", "delete"):
        data = client.request("DELETE", "/v1/tokens/" + urllib.parse.quote(args.name, safe=""))
        if args.json:
            print_json(data)
        else:
            print(f"revoked token {args.name}")
        return 0
    data = client.get("/v1/tokens")
    if args.json:
        print_json(data)
    elif not data["tokens"]:
        print("no tokens")
    else:
        print(render_table(["NAME", "SCOPE", "DEPLOYMENTS", "EXPIRES", "LAST USED"], _rows(data)))
    return 0


def _rows(data: JsonObject) -> list[list[str]]:
    rows = []
    for t in data["tokens"]:
        expires = t["expires_at"] or "never"
        if t["expired"]:
            expires += " (expired)"
        rows.append(
            [
                t["name"],
                t["scope"],
                ", ".join(t["deployments"]) if t["deployments"] else "all",
                expires,
                t["last_used_at"] or "never",
            ]
        )
    return rows


def cmd_audit(client: Client, args: argparse.Namespace) -> int:
    query: dict[str, str | int] = {}
    for key in ("since", "who", "deployment", "limit"):
        value = getattr(args, key)
        if value is not None:
            query[key] = value
    data = client.get("/v1/audit", **query)
    if args.json:
        print_json(data)
        return 0
    rows = [
        [
            e["at"],
            e["who"],
            e["method"],
            e["path"],
            str(e["status"]),
            e["detail"],
        ]
        for e in data["entries"]
    ]
    print(render_table(["AT", "WHO", "METHOD", "PATH", "STATUS", "DETAIL"], rows))
    return 0
