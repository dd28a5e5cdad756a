"""Waiting on a deployment: poll its status and print its new events meanwhile.

``pause`` and ``POLL_INTERVAL_S`` are looked up on this module at each poll
(tests replace them).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence

from patrd.cli.client import ApiError, Client, CliError, JsonObject, deployment_path
from patrd.cli.output import event_line, print_json

POLL_INTERVAL_S = 1.0


def wait_for(
    client: Client,
    name: str,
    target: str,
    *,
    after: int,
    timeout: float,
    quiet: bool = False,
) -> int:
    """Poll until ``target`` ("running", "stopped", "deleted"), printing new events.

    ``errored`` ends a wait for running or stopped with exit 1; so does the timeout.
    """
    deadline = time.monotonic() + timeout
    status = "unknown"
    while True:
        try:
            deployment: JsonObject | None = client.get(deployment_path(name))
            events = client.get(deployment_path(name, "events"), after=after, limit=1000)["events"]
        except ApiError as exc:
            if exc.status == 404 and target == "deleted":
                deployment, events = None, []
            else:
                raise
        if not quiet:
            print_events(events, as_json=False)
        if events:
            after = events[-1]["id"]
        if deployment is None:
            _note_done(quiet, f"{name}: deleted")
            return 0
        status = deployment["status"]
        if status == "errored" and target != "deleted":
            reason = deployment.get("status_reason") or "no reason given"
            raise CliError(f"{name} errored: {reason}")
        if target == "running" and status == "running":
            _note_done(quiet, f"{name}: running")
            return 0
        if target == "stopped" and status == "stopped" and not _running(deployment):
            _note_done(quiet, f"{name}: stopped")
            return 0
        if time.monotonic() >= deadline:
            raise CliError(
                f"timed out after {timeout:g}s waiting for {name} to be {target} (status: {status})"
            )
        pause(POLL_INTERVAL_S)


def pause(seconds: float) -> None:
    time.sleep(seconds)  # a seam for tests


def _running(deployment: JsonObject) -> bool:
    return any(i.get("state") == "running" for i in deployment.get("instances") or [])


def last_event_id(client: Client, name: str) -> int:
    events = client.get(deployment_path(name, "events"), limit=1)["events"]
    return int(events[-1]["id"]) if events else 0


def print_events(events: Sequence[JsonObject], *, as_json: bool) -> None:
    for event in events:
        print(json.dumps(event) if as_json else event_line(event), flush=True)


def report(args: argparse.Namespace, deployment: JsonObject, text: str) -> None:
    """The response of a write verb (its JSON with --json; --wait then prints nothing more)."""
    if args.json:
        print_json(deployment)
        return
    print(f"{text}; status {deployment['status']}")
    warning = (deployment.get("capacity") or {}).get("warning")
    if warning:
        print(f"patrctl: warning: {warning}", file=sys.stderr)
    if deployment.get("urls") and deployment["intent"] == "run":
        for url in deployment["urls"]:
            print(f"  {url}")


def note(args: argparse.Namespace, text: str) -> None:
    if args.json:
        return
    print(text)


def _note_done(quiet: bool, text: str) -> None:
    if not quiet:
        print(text)
