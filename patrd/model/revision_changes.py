"""What changed between two revisions' specs, in words (the history's "what changed").

Pure: two ``DeploymentSpec.to_json()`` dicts in, short phrases out. Values of
environment variables and config files are never named (they may be secret);
only which names were added, removed or changed.
"""

from __future__ import annotations

from typing import Any

# Keys whose value is a mapping of names: say which names came and went.
_NAMED = {
    "env": "env",
    "config_mounts": "config file",
    "volumes": "volume",
    "ports": "port",
}
_LABELS = {
    "tag": "tag",
    "image": "image",
    "registry": "registry",
    "scale": "scale",
    "resources": "resources",
    "startup_probe": "startup probe",
    "liveness_probe": "liveness probe",
    "deploy_on_push": "deploy on push",
    "deploy_on_create": "deploy on create",
    "registry_auth": "registry credentials",
    "security": "security settings",
    "region": "region",
    "backup": "backup settings",
}
_SHOWN = {"tag", "image", "registry", "region"}  # short and not secret: show before → after


def spec_changes(before: dict[str, Any] | None, after: dict[str, Any]) -> list[str]:
    """Phrases such as ``env GREETING changed``, ``tag v1 → v2``, ``scale changed``."""
    if before is None:
        return []
    out: list[str] = []
    for key, noun in _NAMED.items():
        old, new = before.get(key) or {}, after.get(key) or {}
        added = sorted(set(new) - set(old))
        removed = sorted(set(old) - set(new))
        changed = sorted(k for k in set(old) & set(new) if old[k] != new[k])
        for names, verb in ((added, "added"), (removed, "removed"), (changed, "changed")):
            if names:
                out.append(f"{noun} {', '.join(names)} {verb}")
    for key, label in _LABELS.items():
        if before.get(key) != after.get(key):
            if key in _SHOWN:
                out.append(f"{label} {before.get(key)} → {after.get(key)}")
            else:
                out.append(f"{label} changed")
    return out
