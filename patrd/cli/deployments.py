"""The deployment verbs: create, list, show, events, update, history, revert, redeploy,
start, stop and delete (``/v1/deployments``).

Exit codes: 0 success, 1 an error (one line on stderr), 2 a usage error; a
``--wait`` that ends in ``errored``, a failed rollout or the timeout is 1.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from patrd.cli import waiting
from patrd.cli.args import (
    add_spec_flags,
    add_wait_flags,
    create_body,
    image_digest,
    int_range,
    update_body,
)
from patrd.cli.client import AddVerb, ApiError, Client, CliError, UsageError, deployment_path
from patrd.cli.output import (
    deployment_fields,
    deployments_table,
    event_line,
    history_table,
    instances_table,
    print_json,
    render_fields,
)
from patrd.cli.pinning import create_at_digest
from patrd.cli.waiting import last_event_id, note, print_events, report, wait_for

SHOW_EVENTS = 5


def add_parsers(verb: AddVerb, common: argparse.ArgumentParser) -> None:
    p = verb("create", "create a deployment (and start it)", cmd_create)
    p.add_argument("name", nargs="?", metavar="NAME")
    p.add_argument("--file", metavar="SPEC.json", help="create spec as JSON ('-' for stdin)")
    p.add_argument(
        "--image",
        metavar="IMAGE",
        help="[REGISTRY/]REPO[:TAG][@sha256:DIGEST], e.g. nginx:1.27 or ghcr.io/org/app:v2; "
        "a digest must be what the tag (default latest) points at: it is checked, then pinned",
    )
    p.add_argument("--tag", help="image tag, if not in --image (default latest)")
    p.add_argument("--registry", help="registry host (default docker.io)")
    add_spec_flags(p)
    p.add_argument("--no-deploy", action="store_true", help="create only; start it later")
    p.add_argument("--region", help="must be this node's region")
    add_wait_flags(p, "until the deployment is running")

    verb("list", "list deployments", cmd_list)

    p = verb("show", "show one deployment, its instances and recent events", cmd_show)
    p.add_argument("name", metavar="NAME")

    p = verb("events", "print a deployment's events", cmd_events)
    p.add_argument("name", metavar="NAME")
    p.add_argument("--follow", "-f", action="store_true", help="keep printing new events")
    p.add_argument("--limit", type=int_range(1, 1000), default=100, help="how many (default 100)")

    p = verb("update", "change env, ports, scale or resources (a new revision)", cmd_update)
    p.add_argument("name", metavar="NAME")
    add_spec_flags(p, replace_ports=True)
    p.add_argument(
        "--unset-env", action="append", default=[], metavar="KEY", help="remove a variable"
    )
    p.add_argument("--no-startup-probe", action="store_true", help="remove the startup probe")
    p.add_argument("--no-liveness-probe", action="store_true", help="remove the liveness probe")
    p.add_argument(
        "--confirm-volume-loss",
        action="store_true",
        help="allow a scale-down that deletes the excess instances' volumes",
    )
    add_wait_flags(p, "until the new revision is rolled out (exit 1 if it failed)")

    p = verb("history", "releases: the image every revision pinned, and how it got it", cmd_history)
    p.add_argument("name", metavar="NAME")
    p.add_argument(
        "--all", action="store_true", help="also list settings-only revisions on their own rows"
    )

    p = verb("revert", "go back to an image of the history (zero downtime)", cmd_revert)
    p.add_argument("name", metavar="NAME")
    p.add_argument(
        "digest",
        metavar="REF",
        help="revision number, digest (sha256:...) or image id prefix (12+ hex characters)",
    )
    add_wait_flags(p, "until the revert is rolled out")

    p = verb("redeploy", "pull the tag again; roll out its new digest, if it has one", cmd_redeploy)
    p.add_argument("name", metavar="NAME")
    add_wait_flags(p, "until the new image is rolled out")

    p = verb("start", "start a stopped deployment", cmd_start)
    p.add_argument("name", metavar="NAME")
    add_wait_flags(p, "until it is running")

    p = verb("stop", "stop every instance (the spec is kept)", cmd_stop)
    p.add_argument("name", metavar="NAME")
    add_wait_flags(p, "until it is stopped")

    p = verb("delete", "delete a deployment and everything it runs", cmd_delete)
    p.add_argument("name", metavar="NAME")
    p.add_argument(
        "--confirm", metavar="NAME", help="repeat the name (asked for on a terminal if absent)"
    )
    p.add_argument(
        "--delete-volumes",
        action="store_true",
        help="also delete the volumes and their data (default: keep them)",
    )
    add_wait_flags(p, "until it is gone")


LIST_PAGE = 100  # deployments per request: no single answer holds the daemon's loop long


def list_all(client: Client) -> list[Any]:
    """Every deployment, asked for in pages (``limit``/``after``)."""
    out: list[Any] = []
    after: str | None = None
    while True:
        query: dict[str, str | int] = {"limit": LIST_PAGE}
        if after is not None:
            query["after"] = after
        page = client.get("/v1/deployments", **query)
        out += page["deployments"]
        after = page.get("next")
        if after is None:
            return out


def cmd_list(client: Client, args: argparse.Namespace) -> int:
    data = {"deployments": list_all(client)}
    if args.json:
        print_json(data)
    elif data["deployments"]:
        print(deployments_table(data["deployments"]))
    else:
        print("no deployments")
    return 0


def cmd_show(client: Client, args: argparse.Namespace) -> int:
    deployment = client.get(deployment_path(args.name))
    if args.json:
        print_json(deployment)
        return 0
    events = client.get(deployment_path(args.name, "events"), limit=SHOW_EVENTS)["events"]
    print(render_fields(deployment_fields(deployment)))
    print()
    print("INSTANCES")
    instances = deployment.get("instances") or []
    print(instances_table(instances) if instances else "none")
    print()
    print("EVENTS")
    print("\n".join(event_line(e) for e in events) if events else "none")
    return 0


def cmd_events(client: Client, args: argparse.Namespace) -> int:
    events = client.get(deployment_path(args.name, "events"), limit=args.limit)["events"]
    if args.json and not args.follow:
        print_json({"events": events})
        return 0
    print_events(events, as_json=args.json)
    if not args.follow:
        return 0
    last = events[-1]["id"] if events else 0
    while True:
        waiting.pause(waiting.POLL_INTERVAL_S)
        try:
            events = client.get(deployment_path(args.name, "events"), after=last, limit=1000)[
                "events"
            ]
        except ApiError as exc:
            if exc.status == 404:
                print(f"{args.name}: deleted", file=sys.stderr)
                return 0
            raise
        print_events(events, as_json=args.json)
        if events:
            last = events[-1]["id"]


def cmd_create(client: Client, args: argparse.Namespace) -> int:
    body = create_body(args)
    digest = image_digest(args)
    if digest is None:
        deployment = client.request("POST", "/v1/deployments", body=body)
        pinned = ""
    else:
        deployment = create_at_digest(client, body, digest, args.image, args.timeout)
        pinned = f" at {digest[:19]}"
    name = deployment["name"]
    report(args, deployment, f"created {name} (revision {deployment['revision']}){pinned}")
    if not args.wait:
        return 0
    if deployment["intent"] != "run":
        note(args, f"{name}: created without deploying; nothing to wait for")
        return 0
    return wait_for(client, name, "running", after=0, timeout=args.timeout, quiet=args.json)


def cmd_history(client: Client, args: argparse.Namespace) -> int:
    data = client.get(deployment_path(args.name, "history"))
    if args.json:
        print_json(data)
    else:
        print(history_table(data["history"], everything=getattr(args, "all", False)))
    return 0


def cmd_revert(client: Client, args: argparse.Namespace) -> int:
    after = last_event_id(client, args.name)
    deployment = client.request(
        "POST", deployment_path(args.name, "revert"), body={"ref": args.digest}
    )
    report(args, deployment, f"{args.name}: revision {deployment['revision']} reverts")
    if not args.wait:
        return 0
    return _wait_rollout(client, args, deployment["revision"], after)


def cmd_redeploy(client: Client, args: argparse.Namespace) -> int:
    after = last_event_id(client, args.name)
    deployment = client.request("POST", deployment_path(args.name, "redeploy"), body={})
    outcome = deployment["redeploy"]
    if outcome.get("warning") and not args.json:
        print(f"patrctl: warning: {outcome['warning']}", file=sys.stderr)
    if not outcome["changed"]:
        if args.json:
            print_json(deployment)
        else:
            print(f"{args.name}: {outcome['message']}")
        return 0
    report(args, deployment, f"{args.name}: {outcome['message']}")
    if not args.wait:
        return 0
    return _wait_rollout(client, args, deployment["revision"], after)


def _wait_rollout(client: Client, args: argparse.Namespace, revision: int, after: int) -> int:
    """Wait for ``running``; then say whether ``revision`` made it or was rolled back."""
    code = wait_for(
        client, args.name, "running", after=after, timeout=args.timeout, quiet=args.json
    )
    if code != 0:
        return code
    deployment = client.get(deployment_path(args.name))
    if deployment["revision"] != revision:
        history = client.get(deployment_path(args.name, "history"))["history"]
        reason = next((h["reason"] for h in history if h["revision"] == revision), "")
        print(
            f"patrctl: revision {revision} failed ({reason}); "
            f"running revision {deployment['revision']}",
            file=sys.stderr,
        )
        return 1
    return 0


def cmd_update(client: Client, args: argparse.Namespace) -> int:
    current = client.get(deployment_path(args.name))
    body = update_body(args, current["spec"])
    if not body:
        raise UsageError(
            "nothing to update: give --env, --unset-env, --port, --min, --max, --cpu, "
            "--memory-mb or a probe flag"
        )
    after = last_event_id(client, args.name)
    query: dict[str, str | int] = (
        {"confirm_volume_loss": "true"} if args.confirm_volume_loss else {}
    )
    deployment = client.request("PATCH", deployment_path(args.name), body=body, query=query or None)
    if deployment["revision"] == current["revision"]:
        report(args, deployment, f"{args.name}: no change (revision {deployment['revision']})")
    else:
        report(args, deployment, f"updated {args.name} to revision {deployment['revision']}")
    if not args.wait:
        return 0
    if deployment["intent"] != "run":
        note(args, f"{args.name}: not running (intent {deployment['intent']}); not waiting")
        return 0
    return _wait_rollout(client, args, deployment["revision"], after)


def cmd_start(client: Client, args: argparse.Namespace) -> int:
    return _intent_verb(client, args, "start", "running")


def cmd_stop(client: Client, args: argparse.Namespace) -> int:
    return _intent_verb(client, args, "stop", "stopped")


def _intent_verb(client: Client, args: argparse.Namespace, action: str, target: str) -> int:
    after = last_event_id(client, args.name)
    deployment = client.request("POST", deployment_path(args.name, action))
    report(args, deployment, f"{args.name}: {action} requested")
    if not args.wait:
        return 0
    return wait_for(client, args.name, target, after=after, timeout=args.timeout, quiet=args.json)


def _confirm_delete(name: str, given: str | None) -> str:
    """``--confirm``, else the name typed at a prompt (only on a terminal)."""
    if given is not None:
        return given
    if not (sys.stdin.isatty() and sys.stderr.isatty()):
        raise UsageError(f"deleting is permanent; repeat the name: --confirm {name}")
    prompt = f"Delete {name} and everything it runs? Type its name to confirm: "
    print(prompt, end="", file=sys.stderr)
    sys.stderr.flush()
    try:
        answer = input().strip()
    except EOFError:
        answer = ""
    if answer != name:
        raise CliError(f"not deleted: {answer!r} is not {name!r}")
    return answer


def cmd_delete(client: Client, args: argparse.Namespace) -> int:
    confirm = _confirm_delete(args.name, args.confirm)
    after = last_event_id(client, args.name)
    query: dict[str, str | int] = {"confirm": confirm}
    if args.delete_volumes:
        query["delete_volumes"] = "true"
    deployment = client.request("DELETE", deployment_path(args.name), query=query)
    report(args, deployment, f"{args.name}: deleting")
    kept = deployment.get("kept_volumes") or []
    if kept:
        note(args, f"kept volumes (data stays): {', '.join(kept)}")
    if not args.wait:
        return 0
    return wait_for(
        client, args.name, "deleted", after=after, timeout=args.timeout, quiet=args.json
    )
