"""The API's words → the CLI user's words. Pure, standard library only.

The API names the offending input by its JSON path (``ports.99999``,
``resources.cpu``); a ``patrctl`` user typed a flag. :func:`error_line`
puts the flag first (``--port 99999: port must be …``) and rewrites the
API's field names inside the message (``scale.min`` → ``--min``). Fields
with no flag keep the path in ``(field: …)``.

:func:`split_image` reads ``[REGISTRY/]REPO[:TAG|@DIGEST]`` the way docker,
kamal and fly do; :func:`env_value` reads ``--env NAME=secret:SECRET``;
:func:`suggest` is the "did you mean" of a mistyped verb.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable

SECRET_PREFIX = "secret:"  # noqa: S105 (a prefix, not a password)

# JSON path (exact) → the flag that sets it.
_FLAGS: dict[str, str] = {
    "name": "NAME",
    "image": "--image",
    "tag": "--tag",
    "registry": "--registry",
    "region": "--region",
    "ports": "--port",
    "env": "--env",
    "scale.min": "--min",
    "scale.max": "--max",
    "resources.cpu": "--cpu",
    "resources.memory_mb": "--memory-mb",
    "confirm": "--confirm",
    "instance": "--instance",
    "since": "--since",
    "until": "--until",
    "tail": "--tail",
    "limit": "--limit",
    "range": "--range",
    "target.port": "--port",
    "target.deployment": "--deployment",
    "expires_in": "--expires",
    "scope": "--scope",
    "deployments": "--deployment",
    "value": "--value",
    "startup_probe": "--startup-probe",
    "liveness_probe": "--liveness-probe",
}
# The flags both probes share: flag, the probe field it sets, metavar, words (their
# types and defaults are the probe's declared shape, patrd/model/spec_shapes.py).
PROBE_FLAGS = (
    ("--probe-period", "period_s", "S", "probe period"),
    ("--probe-timeout", "timeout_s", "S", "probe timeout"),
    ("--probe-failures", "failure_threshold", "N", "failure threshold"),
)
_PROBE_PARTS = {key: flag for flag, key, *_ in PROBE_FLAGS}
# API words inside messages, longest first so "scale.min" wins over "scale".
_IN_MESSAGE = (
    ("scale.min", "--min"),
    ("scale.max", "--max"),
    ("resources.cpu", "--cpu"),
    ("resources.memory_mb", "--memory-mb"),
    ("put the tag in 'tag'", "give it as REPO:TAG or with --tag"),
)
_WORD_RE = re.compile(r"[A-Za-z0-9_.-]+")


def flag_for(field: str) -> str | None:
    """``ports.99999`` → ``--port 99999``; ``env.DB.secret`` → ``--env DB``; else None."""
    if field in _FLAGS:
        return _FLAGS[field]
    head, _, rest = field.partition(".")
    if head == "ports" and rest:
        return f"--port {rest}"
    if head == "env" and rest:
        return f"--env {rest.split('.', 1)[0]}"
    if head in ("startup_probe", "liveness_probe") and rest:
        part = rest.split(".", 1)[0]
        if part in _PROBE_PARTS:
            return _PROBE_PARTS[part]
        return _FLAGS[head]
    return None


def error_line(message: str, field: str | None, prog: str = "patrctl") -> str:
    """One line for stderr, in the CLI's words."""
    flag = flag_for(field) if field else None
    if flag is None:
        suffix = f" (field: {field})" if field else ""
        return f"{prog}: {message}{suffix}"
    text = message
    for api_word, cli_word in _IN_MESSAGE:
        text = text.replace(api_word, cli_word)
    return f"{prog}: {flag}: {text}"


def split_image(text: str) -> tuple[str | None, str, str | None, str | None]:
    """``ghcr.io/org/app:1.2`` → (registry, repo, tag, digest); parts absent are None.

    The first path component is a registry when it has a ``.`` or ``:`` or is
    ``localhost`` (Docker's rule); a ``:`` after the last ``/`` starts the tag.
    """
    rest, digest = text, None
    if "@" in rest:
        rest, _, digest = rest.partition("@")
    registry = None
    first, sep, remainder = rest.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost"):
        registry, rest = first, remainder
    tag = None
    slash = rest.rfind("/")
    colon = rest.rfind(":")
    if colon > slash:
        rest, tag = rest[:colon], rest[colon + 1 :]
    return registry, rest, tag, digest


def env_value(value: str) -> str | dict[str, str]:
    """``secret:db-pass`` → ``{"secret": "db-pass"}`` (a reference); anything else as is."""
    if value.startswith(SECRET_PREFIX) and len(value) > len(SECRET_PREFIX):
        return {"secret": value[len(SECRET_PREFIX) :]}
    return value


def env_cell(env: dict[str, object]) -> str:
    """``show``'s env line: names, secrets marked with the secret they read."""
    if not env:
        return "-"
    names = []
    for key in sorted(env):
        value = env[key]
        if isinstance(value, dict) and "secret" in value:
            names.append(f"{key} (secret {value['secret']})")
        else:
            names.append(key)
    return ", ".join(names) + " (values: --json)"


def suggest(word: str, choices: Iterable[str]) -> str | None:
    """The closest verb to a mistyped one, if any is close."""
    if not _WORD_RE.fullmatch(word):
        return None
    found = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return found[0] if found else None


def event_text(kind: str, message: str, revision: int | None) -> str:
    """An event's message without repeating its kind or its revision."""
    text = message
    if text.startswith(kind + " ") and kind in ("status",):
        text = text[len(kind) + 1 :]
    if revision is not None and f"revision {revision}" not in text:
        text += f" (revision {revision})"
    return text
