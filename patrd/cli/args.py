"""patrctl's argument types and flag groups, and the deployment bodies built from flags."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from patrd.cli.client import CliError, JsonObject, UsageError
from patrd.cli.words import PROBE_FLAGS, env_value, split_image
from patrd.model.shape import Int, Num
from patrd.model.spec_shapes import PROBE

DEFAULT_TIMEOUT_S = 300.0


# --- types and flag groups ------------------------------------------------


def env_arg(text: str) -> tuple[str, str | dict[str, str]]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(
            f"expected KEY=VALUE or KEY=secret:SECRET_NAME, got {text!r}"
        )
    return key, env_value(value)


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive: {text!r}")
    return value


def int_range(lo: int, hi: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
        if not lo <= value <= hi:
            raise argparse.ArgumentTypeError(f"must be from {lo} to {hi}")
        return value

    return parse


def add_spec_flags(p: argparse.ArgumentParser, *, replace_ports: bool = False) -> None:
    port_help = "container port, PORT or PORT:PROTOCOL (protocol http); repeatable"
    if replace_ports:
        port_help += "; replaces the current ports"
    else:
        port_help += "; optional when the image declares exactly one TCP port (EXPOSE)"
    p.add_argument("--port", action="append", default=[], metavar="PORT[:PROTO]", help=port_help)
    p.add_argument(
        "--env",
        action="append",
        default=[],
        type=env_arg,
        metavar="KEY=VALUE",
        help="repeatable; KEY=secret:NAME reads the value from secret NAME",
    )
    p.add_argument("--min", type=int, metavar="N", help="minimum instances")
    p.add_argument("--max", type=int, metavar="N", help="maximum instances (autoscaling)")
    p.add_argument("--cpu", type=float, metavar="C", help="CPUs per instance, e.g. 0.5")
    p.add_argument("--memory-mb", type=int, metavar="M", help="memory per instance in MB")
    for kind in ("startup", "liveness"):
        p.add_argument(
            f"--{kind}-probe",
            metavar="PORT:PATH",
            help=f"HTTP {kind} probe, e.g. 80:/healthz (200-399 passes)",
        )
    for flag, key, metavar, words in PROBE_FLAGS:
        shape = PROBE.fields[key]
        assert isinstance(shape, Int | Num)
        p.add_argument(
            flag,
            type=int if isinstance(shape, Int) else float,
            metavar=metavar,
            help=f"{words} (default {shape.default:g})",
        )


def add_wait_flags(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument("--wait", action="store_true", help=f"wait {what}, printing events")
    p.add_argument(
        "--timeout",
        type=positive_float,
        default=DEFAULT_TIMEOUT_S,
        metavar="S",
        help=f"give up waiting after S seconds (default {DEFAULT_TIMEOUT_S:g})",
    )


# --- request bodies -------------------------------------------------------


def ports_from_args(values: Sequence[str]) -> dict[str, str]:
    """``["80", "8080:http"]`` → ``{"80": "http", "8080": "http"}``; the API validates."""
    ports: dict[str, str] = {}
    for value in values:
        number, _, proto = value.partition(":")
        ports[number.strip()] = proto.strip() or "http"
    return ports


def create_body(args: argparse.Namespace) -> JsonObject:
    """The POST body from ``--file`` and/or flags (flags win)."""
    body: JsonObject = load_spec_file(args.file) if args.file else {}
    if not args.file:
        missing = [
            flag for flag, value in (("NAME", args.name), ("--image", args.image)) if not value
        ]
        if missing:
            raise UsageError(f"create needs {', '.join(missing)} (or --file SPEC.json)")
    image, tag, registry = _image_flags(args)
    for key, value in (
        ("name", args.name),
        ("image", image),
        ("tag", tag),
        ("registry", registry),
        ("region", args.region),
    ):
        if value is not None:
            body[key] = value
    if args.port:
        body["ports"] = ports_from_args(args.port)
    if args.env:
        body["env"] = {**_as_dict(body.get("env")), **dict(args.env)}
    scale = _scale_flags(args)
    if scale:
        body["scale"] = {**_as_dict(body.get("scale")), **scale}
    resources = _resource_flags(args)
    if resources:
        body["resources"] = {**_as_dict(body.get("resources")), **resources}
    if args.no_deploy:
        body["deploy_on_create"] = False
    body.update(_probe_flags(args))
    return body


def _image_flags(args: argparse.Namespace) -> tuple[str | None, str | None, str | None]:
    """``--image ghcr.io/org/app:v2`` → (org/app, v2, ghcr.io); --tag/--registry fill the rest."""
    if args.image is None:
        return None, args.tag, args.registry
    registry, repo, tag, _digest = split_image(args.image)  # the digest: image_digest()
    if tag is not None and args.tag is not None and tag != args.tag:
        raise UsageError(f"--image {args.image} has tag {tag!r} but --tag says {args.tag!r}")
    if registry is not None and args.registry is not None and registry != args.registry:
        raise UsageError(
            f"--image {args.image} names registry {registry!r} but --registry says "
            f"{args.registry!r}"
        )
    return repo, tag or args.tag, registry or args.registry


def image_digest(args: argparse.Namespace) -> str | None:
    """The ``@sha256:…`` of ``--image REPO[:TAG]@sha256:…``, checked; None without one.

    The create body carries the tag (``latest`` when none is given); the
    digest is what that tag must point at (``patrd.cli.pinning``).
    """
    if getattr(args, "image", None) is None:
        return None
    digest = split_image(args.image)[3]
    if digest is None:
        return None
    algo, _, hexpart = digest.partition(":")
    if algo != "sha256" or len(hexpart) != 64 or set(hexpart) - set("0123456789abcdef"):
        raise UsageError(
            f"--image {args.image}: a digest is sha256: and 64 lowercase hex characters"
        )
    return digest


def _probe_flags(args: argparse.Namespace) -> JsonObject:
    """``--startup-probe 80:/healthz`` (+ shared period/timeout/failures) → probe bodies."""
    probes: JsonObject = {}
    for kind in ("startup", "liveness"):
        if getattr(args, f"no_{kind}_probe", False):
            probes[f"{kind}_probe"] = None
            continue
        text = getattr(args, f"{kind}_probe", None)
        if text is None:
            continue
        port, sep, path = text.partition(":")
        if not sep or not port.isdigit() or not path.startswith("/"):
            raise UsageError(f"--{kind}-probe must be PORT:PATH, e.g. 80:/healthz")
        probe: JsonObject = {"port": int(port), "path": path}
        for flag, key, *_ in PROBE_FLAGS:
            value = getattr(args, flag.removeprefix("--").replace("-", "_"))
            if value is not None:
                probe[key] = value
        probes[f"{kind}_probe"] = probe
    return probes


def update_body(args: argparse.Namespace, current: JsonObject) -> JsonObject:
    """The PATCH body: env is merged into the current spec's env, the rest is partial."""
    body: JsonObject = {}
    if args.env or args.unset_env:
        env = dict(_as_dict(current.get("env")))
        for key in args.unset_env:
            if key not in env:
                raise CliError(f"--unset-env {key}: {key} is not set")
            del env[key]
        env.update(dict(args.env))
        body["env"] = env
    if args.port:
        body["ports"] = ports_from_args(args.port)
    scale = _scale_flags(args)
    if scale:
        body["scale"] = scale
    resources = _resource_flags(args)
    if resources:
        body["resources"] = resources
    body.update(_probe_flags(args))
    return body


def load_spec_file(path: str) -> JsonObject:
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text()
    except OSError as exc:
        raise CliError(f"cannot read {path}: {exc.strerror or exc}") from exc
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise CliError(f"{path} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise CliError(f"{path} must hold a JSON object")
    return data


def _scale_flags(args: argparse.Namespace) -> JsonObject:
    return {k: v for k, v in (("min", args.min), ("max", args.max)) if v is not None}


def _resource_flags(args: argparse.Namespace) -> JsonObject:
    pairs = (("cpu", args.cpu), ("memory_mb", args.memory_mb))
    return {k: v for k, v in pairs if v is not None}


def _as_dict(value: Any) -> JsonObject:
    return dict(value) if isinstance(value, dict) else {}
