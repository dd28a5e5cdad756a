"""patrctl's text output: tables, field lists, JSON, and the deployment views."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from patrd.cli.client import JsonObject
from patrd.cli.words import env_cell, event_text


def render_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [len(h) for h in headers]
    for row in rows:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell))
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in (headers, *rows)
    ]
    return "\n".join(lines)


def render_fields(pairs: Sequence[tuple[str, str]]) -> str:
    width = max((len(key) for key, _ in pairs), default=0) + 1
    return "\n".join(f"{(key + ':').ljust(width)}  {value}".rstrip() for key, value in pairs)


def print_json(data: Any) -> None:
    print(json.dumps(data, indent=2))


def image_ref(spec: JsonObject) -> str:
    registry = spec.get("registry", "docker.io")
    base = spec["image"] if registry == "docker.io" else f"{registry}/{spec['image']}"
    return f"{base}:{spec['tag']}"


def ready_column(deployment: JsonObject) -> str:
    instances = deployment.get("instances") or []
    ready = sum(1 for i in instances if i.get("ready"))
    scale = deployment["spec"]["scale"]
    desired = 0
    if deployment["intent"] == "run":
        desired = max(scale["min"], min(ready, scale["max"]))
    return f"{ready}/{desired}"


def status_cell(d: JsonObject, width: int = 48) -> str:
    """The status, and for ``errored`` why (cut to ``width``): a crash loop is not "starting"."""
    reason = d.get("status_reason") or ""
    if d["status"] != "errored" or not reason:
        return str(d["status"])
    short = reason if len(reason) <= width else reason[: width - 3] + "..."
    return f"{d['status']} ({short})"


def deployments_table(deployments: Sequence[JsonObject]) -> str:
    rows = [
        [
            d["name"],
            status_cell(d),
            ready_column(d),
            str(d["revision"]),
            image_ref(d["spec"]),
            d["urls"][0] if d.get("urls") else "-",
        ]
        for d in deployments
    ]
    return render_table(["NAME", "STATUS", "READY", "REVISION", "IMAGE", "URL"], rows)


def instances_table(instances: Sequence[JsonObject]) -> str:
    rows = [
        [
            i["name"],
            i["state"],
            "yes" if i["ready"] else "no",
            i.get("address") or "-",
            str(i["revision"]),
            str(i["restarts"]),
            _probe_cell(i.get("probe") or {}),
        ]
        for i in instances
    ]
    headers = ["NAME", "STATE", "READY", "ADDRESS", "REVISION", "RESTARTS", "PROBE"]
    return render_table(headers, rows)


def _probe_cell(probe: JsonObject) -> str:
    phase = probe.get("phase") or "-"
    last = probe.get("last")
    return f"{phase} ({last})" if last else phase


def history_table(history: Sequence[JsonObject], *, everything: bool = False) -> str:
    """Releases, newest first; settings-only revisions are folded under the release
    they run (``+N settings``) unless ``everything``."""
    rows: list[list[str]] = []
    folded: list[int] = []  # settings revisions seen above the next release (newest first)
    for h in history:
        if not everything and h.get("release") is False:
            folded.append(h["revision"])
            continue
        how = h.get("how") or "-"
        if folded:
            how += f" (+{len(folded)} settings: {', '.join(str(n) for n in reversed(folded))})"
            folded = []
        rows.append(
            [
                str(h["revision"]),
                (h.get("digest") or "-")[:19],
                (h.get("image_id") or "-")[:19],
                how,
                h["state"],
                h.get("deployed_at") or h.get("created_at") or "-",
                h.get("reason") or "",
            ]
        )
    if folded:  # the oldest kept revisions are settings-only (their release was pruned)
        rows.append(["-", "-", "-", f"settings: {', '.join(map(str, reversed(folded)))}"])
        rows[-1] += ["", "", ""]
    headers = ["REVISION", "DIGEST", "IMAGE ID", "HOW", "STATE", "WHEN", "REASON"]
    return render_table(headers, rows)


def event_line(event: JsonObject) -> str:
    text = event_text(event["kind"], event["message"], event.get("revision"))
    return f"{event['at']}  {event['kind']:<8} {text}"


def deployment_fields(d: JsonObject) -> list[tuple[str, str]]:
    spec = d["spec"]
    status = d["status"] + (f" ({d['status_reason']})" if d.get("status_reason") else "")
    ports = ", ".join(f"{port}/{proto}" for port, proto in spec["ports"].items())
    env = env_cell(spec.get("env") or {})
    res = spec["resources"]
    return [
        ("name", d["name"]),
        ("id", d["id"]),
        ("status", status),
        ("intent", d["intent"]),
        ("revision", _revision_cell(d)),
        ("image", image_ref(spec)),
        ("ports", ports),
        ("env", env),
        ("scale", _scale_cell(d)),
        ("resources", f"{res['cpu']:g} cpu, {res['memory_mb']} MB"),
        ("est. cost", _cost_cell(d)),
        ("region", spec.get("region") or "-"),
        ("urls", " ".join(d.get("urls") or []) or "-"),
        ("created", d["created_at"]),
        ("updated", d["updated_at"]),
    ]


def _revision_cell(d: JsonObject) -> str:
    stable = d.get("stable_revision")
    if stable is None or stable == d["revision"]:
        return str(d["revision"])
    return f"{d['revision']} (rolling out; {stable} deployed)"


def _scale_cell(d: JsonObject) -> str:
    scale = d["spec"]["scale"]
    text = f"{scale['min']}..{scale['max']}"
    if scale["max"] > scale["min"]:
        text += f", running {d.get('replicas', scale['min'])}"
        text += f" (autoscale at {scale.get('target_cpu', 80)}% cpu)"
    return text


def _cost_cell(d: JsonObject) -> str:
    cost = d.get("estimated_cost")
    if not cost:
        return "-"
    text = f"{cost['min']:.2f}..{cost['max']:.2f} {cost['currency']}/month"
    warning = (d.get("capacity") or {}).get("warning")
    return text + (f"; {warning}" if warning else "")
