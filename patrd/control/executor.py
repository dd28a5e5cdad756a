"""Names of a deployment's Docker objects (network, instance, container).

The executor itself lives in the modules around this one: ``controller.py``
(the workers and the Docker event watch), ``worker.py`` (one deployment's
convergence loop), ``steps.py`` (applying a plan), ``instances.py`` (what a
container is made of), ``images.py`` (which image a revision runs),
``probing.py`` (startup and liveness checks), ``decisions.py`` and
``start_faults.py`` (its decisions, pure).
"""

from __future__ import annotations

import secrets


def network_name(deployment: str) -> str:
    return f"patrd-{deployment}"


def instance_name(deployment: str, slot: int) -> str:
    return f"{deployment}-{slot}"


def container_name(deployment: str, revision: int, slot: int) -> str:
    """Unique even when a slot of one revision is created again (after a failed start)."""
    return f"patrd-{deployment}-r{revision}-{slot}-{secrets.token_hex(2)}"
