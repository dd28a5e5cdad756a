"""``create --image REPO[:TAG]@sha256:…``: create at a digest through the API as it is.

A deployment names a tag (the API's spec has ``image`` + ``tag``), and every
revision records the digest its tag resolved to (docs/design.md, "Pinned
releases"). So a digest is honoured by checking it, not by a new field:

1. create the deployment with the tag (``latest`` when none is given) and
   ``deploy_on_create: false``: nothing runs yet;
2. ``redeploy`` it: the daemon asks the registry what the tag points at now
   (no pull, no container). Another digest, or none: delete the
   never-started deployment again and say what to do instead;
3. ``start`` it (unless ``--no-deploy``) and wait until the node has
   resolved the tag (pulled it, or taken its own copy) and recorded the
   digest of the image it runs. The same digest: done, and from then on
   settings changes keep that image. Another one (the node's copy of a tag
   it did not pull again is older than the registry's): delete it again.

``deploy_on_push`` is false unless the spec file sets it: the deployment
stays at the digest when the tag moves, as docker's ``REPO@DIGEST`` does.

Used by the ``create`` verb (``patrd/cli/deployments.py``); imports no verb
module.
"""

from __future__ import annotations

import contextlib
import time
from typing import Any

from patrd.cli.client import ApiError, Client, CliError, JsonObject, deployment_path

POLL_S = 0.5


def create_at_digest(
    client: Client, body: JsonObject, digest: str, image: str, timeout: float
) -> JsonObject:
    """Create ``body`` running ``digest`` (``image`` is the ``--image`` text, for messages).

    Returns the deployment as the API shows it after the last step. Raises
    CliError when the tag does not point at ``digest`` (the deployment is
    deleted again; it never ran, unless step 3 found the node's copy differs).
    """
    start = body.get("deploy_on_create", True) is not False
    tag = str(body.get("tag") or "latest")
    # Stays at the digest, as docker's REPO@DIGEST does: a push of the tag does
    # not roll it on (unless the spec file says so; `update` can turn it on).
    sent = {"deploy_on_push": False, **body, "deploy_on_create": False}
    created = client.request("POST", "/v1/deployments", body=sent)
    name = str(created["name"])
    try:
        answer = client.request("POST", deployment_path(name, "redeploy"), body={})
    except ApiError as exc:
        _discard(client, name)
        raise CliError(
            f"--image {image}: could not ask the registry what tag {tag!r} points at "
            f"({exc.message}); {name} was removed again (it never ran)"
        ) from exc
    resolved = (answer.get("redeploy") or {}).get("digest")
    if resolved != digest:
        _discard(client, name)
        raise CliError(mismatch(image, tag, digest, resolved, name))
    if not start:
        return dict(answer)
    started = dict(client.request("POST", deployment_path(name, "start")))
    ran, said = _recorded_digest(client, name, int(started["revision"]), timeout)
    if ran != digest:
        _discard(client, name)
        raise CliError(
            f"--image {image}: the registry's {tag!r} is {digest}, but this node {said}; "
            f"{name} was removed again. Pull the tag on this node (docker pull) and create again"
        )
    return started


def mismatch(image: str, tag: str, digest: str, resolved: str | None, name: str) -> str:
    """Why a digest was refused, and what to do instead (one line)."""
    now = f"points at {resolved}" if resolved else "has no registry digest on this node"
    return (
        f"--image {image}: tag {tag!r} {now}, not {digest}; {name} was removed again "
        "(it never ran). patrd deploys a tag and pins the digest it points at: give the "
        f"tag that points at this digest (REPO:TAG@{digest}), or go back to a digest a "
        f"deployment ran before with: patrctl revert NAME {digest}"
    )


def _recorded_digest(
    client: Client, name: str, revision: int, timeout: float
) -> tuple[str | None, str]:
    """(digest, what the node did): what it recorded for ``revision`` once resolved.

    The digest is None for an image with no registry digest, when the
    deployment errored before resolving its image, or at the timeout.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        entries: list[Any] = client.get(deployment_path(name, "history"))["history"]
        entry = next((e for e in entries if e.get("revision") == revision), None)
        if entry is not None and entry.get("digest"):
            return str(entry["digest"]), f"ran {entry['digest']}"
        if entry is not None and entry.get("image_id"):
            return None, f"ran its own copy, image {str(entry['image_id'])[:19]} (no digest)"
        shown = client.get(deployment_path(name))
        if shown.get("status") == "errored":
            return None, f"could not run it ({shown.get('status_reason') or 'errored'})"
        time.sleep(POLL_S)
    return None, f"had not resolved the tag after {timeout:.0f}s"


def _discard(client: Client, name: str) -> None:
    """Delete the deployment made by step 1 (best effort)."""
    with contextlib.suppress(CliError):
        client.request("DELETE", deployment_path(name), query={"confirm": name})
