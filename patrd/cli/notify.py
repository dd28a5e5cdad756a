"""``patrctl notify …`` and ``patrctl node``: notification targets and the node's health.

A verb module: it registers its subparsers and handlers (``add_parsers``). Secrets
are referenced by name (``--secret``, ``--password-secret``): create them with
``patrctl secret create`` first; no value ever passes through these verbs.
"""

from __future__ import annotations

import argparse
import urllib.parse
from typing import Any

from patrd.cli import nodes as cli_nodes
from patrd.cli.client import AddVerb, Client, JsonObject
from patrd.cli.output import print_json, render_fields, render_table


def add_parsers(verb: AddVerb, common: argparse.ArgumentParser) -> None:
    p = verb("notify", "notification targets: webhook, Slack, e-mail; per-kind filters", cmd_notify)
    sub = p.add_subparsers(dest="notify_verb", required=True, metavar="ACTION")

    def action(name: str, help_text: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=help_text, description=help_text, parents=[common])

    action("list", "every target ([[notify]] and runtime) with delivery counts")
    action("kinds", "the notification kinds an event filter may name")
    a = action("add", "add a runtime target (stored; survives restarts)")
    a.add_argument("name", metavar="NAME")
    a.add_argument("--type", required=True, choices=["webhook", "slack", "email"])
    a.add_argument(
        "--events",
        action="append",
        default=[],
        metavar="KIND",
        help="kind, 'rollout.*' or '*'; repeatable or comma-separated (default '*')",
    )
    a.add_argument("--to-url", dest="to_url", metavar="URL", help="webhook / slack receiver")
    a.add_argument(
        "--url-secret", metavar="SECRET", help="instead of --to-url: a secret holding the URL"
    )
    a.add_argument("--secret", metavar="SECRET", help="webhook: secret holding the HMAC key")
    a.add_argument("--timeout", type=float, metavar="S", help="per attempt (default 5)")
    a.add_argument("--smtp-host", metavar="HOST")
    a.add_argument("--smtp-port", type=int, metavar="PORT", help="default 25")
    a.add_argument("--starttls", action="store_true", help="upgrade the SMTP session to TLS")
    a.add_argument("--username", metavar="USER", help="SMTP login")
    a.add_argument("--password-secret", metavar="SECRET", help="secret holding the SMTP password")
    a.add_argument("--from", dest="mail_from", metavar="ADDR")
    a.add_argument("--to", dest="mail_to", action="append", default=[], metavar="ADDR")
    a = action("rm", "remove a runtime target")
    a.add_argument("name", metavar="NAME")
    a = action("test", "send a notify.test notification to one target")
    a.add_argument("name", metavar="NAME")

    p = verb("node", "the host: CPU, memory, swap, load, disks, network; node events", cmd_node)
    p.add_argument("--events", type=int, default=10, metavar="N", help="newest N node events")
    cli_nodes.add_actions(p, common)  # `node list|drain|activate NODE`

    verb(
        "status",
        "is the daemon healthy? (exit 1 when degraded, e.g. the firewall did not load)",
        cmd_status,
    )


def target_body(args: argparse.Namespace) -> JsonObject:
    """The POST /v1/notifications body from ``notify add`` flags."""
    events = [e.strip() for item in args.events for e in item.split(",") if e.strip()]
    body: JsonObject = {"name": args.name, "type": args.type, "events": events or ["*"]}
    optional: dict[str, Any] = {
        "url": args.to_url,
        "url_secret": args.url_secret,
        "secret": args.secret,
        "timeout_s": args.timeout,
        "smtp_host": args.smtp_host,
        "smtp_port": args.smtp_port,
        "username": args.username,
        "password_secret": args.password_secret,
        "mail_from": args.mail_from,
        "mail_to": args.mail_to or None,
        "starttls": True if args.starttls else None,
    }
    body.update({k: v for k, v in optional.items() if v is not None})
    return body


def cmd_notify(client: Client, args: argparse.Namespace) -> int:
    action = args.notify_verb
    if action in ("list", "kinds"):
        data = client.get("/v1/notifications")
        if args.json:
            print_json(data)
        elif action == "kinds":
            print(render_table(["KIND", "MEANING"], sorted(data["kinds"].items())))
        else:
            rows = [
                [
                    t["name"],
                    t["type"],
                    t["source"],
                    ",".join(t["events"]),
                    _where(t),
                    f"{t['sent']}/{t['failed']}/{t['retries']}",
                ]
                for t in data["notifications"]
            ]
            headers = ["NAME", "TYPE", "SOURCE", "EVENTS", "TO", "SENT/FAILED/RETRIES"]
            print(render_table(headers, rows))
        return 0
    path = "/v1/notifications/" + urllib.parse.quote(getattr(args, "name", ""), safe="")
    if action == "add":
        data = client.request("POST", "/v1/notifications", body=target_body(args))
        if args.json:
            print_json(data)
        else:
            print(f"added {data['type']} notification {data['name']} → {_where(data)}")
        return 0
    if action == "rm":
        client.request("DELETE", path)
        if not args.json:
            print(f"removed notification {args.name}")
        return 0
    data = client.request("POST", path + "/test")
    if args.json:
        print_json(data)
    else:
        print(f"queued test notification {data['id']} to {args.name} (see patrctl node)")
    return 0


def cmd_status(client: Client, args: argparse.Namespace) -> int:
    """``GET /v1/health``: ok, or degraded with each reason (a closed proxy names why)."""
    data = client.get("/v1/health")
    if args.json:
        print_json(data)
    else:
        print(f"patrd {data['version']}: {data['status']}")
        for problem in data.get("problems") or []:
            print(f"  {problem}")
    return 0 if data["status"] == "ok" else 1


def cmd_node(client: Client, args: argparse.Namespace) -> int:
    if getattr(args, "node_verb", None):  # the nodes instances run on (patrd/cli/nodes.py)
        return cli_nodes.cmd(client, args)
    data = client.get("/v1/node", events=max(args.events, 0))
    if args.json:
        print_json(data)
        return 0
    mem, swap, load = data["memory"], data["swap"], data["load"]
    print(
        render_fields(
            [
                ("cpu", f"{data['cpu']['percent']:.1f}% of {data['cpu']['count']} cores"),
                ("load", f"{load['1m']:.2f} {load['5m']:.2f} {load['15m']:.2f}"),
                (
                    "memory",
                    f"{_size(mem['used'])} used, {_size(mem['available'])} available "
                    f"of {_size(mem['total'])} ({mem['percent']:.1f}%)",
                ),
                ("swap", f"{_size(swap['used'])} of {_size(swap['total'])}"),
                (
                    "network",
                    f"{_size(data['network']['bytes_recv'])} in, "
                    f"{_size(data['network']['bytes_sent'])} out since boot",
                ),
                ("uptime", f"{data['uptime_s'] / 86400:.1f} days"),
                ("alerts", ", ".join(data["alerts"]) or "-"),
            ]
        )
    )
    print()
    rows = [
        [
            d["label"],
            d["mount"],
            _size(d["total"]),
            _size(d["free"]),
            f"{d['free_percent']:.1f}%",
        ]
        for d in data["disks"]
    ]
    print(render_table(["DISK", "MOUNT", "SIZE", "FREE", "FREE%"], rows))
    for path in data["missing"]:
        print(f"(not found: {path})")
    if data["events"]:
        print()
        rows = [[e["at"][:19], e["kind"], e["message"]] for e in data["events"]]
        print(render_table(["TIME", "KIND", "MESSAGE"], rows))
    return 0


def _where(target: JsonObject) -> str:
    if target["type"] == "email":
        return ", ".join(target.get("mail_to") or [])
    if target.get("url_secret"):
        return f"(secret {target['url_secret']})"
    return str(target.get("url") or "")


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.1f} TiB"  # unreachable; keeps mypy sure of a return
