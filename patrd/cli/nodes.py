"""``patrctl node list|drain|activate NODE``: the nodes instances run on.

``patrctl node`` alone stays the host's health (patrd/cli/notify.py); these
actions hang under it. With ``engine.backend = "swarm"`` they show and drain
the swarm's nodes; on the docker backend ``list`` shows the one local node and
``drain``/``activate`` are refused (409). This module imports nothing of
``patrd/cli/main.py``: the client is anything with ``request``.
"""

from __future__ import annotations

import argparse
import json
from typing import Any, Protocol

ACTIONS = ("list", "drain", "activate")


class _Client(Protocol):
    def request(self, method: str, path: str, *, body: Any = None) -> Any: ...


def add_actions(node: argparse.ArgumentParser, common: argparse.ArgumentParser) -> None:
    """``list``, ``drain NODE``, ``activate NODE`` under ``patrctl node``."""
    sub = node.add_subparsers(dest="node_verb", required=False, metavar="ACTION")
    text = "every node: role, state, availability, CPU/RAM, instances (admin)"
    sub.add_parser("list", help=text, description=text, parents=[common])
    for name, text in (
        ("drain", "move the node's instances to the other nodes without dropping requests"),
        ("activate", "let instances be placed on the node again"),
    ):
        p = sub.add_parser(name, help=text, description=text, parents=[common])
        p.add_argument("node", metavar="NODE", help="node ID, unique ID prefix or hostname")


def cmd(client: _Client, args: argparse.Namespace) -> int:
    if args.node_verb == "list":
        data = client.request("GET", "/v1/nodes")
        print(json.dumps(data, indent=2) if args.json else nodes_table(data["nodes"]))
        return 0
    node = client.request("POST", f"/v1/nodes/{args.node}/{args.node_verb}")
    if args.json:
        print(json.dumps(node, indent=2))
    else:
        where = node["address"] or node["hostname"]
        print(f"node {node['id'][:12]} ({where}): {node['availability']}")
    return 0


def nodes_table(nodes: list[dict[str, Any]]) -> str:
    headers: tuple[str, ...] = (
        "ID",
        "ADDRESS",
        "ROLE",
        "STATE",
        "AVAILABILITY",
        "CPUS",
        "MEMORY",
        "INSTANCES",
    )
    rows: list[tuple[str, ...]] = [
        (
            n["id"][:12] + (" *" if n["leader"] and n["role"] == "manager" else ""),
            n["address"] or "-",
            n["role"],
            n["state"],
            n["availability"],
            f"{n['cpus']:g}",
            f"{n['memory_bytes'] / 2**30:.1f} GiB",
            str(n["instances"]),
        )
        for n in nodes
    ]
    if any(n.get("agent") for n in nodes):  # swarm: where CPU/RAM figures come from
        headers = (*headers, "AGENT")
        rows = [(*r, n.get("agent") or "-") for r, n in zip(rows, nodes, strict=True)]
    widths = [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(headers)]
    lines = [headers, *rows]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip()
        for line in lines
    )
