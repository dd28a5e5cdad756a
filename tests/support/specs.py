"""Deployment bodies for integration tests: the test web image behind a startup probe."""

from __future__ import annotations

from typing import Any

# The test image's health endpoint, probed often and patiently (a loaded machine is slow).
HEALTH: dict[str, Any] = {
    "port": 80,
    "path": "/cgi-bin/health",
    "period_s": 0.5,
    "failure_threshold": 20,
}


def web_spec(
    name: str, replicas: int | None = None, health: dict[str, Any] = HEALTH, **extra: Any
) -> dict[str, Any]:
    """``patrd-test/web:v1`` serving HTTP on port 80, started once ``health`` passes;
    ``replicas`` fixes the scale; ``extra`` adds or replaces fields."""
    body: dict[str, Any] = {
        "name": name,
        "image": "patrd-test/web",
        "tag": "v1",
        "ports": {"80": "http"},
        "startup_probe": health,
    }
    if replicas is not None:
        body["scale"] = {"min": replicas, "max": replicas}
    return {**body, **extra}


def node_registry_spec(name: str, repo: str, tag: str = "stable", **extra: Any) -> dict[str, Any]:
    """``repo:tag`` from the node registry (``registry: local``) serving HTTP on port 80."""
    body = {"name": name, "registry": "local", "image": repo, "tag": tag, "ports": {"80": "http"}}
    return {**body, **extra}
