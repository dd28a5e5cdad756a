"""What an instance's container is made of: its spec, env and registry credentials.

One-off runs (patrd/run/oneoff.py) start from the same spec.
"""

from __future__ import annotations

from collections.abc import Mapping

from patrd.control.options import ControllerOptions
from patrd.model.deployment import DeploymentRecord
from patrd.model.errors import EngineError
from patrd.model.instances import InstanceSpec, RegistryAuth
from patrd.model.naming import instance_name, network_name, volume_name
from patrd.model.spec import LOCAL_REGISTRY, DeploymentSpec
from patrd.state.crypto import SecretsKeyError
from patrd.state.vault import Vault


class InstanceStartError(EngineError):
    """The engine refused to create or first start an instance (e.g. a user the image lacks).

    Unlike Docker being unreachable, this is the deployment's own problem: it is
    put into its status and events at once rather than only into the daemon log.
    """


def instance_env(
    record: DeploymentRecord, slot: int, user_env: Mapping[str, str]
) -> tuple[tuple[str, str], ...]:
    """The user's env (secrets resolved) plus the variables patrd always sets (docs/env.md)."""
    special = {
        "PATR": "true",
        "DEPLOYMENT_ID": record.id,
        "DEPLOYMENT_NAME": record.name,
        "CONFIG_MAP_HASH": record.spec.config_map_hash,
        "PATRD_INSTANCE": str(slot),
        "PATRD_REVISION": str(record.revision),
    }
    return tuple(sorted({**user_env, **special}.items()))


async def registry_auth_for(
    spec: DeploymentSpec, ref: str, options: ControllerOptions, vault: Vault | None
) -> RegistryAuth | None:
    """The credentials a pull or digest query of ``ref`` sends: the deployment's
    ``registry_auth`` secret, else the node registry's generated credential."""
    if spec.registry_auth is not None:
        if vault is None:
            raise SecretsKeyError("registry_auth needs the secrets key")
        return await vault.registry_auth(spec, ref.split("/", 1)[0])
    if spec.registry in (LOCAL_REGISTRY, options.local_registry):
        return options.local_registry_auth
    return None


async def resolve_env(spec: DeploymentSpec, vault: Vault | None) -> dict[str, str]:
    """The user's env with secrets resolved (the vault decrypts them)."""
    if vault is not None:
        return dict(await vault.env_values(spec))
    if spec.secret_names:
        raise SecretsKeyError("this deployment uses secrets but the daemon has no key")
    return {k: str(v) for k, v in spec.env}


def instance_spec(
    record: DeploymentRecord,
    options: ControllerOptions,
    *,
    slot: int,
    template: str,
    image: str,
    user_env: Mapping[str, str],
    name: str,
) -> InstanceSpec:
    """The container an instance (slot) of ``record`` is made of; one-offs start from it too.

    Its volumes carry today's names; the caller replaces them with what
    ``Engine.ensure_volume`` answered (an adopted legacy name, patrd/model/naming.py).
    """
    spec = record.spec
    config_dir = None
    if spec.config_mounts and options.config_root is not None:
        config_dir = options.config_root / record.id
    return InstanceSpec(
        container_name=name,
        deployment_id=record.id,
        deployment=record.name,
        revision=record.revision,
        slot=slot,
        template=template,
        image=image,
        env=instance_env(record, slot, user_env),
        network=network_name(record.name),
        hostname=instance_name(record.name, slot),
        cpu=spec.resources.cpu,
        memory_mb=spec.resources.memory_mb,
        stop_timeout_s=options.stop_timeout_s,
        config_dir=str(config_dir) if config_dir is not None else None,
        config_files=spec.config_mounts,
        volumes=tuple((volume_name(record.name, v.name, slot), v.path) for v in spec.volumes),
        extra_capabilities=spec.security.extra_capabilities,
        pids_limit=spec.security.pids_limit,
        # Swarm publishes these per task; Docker ignores them.
        ports=tuple(
            dict.fromkeys(
                (
                    *spec.http_ports,
                    *(p.port for p in (spec.startup_probe, spec.liveness_probe) if p),
                )
            )
        ),
    )
