"""Pure decisions of notifications: which kind an event is, who wants it, what it says.

Events are written under their own short kinds (``rollout_failed``, ``tls``,
``unhealthy`` …, see patrd/state/store.py and the controllers); notification kinds
are dotted names a user filters on (``rollout.failed``, ``certificate.*``).
``classify`` maps one to the other with an ordered rule table, first match
wins; an event whose kind is already a known notification kind (``disk.low``,
``backup.failed``, ``job.failed`` …) passes through unchanged, so new
emitters only have to pick a name from ``KINDS``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

# Every notification kind, with what it means (README: Notifications).
KINDS: Mapping[str, str] = {
    "rollout.succeeded": "a new revision is fully rolled out",
    "rollout.failed": "a rollout failed and the deployment went back to its stable revision",
    "instance.crashloop": "an instance keeps failing (3rd consecutive failure or more)",
    "instance.restarted": "an instance crashed or was unhealthy and was restarted",
    "probe.liveness_failed": "a liveness probe failed its threshold",
    "probe.startup_failed": "an instance did not become ready in time",
    "image.pull_failed": "the image could not be pulled",
    "deployment.errored": "a deployment's status became errored",
    "certificate.failed": "issuing or renewing a certificate failed",
    "certificate.expiring": "a certificate nears expiry and renewal keeps failing",
    "certificate.issued": "a certificate was issued or renewed",
    "autoscale": "the autoscaler changed a deployment's instance count",
    "disk.low": "free space on a watched mount fell below [node] disk_low_*",
    "memory.pressure": "available memory fell below [node] memory_low_percent",
    "backup.ok": "a backup completed",
    "backup.failed": "a backup failed",
    "job.failed": "a job run failed",
    "notify.test": "a test notification (patrctl notify test)",
}

# Kinds that are about delivery itself: never notified (no loops).
NEVER_NOTIFIED = frozenset({"notify.failed", "notify.dropped"})

_CRASHLOOP_RE = re.compile(r"failure #(?:[3-9]|\d{2,})\b")


@dataclass(frozen=True, slots=True)
class Rule:
    """``event kind`` (and, if set, a regex on the message) → notification kind."""

    event: str
    kind: str
    message: re.Pattern[str] | None = None


# Ordered: first match wins.
RULES: tuple[Rule, ...] = (
    Rule("rollout_failed", "rollout.failed"),
    Rule("rollout", "rollout.succeeded"),
    Rule("restart", "instance.crashloop", _CRASHLOOP_RE),
    Rule("failed_start", "instance.crashloop", _CRASHLOOP_RE),
    Rule("restart", "instance.restarted"),
    Rule("unhealthy", "probe.liveness_failed"),
    Rule("startup_failed", "probe.startup_failed"),
    Rule("pull_failed", "image.pull_failed"),
    Rule("status", "deployment.errored", re.compile(r"^status errored\b")),
    Rule("tls", "certificate.expiring", re.compile(r"\bexpires in\b")),
    Rule("tls", "certificate.failed", re.compile(r"\bfailed\b")),
    Rule("tls", "certificate.issued", re.compile(r"\b(issued|renewed)\b")),
    Rule("autoscale", "autoscale"),
)


def classify(event_kind: str, message: str) -> str | None:
    """The notification kind of an event, or None when no one is ever told about it."""
    if event_kind in NEVER_NOTIFIED:
        return None
    if event_kind in KINDS:
        return event_kind
    for rule in RULES:
        if rule.event == event_kind and (rule.message is None or rule.message.search(message)):
            return rule.kind
    return None


def check_filter(pattern: str) -> str | None:
    """Why ``pattern`` is not a valid event filter, or None when it is.

    Valid: ``*``; a known kind; a prefix ending in ``.*`` (``rollout.*``)
    that at least one known kind starts with.
    """
    if pattern == "*":
        return None
    if pattern.endswith(".*"):
        prefix = pattern[:-1]
        if any(kind.startswith(prefix) for kind in KINDS):
            return None
        return f"no notification kind starts with {prefix!r}"
    if pattern in KINDS:
        return None
    return f"unknown notification kind {pattern!r}; known: {', '.join(sorted(KINDS))}"


def matches(filters: Iterable[str], kind: str) -> bool:
    """Whether a notification of ``kind`` passes a target's event filter."""
    for pattern in filters:
        if pattern == "*" or pattern == kind:
            return True
        if pattern.endswith(".*") and kind.startswith(pattern[:-1]):
            return True
    return False


REDACTED = "[redacted]"
MIN_REDACTED_LEN = 4  # shorter values ("1", "on") would shred every message


def redact(text: str, values: Iterable[str]) -> str:
    """``text`` with every occurrence of a secret or env value replaced, longest first."""
    for value in sorted({v for v in values if len(v) >= MIN_REDACTED_LEN}, key=len, reverse=True):
        text = text.replace(value, REDACTED)
    return text


@dataclass(frozen=True, slots=True)
class Notification:
    """What every sender renders: nothing from a spec, so no env or secret value."""

    id: str  # "d<event id>" (deployment events) or "n<event id>" (node events)
    kind: str
    event: str  # the event's own kind, as in GET /v1/deployments/{name}/events
    message: str
    at: float
    node: str
    deployment: str | None = None
    revision: int | None = None

    def payload(self) -> dict[str, Any]:
        """The JSON body of the generic webhook (README: Notifications)."""
        return {
            "id": self.id,
            "kind": self.kind,
            "event": self.event,
            "deployment": self.deployment,
            "revision": self.revision,
            "message": self.message,
            "at": self.at,
            "node": self.node,
        }

    def title(self) -> str:
        subject = f" {self.deployment}" if self.deployment else ""
        return f"[patrd {self.node}] {self.kind}{subject}"

    def text(self) -> str:
        return f"{self.title()}: {self.message}"
