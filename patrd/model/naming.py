"""Docker volume names of deployment volumes. Pure.

A deployment's volume ``data`` of instance 0 lives in the Docker volume
``patrd.<deployment>.<volume>.<slot>``. Deployment names are ``[a-z0-9-]``
and volume names ``[a-z0-9_-]``: neither holds a dot, so the dotted name is
unambiguous (``a-b``/``c`` and ``a``/``b-c`` no longer meet). It is still by
deployment *name*, so volumes kept after a delete are attached again to a
deployment re-created under the same name.

Before this scheme the name was ``patrd-<deployment>-<volume>-<slot>``, which
two deployments could share. Such a volume is adopted (used as it is, data
and all) when its labels say it belongs to exactly this deployment, volume
and slot (``legacy_volume_name``); Docker cannot rename a volume.
"""

from __future__ import annotations

from collections.abc import Iterable


def volume_name(deployment: str, volume: str, slot: int) -> str:
    return f"patrd.{deployment}.{volume}.{slot}"


def legacy_volume_name(deployment: str, volume: str, slot: int) -> str:
    """The name patrd used before the dotted scheme (ambiguous; adopted by labels only)."""
    return f"patrd-{deployment}-{volume}-{slot}"


def volume_of(docker_name: str, deployment: str, volumes: Iterable[str]) -> str | None:
    """Which of ``volumes`` (of ``deployment``) the Docker volume ``docker_name`` holds."""
    for volume in volumes:
        prefixes = (f"patrd.{deployment}.{volume}.", f"patrd-{deployment}-{volume}-")
        for prefix in prefixes:
            rest = docker_name.removeprefix(prefix)
            if rest != docker_name and rest.isdigit():
                return volume
    return None
