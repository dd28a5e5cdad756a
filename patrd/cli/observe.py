"""``patrctl logs`` and ``patrctl metrics``.

A verb module: it registers its subparsers and handlers (``add_parsers``). ``logs``
reads the API's JSON lines as they arrive (``-f`` keeps the connection open
with no read timeout) and prints ``<time> <instance> <stream> <line>``.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
import urllib.parse
from collections.abc import Sequence
from typing import Any

from patrd.cli.client import (
    AddVerb,
    Client,
    CliError,
    JsonObject,
    api_error,
    decode,
    deployment_path,
)
from patrd.cli.output import print_json, render_table


def add_parsers(verb: AddVerb, common: argparse.ArgumentParser) -> None:
    p = verb("logs", "stdout/stderr of every instance, merged by time (-f: follow)", cmd_logs)
    p.add_argument("name", metavar="NAME")
    p.add_argument("--follow", "-f", action="store_true", help="keep printing new lines")
    p.add_argument("--tail", "-n", metavar="N", help="newest N lines (default 1000; 'all')")
    p.add_argument(
        "--since", metavar="TIME", help="how far back (10m, 1h, 2d) or RFC 3339 / unix seconds"
    )
    p.add_argument("--until", metavar="TIME", help="10m (ago), RFC 3339 or unix seconds")
    p.add_argument("--instance", metavar="I", help="one instance (web-0) or container id prefix")

    p = verb("metrics", "CPU, memory, network of a deployment: now and over a range", cmd_metrics)
    p.add_argument("name", metavar="NAME")
    p.add_argument(
        "--range", choices=["hour", "day", "week", "month"], default="hour", help="default hour"
    )
    p.add_argument("--instance", metavar="I", help="one instance (web-0)")


# --- logs ------------------------------------------------------------------------------


def log_line_text(item: JsonObject) -> str:
    stream = "E" if item.get("stream") == "stderr" else " "
    kept = " (removed)" if item.get("removed") else ""
    return f"{item['t'][:23]}Z {item['instance']}{kept} {stream} {item['line']}"


def cmd_logs(client: Client, args: argparse.Namespace) -> int:
    query: dict[str, str] = {}
    for key in ("tail", "since", "until", "instance"):
        value = getattr(args, key)
        if value:
            query[key] = str(value)
    for key in ("since", "until"):
        if key in query:
            query[key] = _time_arg(query[key], time.time())
    if args.follow:
        query["follow"] = "true"
    url = client.base_path + deployment_path(args.name, "logs")
    if query:
        url += "?" + urllib.parse.urlencode(query)
    headers = {"Accept": "application/x-ndjson", "User-Agent": "patrctl"}
    if client.token:
        headers["Authorization"] = f"Bearer {client.token}"
    conn = client.connect()
    try:
        with client.transport_errors():
            conn.request("GET", url, headers=headers)
            if args.follow and conn.sock is not None:
                conn.sock.settimeout(None)  # a quiet deployment is not an error
            response = conn.getresponse()
            if response.status >= 400:
                raise api_error(response.status, decode(response.read()), f"HTTP {response.status}")
            printed = 0
            while True:
                raw = response.readline()
                if not raw:
                    break
                printed += 1
                if args.json:
                    sys.stdout.write(raw.decode("utf-8", "replace"))
                else:
                    try:
                        item = json.loads(raw)
                    except ValueError:
                        continue
                    print(log_line_text(item))
                sys.stdout.flush()
    finally:
        conn.close()
    if printed == 0 and not args.json:
        print(f"patrctl: {_why_no_logs(client, args)}", file=sys.stderr)
    return 0


def _time_arg(text: str, now: float) -> str:
    """``10m`` → unix seconds ``now - 600``; anything else goes to the API as is."""
    seconds = duration_s(text)
    if seconds is None:
        return text
    return f"{now - seconds:.3f}"


def duration_s(text: str) -> float | None:
    """``90s``, ``10m``, ``1h``, ``2d``, ``1w`` → seconds; None when it is not a duration."""
    match = _DURATION_RE.fullmatch(text.strip())
    if match is None:
        return None
    return float(match.group(1)) * _UNITS[match.group(2)]


def _why_no_logs(client: Client, args: argparse.Namespace) -> str:
    """The empty state: say why there is nothing, from the deployment's own status."""
    window = " in that time range" if (args.since or args.until) else ""
    try:
        d = client.get(deployment_path(args.name))
    except CliError:
        return f"no log lines{window}"
    status, reason = d.get("status", ""), d.get("status_reason") or ""
    if not d.get("instances"):
        why = f"{args.name} has no instances"
        if status in ("errored", "deploying") and reason:
            return f"no log lines: {why} ({status}: {reason})"
        return f"no log lines: {why} (status {status})"
    if status == "errored" and reason:
        return f"no log lines{window}: {args.name} errored: {reason}"
    return f"no log lines{window}: the instances have written nothing yet"


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_DURATION_RE = re.compile(r"([0-9]+(?:\.[0-9]+)?)([smhdw])")


# --- metrics ---------------------------------------------------------------------------


def _bytes(value: Any) -> str:
    if value is None:
        return "-"
    amount = float(value)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(amount) < 1024 or unit == "GiB":
            return f"{amount:.0f} {unit}" if unit == "B" else f"{amount:.1f} {unit}"
        amount /= 1024
    return f"{amount:.1f} GiB"


def _rate(value: Any) -> str:
    return "-" if value is None else f"{_bytes(value)}/s"


def metrics_text(data: JsonObject) -> str:
    lines = []
    current: Sequence[JsonObject] = data.get("current") or []
    if current:
        rows = [
            [
                c["instance"],
                f"{c['cpu_usage'] * 100:.1f}%",
                f"{c['cpu_cores']:.3f}/{c['cpu_allocation_cores']:g}",
                f"{_bytes(c['memory_bytes'])}/{_bytes(c['memory_limit_bytes'])}",
                f"{_rate(c['rx_bytes_per_s'])} / {_rate(c['tx_bytes_per_s'])}",
                f"{_rate(c['read_bytes_per_s'])} / {_rate(c['write_bytes_per_s'])}",
            ]
            for c in current
        ]
        lines.append(
            render_table(["INSTANCE", "CPU", "CORES", "MEMORY", "NET RX / TX", "DISK R / W"], rows)
        )
    else:
        lines.append("no current sample (no running instance, or the first interval)")
    points: Sequence[JsonObject] = data.get("points") or []
    lines.append("")
    if not points:
        lines.append(f"no history for the last {data['range']}")
        return "\n".join(lines)
    usage = [p["cpu_usage"] for p in points]
    memory = [p["memory_bytes"] for p in points]
    instances = [p["instances"] for p in points]
    lines.append(
        f"last {data['range']} ({len(points)} points of {data['step_s']:g}s): "
        f"cpu avg {sum(usage) / len(usage) * 100:.1f}% max {max(usage) * 100:.1f}%; "
        f"memory avg {_bytes(sum(memory) / len(memory))} max {_bytes(max(memory))}; "
        f"instances {min(instances)}..{max(instances)}"
    )
    lines.append("cpu " + sparkline(usage))
    return "\n".join(lines)


_BLOCKS = " ▁▂▃▄▅▆▇█"


def sparkline(values: Sequence[float], width: int = 60) -> str:
    """Usage (0..1, more is clipped) as block characters, at most ``width`` wide."""
    if not values:
        return ""
    step = max(1, -(-len(values) // width))
    buckets = [values[i : i + step] for i in range(0, len(values), step)]
    out = []
    for bucket in buckets:
        level = max(0.0, min(1.0, sum(bucket) / len(bucket)))
        out.append(_BLOCKS[round(level * (len(_BLOCKS) - 1))])
    return "".join(out)


def cmd_metrics(client: Client, args: argparse.Namespace) -> int:
    query: dict[str, str | int] = {"range": args.range}
    if args.instance:
        query["instance"] = args.instance
    data = client.get(deployment_path(args.name, "metrics"), **query)
    if args.json:
        print_json(data)
    else:
        print(metrics_text(data))
    return 0
