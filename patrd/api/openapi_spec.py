"""The request shapes of a deployment, stated from their one declaration.

CreateDeployment, UpdateDeployment and the parts of DeploymentSpec are the
shapes patrd/model/spec_shapes.py declares and patrd/model/spec.py checks
requests with: a bound changed there changes what is accepted and what is
documented at once.
"""

from __future__ import annotations

from typing import Any

from patrd.model import spec_shapes as shapes


def _stored(schema: dict[str, Any]) -> dict[str, Any]:
    """A stored spec's view of a request part: what was defaulted is present, null when unset."""
    return {**schema, "nullable": True}


def _spec_view() -> dict[str, Any]:
    """The validated spec as the API answers it (every field present)."""
    create = shapes.CREATE.schema()["properties"]
    return {
        "type": "object",
        "description": "A validated spec, as stored (every field present).",
        "required": [
            "name",
            "registry",
            "image",
            "tag",
            "ports",
            "env",
            "scale",
            "resources",
            "deploy_on_create",
            "region",
        ],
        "properties": {
            **create,
            "name": {"type": "string"},
            "registry": {"type": "string"},
            "image": {"type": "string"},
            "tag": {"type": "string"},
            "deploy_on_create": {"type": "boolean"},
            "region": {"type": "string"},
            "startup_probe": _stored(create["startup_probe"]),
            "liveness_probe": _stored(create["liveness_probe"]),
        },
    }


SPEC_SCHEMAS: dict[str, Any] = {
    "DeploymentSpec": _spec_view(),
    "CreateDeployment": shapes.CREATE.schema(),
    "UpdateDeployment": shapes.UPDATE.schema(),
}
