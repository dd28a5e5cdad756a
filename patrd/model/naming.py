"""The names patrd gives what it creates: instances, containers, networks, volumes.

The one place these schemes are written; everything that shows, matches or
creates a name calls these. Pure, except that a container name ends in a
random suffix (so a slot created again never meets its previous container).

* instance ``<deployment>-<slot>`` (``web-0``): what users, logs and metrics
  call an instance, and its hostname on the deployment's network;
* container ``patrd-<deployment>-r<revision>-<slot>-<4 hex>``; a one-off's is
  ``patrd-<deployment>-<run>``;
* network ``patrd-<deployment>``: one bridge per deployment;
* volume: below.

Volumes. A deployment's volume ``data`` of instance 0 lives in the Docker volume
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

import secrets
from collections.abc import Iterable, Sequence

HOSTNAME_MAX = 63  # one DNS label


def instance_name(deployment: str, slot: int) -> str:
    return f"{deployment}-{slot}"


def container_name(deployment: str, revision: int, slot: int) -> str:
    """Unique even when a slot of one revision is created again (after a failed start)."""
    return f"patrd-{deployment}-r{revision}-{slot}-{secrets.token_hex(2)}"


def network_name(deployment: str) -> str:
    return f"patrd-{deployment}"


def oneoff_container_name(deployment: str, run: str) -> str:
    """A one-off container (``patrctl run``, a job run) of ``deployment``."""
    return f"patrd-{deployment}-{run}"


def oneoff_hostname(deployment: str, run: str) -> str:
    return f"{deployment}-{run}"[:HOSTNAME_MAX]


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


def volume_names(deployment: str, volumes: Iterable[str], slots: Sequence[int]) -> list[str]:
    """The Docker volumes of ``volumes`` in ``slots``, volume by volume."""
    return [volume_name(deployment, volume, slot) for volume in volumes for slot in slots]
