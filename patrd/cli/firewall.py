"""``patrctl firewall show``: the nftables ruleset patrd loads (a dry run when disabled)."""

from __future__ import annotations

import argparse

from patrd.cli.client import AddVerb, Client, JsonObject
from patrd.cli.output import print_json


def add_parsers(verb: AddVerb, common: argparse.ArgumentParser) -> None:
    p = verb("firewall", "the nftables ruleset patrd loads (a dry run when disabled)", cmd_firewall)
    p.add_argument(
        "action",
        choices=["show"],
        help="show: print the ruleset (loadable with nft -f) and counters",
    )


def firewall_text(data: JsonObject) -> str:
    """``GET /v1/firewall`` as text that ``nft -f`` still loads (status in comments)."""
    if not data["enabled"]:
        head = "# firewall: disabled; this is what firewall.enabled = true would load"
    elif data["applied"]:
        head = f"# firewall: enabled and loaded (loads: {data['loads']}, last {data['applied_at']})"
    else:
        head = "# firewall: enabled but NOT loaded" + (
            f": {data['error']}" if data.get("error") else ""
        )
    lines = [head, data["ruleset"].rstrip("\n")]
    counters = data.get("counters") or {}
    if counters:
        width = max(len(name) for name in counters)
        lines.append("# counters since patrd started (packets, bytes):")
        for name, value in counters.items():
            lines.append(f"#   {name:<{width}}  {value['packets']:>10}  {value['bytes']:>12}")
    return "\n".join(lines)


def cmd_firewall(client: Client, args: argparse.Namespace) -> int:
    data = client.get("/v1/firewall")
    if args.json:
        print_json(data)
    else:
        print(firewall_text(data))
    return 0
