"""The field parsers of a deployment spec: one per field, each naming the path it refuses.

What a single field can be is declared in patrd/model/spec_shapes.py and
checked through it; what depends on other fields (a probe's port among the
http ports, volumes only growing, no autoscaling with volumes) is decided
here, in pure functions.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from typing import Any

from patrd.model import cron
from patrd.model.capabilities import KNOWN_CAPABILITIES
from patrd.model.checks import object_at, str_at
from patrd.model.errors import SpecError
from patrd.model.spec_shapes import (
    BACKUP,
    CONFIG_DIR,
    CONFIG_NAME_RE,
    DEFAULT_JOB_TIMEOUT_S,
    DEFAULT_REGISTRY,
    ENV_NAME_RE,
    IMAGE_COMPONENT_RE,
    JOB,
    LOCAL_REGISTRY,
    MAX_CONFIG_FILE_BYTES,
    MAX_CONFIG_FILES,
    MAX_CONFIG_TOTAL_BYTES,
    MAX_ENV_VALUE_BYTES,
    MAX_ENV_VARS,
    MAX_HOOK_ARGS,
    MAX_HOOK_BYTES,
    MAX_JOB_ARGS,
    MAX_JOB_COMMAND_BYTES,
    MAX_JOBS,
    MAX_NAME,
    MAX_PROBE_PATH,
    MAX_VOLUMES,
    NAME_RE,
    PROBE,
    REGISTRY_RE,
    RESERVED_ENV,
    RESOURCES,
    SCALE,
    SECRET_NAME_RE,
    SECURITY,
    TAG_RE,
    VOLUME,
    VOLUME_NAME_RE,
    PortProtocol,
)
from patrd.model.spec_types import (
    BackupSpec,
    EnvValue,
    JobSpec,
    ProbeSpec,
    Resources,
    Scale,
    SecretRef,
    SecuritySpec,
    VolumeSpec,
)


def required(obj: Mapping[str, Any], key: str) -> Any:
    if key not in obj or obj[key] is None:
        raise SpecError(key, "is required")
    return obj[key]


def name(value: Any) -> str:
    name = str_at(value, "name")
    if not 2 <= len(name) <= MAX_NAME:
        raise SpecError(
            "name",
            f"must be 2 to {MAX_NAME} characters long: every default hostname label "
            f"<port>-<name> must fit DNS's 63 characters (ports have up to 5 digits), "
            f"got {len(name)}",
        )
    if not NAME_RE.fullmatch(name):
        raise SpecError(
            "name",
            "may contain only lowercase letters, digits and '-', "
            "and must start and end with a letter or digit",
        )
    return name


def registry(value: Any) -> str:
    registry = str_at(value, "registry").strip().lower()
    if registry in {"docker.io", "registry-1.docker.io", "index.docker.io", "hub.docker.com"}:
        return DEFAULT_REGISTRY
    if registry == LOCAL_REGISTRY:
        return LOCAL_REGISTRY
    if len(registry) > 253 or not REGISTRY_RE.fullmatch(registry):
        raise SpecError("registry", "must be a registry host name, optionally with :port")
    return registry


def image(value: Any) -> str:
    image = str_at(value, "image")
    if not image or len(image) > 255:
        raise SpecError("image", "must be 1 to 255 characters long")
    if ":" in image or "@" in image:
        raise SpecError("image", "give the repository only; put the tag in 'tag'")
    for part in image.split("/"):
        if not IMAGE_COMPONENT_RE.fullmatch(part):
            raise SpecError(
                "image",
                f"invalid repository component {part!r}: lowercase letters, digits and "
                "single '.', '_', '__' or '-' separators",
            )
    return image


def tag(value: Any) -> str:
    tag = str_at(value, "tag")
    if not TAG_RE.fullmatch(tag):
        raise SpecError(
            "tag",
            "a tag is 1 to 128 letters, digits, '_', '.' or '-', not starting with '.' or '-'",
        )
    return tag


def ports(value: Any) -> tuple[tuple[int, PortProtocol], ...]:
    obj = object_at(value, "ports")
    if not obj:
        raise SpecError("ports", "expose at least one port")
    ports: dict[int, PortProtocol] = {}
    for key, proto in obj.items():
        path = f"ports.{key}"
        if not isinstance(key, str) or not (key.isascii() and key.isdigit()) or key[0] == "0":
            raise SpecError(path, "port must be a number from 1 to 65535")
        number = int(key)
        if not 1 <= number <= 65535:
            raise SpecError(path, "port must be a number from 1 to 65535")
        try:
            ports[number] = PortProtocol(str_at(proto, path))
        except ValueError:
            allowed = ", ".join(p.value for p in PortProtocol)
            raise SpecError(path, f"unknown protocol {proto!r}; allowed: {allowed}") from None
    return tuple(sorted(ports.items()))


def env(value: Any) -> tuple[tuple[str, EnvValue], ...]:
    obj = object_at(value, "env")
    if len(obj) > MAX_ENV_VARS:
        raise SpecError("env", f"at most {MAX_ENV_VARS} variables")
    env: list[tuple[str, EnvValue]] = []
    for key, val in obj.items():
        path = f"env.{key}"
        if not ENV_NAME_RE.fullmatch(key):
            raise SpecError(
                path, "a variable name is letters, digits and '_', not starting with a digit"
            )
        if key in RESERVED_ENV:
            raise SpecError(path, "is set by patrd on every container and cannot be overridden")
        if isinstance(val, Mapping):
            env.append((key, secret_ref(val, path)))
            continue
        if not isinstance(val, str):
            raise SpecError(path, 'must be a string or {"secret": "<name>"}')
        text = val
        if "\x00" in text:
            raise SpecError(path, "must not contain NUL characters")
        if len(text.encode()) > MAX_ENV_VALUE_BYTES:
            raise SpecError(path, f"value longer than {MAX_ENV_VALUE_BYTES} bytes")
        env.append((key, text))
    return tuple(sorted(env))


def secret_ref(value: Mapping[str, Any], path: str) -> SecretRef:
    if set(value) != {"secret"}:
        raise SpecError(path, 'a secret reference is {"secret": "<name>"} and nothing else')
    name = value["secret"]
    if not isinstance(name, str) or not SECRET_NAME_RE.fullmatch(name):
        raise SpecError(
            f"{path}.secret", "a secret name is 1 to 64 letters, digits, '_', '.' or '-'"
        )
    return SecretRef(name)


def security(value: Any) -> SecuritySpec:
    obj = SECURITY.check(value, "security")
    caps_raw = obj.get("extra_capabilities", [])
    if not isinstance(caps_raw, list) or not all(isinstance(c, str) for c in caps_raw):
        raise SpecError("security.extra_capabilities", "must be a list of capability names")
    caps = []
    for i, cap in enumerate(caps_raw):
        name = cap.upper().removeprefix("CAP_")
        if name not in KNOWN_CAPABILITIES:
            raise SpecError(f"security.extra_capabilities[{i}]", f"unknown capability {cap!r}")
        caps.append(name)
    pids = obj.get("pids_limit")
    if pids is not None:
        pids = SECURITY.field(obj, "pids_limit", "security")
    return SecuritySpec(extra_capabilities=tuple(sorted(set(caps))), pids_limit=pids)


def registry_auth(value: Any) -> SecretRef | None:
    if value is None:
        return None
    return secret_ref(object_at(value, "registry_auth"), "registry_auth")


def secret_name(value: Any) -> str:
    """Validate a secret's own name (the API's ``name`` field)."""
    name = str_at(value, "name")
    if not SECRET_NAME_RE.fullmatch(name):
        raise SpecError("name", "must be 1-64 of [A-Za-z0-9_.-], starting with a letter or digit")
    return name


def config_file_name(name: str, path: str) -> str:
    if not CONFIG_NAME_RE.fullmatch(name) or name in {".", ".."}:
        raise SpecError(
            path,
            "file name may hold only letters, digits and the characters _ . ( ) - "
            f"(and is not . or ..); files live in {CONFIG_DIR}",
        )
    if len(name) > 255:
        raise SpecError(path, "file name longer than 255 characters")
    return name


def config_mounts(value: Any) -> tuple[tuple[str, bytes], ...]:
    obj = object_at(value, "config_mounts")
    if len(obj) > MAX_CONFIG_FILES:
        raise SpecError("config_mounts", f"at most {MAX_CONFIG_FILES} files")
    files: list[tuple[str, bytes]] = []
    total = 0
    for key, raw in obj.items():
        path = f"config_mounts.{key}"
        if "/" in key:
            raise SpecError(
                path, f"config files are mounted in {CONFIG_DIR} only: give a file name, not a path"
            )
        config_file_name(key, path)
        if not isinstance(raw, str):
            raise SpecError(path, "must be the file's content in base64")
        try:
            content = base64.b64decode(raw, validate=True)
        except (binascii.Error, ValueError):
            raise SpecError(path, "is not valid base64") from None
        if len(content) > MAX_CONFIG_FILE_BYTES:
            raise SpecError(path, f"larger than {MAX_CONFIG_FILE_BYTES // 1024} KiB")
        total += len(content)
        files.append((key, content))
    if total > MAX_CONFIG_TOTAL_BYTES:
        raise SpecError("config_mounts", f"larger than {MAX_CONFIG_TOTAL_BYTES // 1024} KiB in all")
    return tuple(sorted(files))


def volumes(value: Any) -> tuple[VolumeSpec, ...]:
    obj = object_at(value, "volumes")
    if len(obj) > MAX_VOLUMES:
        raise SpecError("volumes", f"at most {MAX_VOLUMES} volumes")
    volumes: list[VolumeSpec] = []
    paths: dict[str, str] = {}
    for key, raw in obj.items():
        path = f"volumes.{key}"
        if not VOLUME_NAME_RE.fullmatch(key):
            raise SpecError(
                path, "name must be 1-32 of [a-z0-9_-], starting with a letter or digit"
            )
        item = VOLUME.check(raw, path)
        mount = str_at(required_at(item, "path", path), f"{path}.path")
        normal = "/" + "/".join(p for p in mount.split("/") if p)
        if not mount.startswith("/") or ".." in mount.split("/") or normal == "/":
            raise SpecError(f"{path}.path", "must be an absolute path other than /, without ..")
        if normal == CONFIG_DIR or normal.startswith(CONFIG_DIR + "/"):
            raise SpecError(f"{path}.path", f"{CONFIG_DIR} is reserved for config mounts")
        if normal in paths:
            raise SpecError(f"{path}.path", f"already used by volume {paths[normal]}")
        paths[normal] = key
        required_at(item, "size_gb", path)
        size = VOLUME.field(item, "size_gb", path)
        volumes.append(VolumeSpec(key, normal, size))
    return tuple(sorted(volumes, key=lambda v: v.name))


def backup(value: Any) -> BackupSpec:
    obj = BACKUP.check(value, "backup")
    hooks = BACKUP.fields["hooks"].check(obj.get("hooks", {}), "backup.hooks")
    return BackupSpec(
        pre=hook(hooks.get("pre"), "backup.hooks.pre"),
        post=hook(hooks.get("post"), "backup.hooks.post"),
    )


def hook(value: Any, path: str) -> tuple[str, ...]:
    """A command: a shell line (run with /bin/sh -c) or an argv list; none: ()."""
    if value is None or value == "" or value == []:
        return ()
    if isinstance(value, str):
        argv = ["/bin/sh", "-c", value]
    elif isinstance(value, list) and all(isinstance(a, str) for a in value):
        argv = list(value)
    else:
        raise SpecError(path, "must be a shell command (string) or an argv (list of strings)")
    if len(argv) > MAX_HOOK_ARGS or sum(len(a.encode()) for a in argv) > MAX_HOOK_BYTES:
        raise SpecError(path, f"at most {MAX_HOOK_ARGS} arguments and {MAX_HOOK_BYTES} bytes")
    if any("\x00" in a for a in argv) or not argv[0]:
        raise SpecError(path, "must name a program and contain no NUL characters")
    return tuple(argv)


def jobs(value: Any) -> tuple[JobSpec, ...]:
    obj = object_at(value, "jobs")
    if len(obj) > MAX_JOBS:
        raise SpecError("jobs", f"at most {MAX_JOBS} jobs")
    jobs = []
    for key, raw in obj.items():
        path = f"jobs.{key}"
        if not isinstance(key, str) or len(key) > 40 or not NAME_RE.fullmatch(key):
            raise SpecError(path, "name must be 1-40 of [a-z0-9-], not starting or ending with -")
        item = JOB.check(raw, path)
        schedule = str_at(required_at(item, "schedule", path), f"{path}.schedule")
        try:
            cron.parse(schedule)
        except cron.ScheduleError as exc:
            raise SpecError(f"{path}.schedule", str(exc)) from None
        command = required_at(item, "command", path)
        if not isinstance(command, list) or not command:
            raise SpecError(f"{path}.command", "must be a non-empty list of strings (argv)")
        if len(command) > MAX_JOB_ARGS:
            raise SpecError(f"{path}.command", f"at most {MAX_JOB_ARGS} arguments")
        for i, arg in enumerate(command):
            if not isinstance(arg, str) or "\x00" in arg:
                raise SpecError(f"{path}.command.{i}", "must be a string without NUL")
        if sum(len(a.encode()) for a in command) > MAX_JOB_COMMAND_BYTES:
            raise SpecError(f"{path}.command", f"longer than {MAX_JOB_COMMAND_BYTES} bytes")
        timeout = (
            JOB.field(item, "timeout_s", path) if "timeout_s" in item else DEFAULT_JOB_TIMEOUT_S
        )
        jobs.append(JobSpec(key, schedule.strip(), tuple(command), timeout))
    return tuple(sorted(jobs, key=lambda j: j.name))


def grow_volumes(
    current: tuple[VolumeSpec, ...], wanted: tuple[VolumeSpec, ...]
) -> tuple[VolumeSpec, ...]:
    """Volumes are fixed at create; only ``size_gb`` may grow."""
    old = {v.name: v for v in current}
    new = {v.name: v for v in wanted}
    if set(old) != set(new):
        changed = sorted(set(new) ^ set(old))
        raise SpecError(
            f"volumes.{changed[0]}",
            "volumes cannot be added or removed after create; only size_gb can grow",
        )
    for name, volume in new.items():
        if volume.path != old[name].path:
            raise SpecError(f"volumes.{name}.path", "a volume's path cannot change")
        if volume.size_gb < old[name].size_gb:
            raise SpecError(f"volumes.{name}.size_gb", f"can only grow (now {old[name].size_gb})")
    return wanted


def volumes_fix_scale(volumes: tuple[VolumeSpec, ...], scale: Scale) -> None:
    if volumes and scale.max != scale.min:
        raise SpecError(
            "scale.max",
            "deployments with volumes do not autoscale: set scale.max equal to scale.min",
        )


def scale(value: Any, base: Scale | None = None) -> Scale:
    obj = SCALE.check(value, "scale")
    start = base or Scale()
    lo = SCALE.field(obj, "min", "scale") if "min" in obj else start.min
    hi = SCALE.field(obj, "max", "scale") if "max" in obj else max(start.max, lo)
    if hi < lo:
        raise SpecError("scale.max", f"must be at least scale.min ({lo})")
    target = SCALE.field(obj, "target_cpu", "scale") if "target_cpu" in obj else start.target_cpu
    return Scale(min=lo, max=hi, target_cpu=target)


def resources(value: Any, base: Resources | None = None) -> Resources:
    obj = RESOURCES.check(value, "resources")
    start = base or Resources()
    cpu = RESOURCES.field(obj, "cpu", "resources") if "cpu" in obj else start.cpu
    memory = (
        RESOURCES.field(obj, "memory_mb", "resources") if "memory_mb" in obj else start.memory_mb
    )
    return Resources(cpu=cpu, memory_mb=memory)


def probe(value: Any, path: str, ports: tuple[tuple[int, PortProtocol], ...]) -> ProbeSpec | None:
    if value is None:
        return None
    obj = PROBE.check(value, path)
    port = PROBE.fields["port"].check(required_at(obj, "port", path), f"{path}.port")
    probe_port(port, f"{path}.port", ports)
    probe_path = str_at(obj.get("path", "/"), f"{path}.path")
    if not probe_path.startswith("/"):
        raise SpecError(f"{path}.path", "must start with '/'")
    if len(probe_path) > MAX_PROBE_PATH:
        raise SpecError(f"{path}.path", f"at most {MAX_PROBE_PATH} characters")
    if any(c.isspace() or ord(c) < 0x21 or ord(c) == 0x7F for c in probe_path):
        raise SpecError(f"{path}.path", "must not contain spaces or control characters")
    period = PROBE.field(obj, "period_s", path) if "period_s" in obj else 10.0
    timeout = PROBE.field(obj, "timeout_s", path) if "timeout_s" in obj else 3.0
    threshold = PROBE.field(obj, "failure_threshold", path) if "failure_threshold" in obj else 15
    return ProbeSpec(
        port=port,
        path=probe_path,
        period_s=period,
        timeout_s=timeout,
        failure_threshold=threshold,
    )


def probe_port(port: int, path: str, ports: tuple[tuple[int, PortProtocol], ...]) -> None:
    http = [p for p, proto in ports if proto is PortProtocol.HTTP]
    if port not in http:
        listed = ", ".join(str(p) for p in http)
        raise SpecError(path, f"must be one of the deployment's http ports ({listed})")


def required_at(obj: Mapping[str, Any], key: str, prefix: str) -> Any:
    if key not in obj or obj[key] is None:
        raise SpecError(f"{prefix}.{key}", "is required")
    return obj[key]


def region(value: Any, node_region: str) -> str:
    if value is None or value == "":
        return node_region
    region = str_at(value, "region")
    if region != node_region:
        raise SpecError("region", f"unknown region {region!r}; known regions: {node_region}")
    return region
