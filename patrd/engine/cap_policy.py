"""What a deployment may loosen through the API: capabilities and the pids limit.

``spec.py`` checks that a capability *exists*; this module decides whether the
operator *allows* it (config ``[security]``). Pure functions: the API calls
:func:`check` on every spec it is about to store, the controller calls
:func:`held_violations` to warn about deployments stored before the policy.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from patrd.model.capabilities import KNOWN_CAPABILITIES
from patrd.model.errors import ConfigError, SpecError
from patrd.model.spec import SecuritySpec

__all__ = [
    "DEFAULT_ALLOWED_CAPABILITIES",
    "NEVER_FROM_API",
    "SecurityPolicy",
    "check",
    "held_violations",
    "parse_policy",
]

# Each of these is a way out of the container (or into the kernel): reading
# any host file (DAC_READ_SEARCH: open_by_handle_at), mounting, loading
# modules, tracing other processes, raw I/O, eBPF, the clock, LSM policy,
# the host's network configuration. No config value lets the API grant them.
NEVER_FROM_API: Final = frozenset(
    {
        "SYS_ADMIN",
        "SYS_MODULE",
        "DAC_READ_SEARCH",
        "SYS_PTRACE",
        "SYS_RAWIO",
        "BPF",
        "PERFMON",
        "SYS_BOOT",
        "SYS_TIME",
        "MAC_ADMIN",
        "MAC_OVERRIDE",
        "SYSLOG",
        "LINUX_IMMUTABLE",
        "NET_ADMIN",
    }
)
# Docker's own defaults that patrd drops: harmless to give back on request.
DEFAULT_ALLOWED_CAPABILITIES: Final = ("AUDIT_WRITE", "MKNOD", "NET_RAW", "SETFCAP", "SYS_CHROOT")
DEFAULT_PIDS_MIN: Final = 64
DEFAULT_PIDS_MAX: Final = 32768
ALLOWED_KEY: Final = "security.allowed_capabilities"


@dataclass(frozen=True, slots=True)
class SecurityPolicy:
    """``[security]``: the bounds of a deployment's ``security`` field."""

    allowed_capabilities: frozenset[str] = frozenset(DEFAULT_ALLOWED_CAPABILITIES)
    pids_min: int = DEFAULT_PIDS_MIN
    pids_max: int = DEFAULT_PIDS_MAX


def parse_policy(table: Mapping[str, Any]) -> SecurityPolicy:
    """The ``[security]`` table; one :class:`ConfigError` naming the key."""
    unknown = sorted(set(table) - {"allowed_capabilities", "pids_min", "pids_max"})
    if unknown:
        raise ConfigError(f"security.{unknown[0]}", "unknown key")
    raw = table.get("allowed_capabilities", list(DEFAULT_ALLOWED_CAPABILITIES))
    if not isinstance(raw, list):
        raise ConfigError(ALLOWED_KEY, "must be a list of capability names")
    allowed = set()
    for i, item in enumerate(raw):
        if not isinstance(item, str):
            raise ConfigError(f"{ALLOWED_KEY}[{i}]", "must be a capability name")
        cap = item.upper().removeprefix("CAP_")
        if cap not in KNOWN_CAPABILITIES:
            raise ConfigError(f"{ALLOWED_KEY}[{i}]", f"unknown capability {item!r}")
        if cap in NEVER_FROM_API:
            raise ConfigError(
                f"{ALLOWED_KEY}[{i}]",
                f"{cap} is never granted through the API (it reaches the host); "
                "add it to docker.capabilities to give it to every container instead",
            )
        allowed.add(cap)
    pids_min = _pids(table, "pids_min", DEFAULT_PIDS_MIN)
    pids_max = _pids(table, "pids_max", DEFAULT_PIDS_MAX)
    if pids_min > pids_max:
        raise ConfigError("security.pids_min", f"must not exceed security.pids_max ({pids_max})")
    return SecurityPolicy(frozenset(allowed), pids_min, pids_max)


def _pids(table: Mapping[str, Any], name: str, default: int) -> int:
    value = table.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 1_000_000:
        raise ConfigError(f"security.{name}", "must be a whole number from 1 to 1000000")
    return int(value)


def check(
    security: SecuritySpec,
    policy: SecurityPolicy,
    *,
    before: SecuritySpec | None = None,
    body: Any = None,
) -> None:
    """Raise :class:`SpecError` naming the first field the policy refuses.

    ``before`` is the stored spec on an update: a capability it already held
    is refused all the same (its next change must drop it), with a message
    saying so. ``body`` is the request body the spec was parsed from: the
    index in the field path is the one the client sent (the spec keeps the
    capabilities sorted).
    """
    held = set(before.extra_capabilities) if before is not None else set()
    for i, cap in enumerate(_as_sent(body) or security.extra_capabilities):
        problem = _refusal(cap, policy)
        if problem is None:
            continue
        if cap in held:
            problem += "; this deployment holds it from before the policy: drop it in this change"
        raise SpecError(f"security.extra_capabilities[{i}]", problem)
    pids = security.pids_limit
    if pids is not None and not policy.pids_min <= pids <= policy.pids_max:
        text = "0 (no limit) is not accepted" if pids == 0 else f"{pids} is out of bounds"
        raise SpecError(
            "security.pids_limit",
            f"{text}: must be from {policy.pids_min} to {policy.pids_max} "
            "(security.pids_min/pids_max in the daemon config), or null for the node default",
        )


def _as_sent(body: Any) -> tuple[str, ...]:
    """The capability names in a request body, in the client's order (validated by spec.py)."""
    if not isinstance(body, Mapping) or not isinstance(body.get("security"), Mapping):
        return ()
    caps = body["security"].get("extra_capabilities")
    if not isinstance(caps, list):
        return ()
    return tuple(str(c).upper().removeprefix("CAP_") for c in caps)


def held_violations(security: SecuritySpec, policy: SecurityPolicy) -> list[str]:
    """What a stored spec holds that the policy would refuse now (for a warning event)."""
    problems = [
        f"capability {cap}"
        for cap in security.extra_capabilities
        if _refusal(cap, policy) is not None
    ]
    pids = security.pids_limit
    if pids is not None and not policy.pids_min <= pids <= policy.pids_max:
        problems.append(f"pids_limit {pids}")
    return problems


def _refusal(cap: str, policy: SecurityPolicy) -> str | None:
    if cap in NEVER_FROM_API:
        return f"{cap} is never granted through the API: it gives a container the host"
    if cap not in policy.allowed_capabilities:
        return (
            f"{cap} is not allowed on this node; the operator can allow it with "
            f'{ALLOWED_KEY} = [..., "{cap}"] in the daemon config'
        )
    return None
