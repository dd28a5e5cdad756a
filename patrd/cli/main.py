"""Command-line entry points: ``patrctl`` (the API client) and ``patrd serve``.

The client uses only the standard library (``http.client``, over the daemon's
unix socket or over TCP with a bearer token) so it starts fast; the daemon's
modules are imported only by ``daemon_main``.

Exit codes: 0 success, 1 an error (one line on stderr:
``patrctl: <message> (field: <field>)``), 2 a usage error, 130 interrupted.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import socket
import sys
import time
import urllib.parse
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from patrd import __version__
from patrd.cli.parser import VerbParser
from patrd.cli.words import env_cell, env_value, error_line, event_text, split_image

if TYPE_CHECKING:
    from patrd.settings.config import Config

DEFAULT_SOCKET = "/run/patrd/api.sock"
DEFAULT_TIMEOUT_S = 300.0
REQUEST_TIMEOUT_S = 30.0
POLL_INTERVAL_S = 1.0
SHOW_EVENTS = 5

JsonObject = dict[str, Any]


# --- errors ---------------------------------------------------------------


class CliError(Exception):
    """Printed as one line, exit 1."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field

    def line(self, prog: str = "patrctl") -> str:
        """``patrctl: --port 99999: …``: the flag the field came from, else ``(field: …)``."""
        return error_line(self.message, self.field, prog)


class ApiError(CliError):
    """The API answered with an error body."""

    def __init__(self, status: int, code: str, message: str, field: str | None = None) -> None:
        super().__init__(message, field)
        self.status = status
        self.code = code


def api_error(status: int, data: Any, fallback: str) -> ApiError:
    """The ApiError an error answer (its decoded JSON body) stands for; ``fallback``
    is the message when the body has none (not JSON, or a proxy's page)."""
    if isinstance(data, dict) and isinstance(data.get("message"), str):
        field = data.get("field")
        return ApiError(
            status,
            str(data.get("error", "")),
            data["message"],
            field if isinstance(field, str) else None,
        )
    return ApiError(status, "http", fallback)


class UsageError(CliError):
    """Bad combination of flags that argparse cannot express; exit 2."""


# --- transport ------------------------------------------------------------


class UnixHTTPConnection(http.client.HTTPConnection):
    """HTTP/1.1 over a unix stream socket."""

    def __init__(self, path: str, timeout: float = REQUEST_TIMEOUT_S) -> None:
        super().__init__("localhost", timeout=timeout)
        self.socket_path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(self.timeout)
            sock.connect(self.socket_path)
        except BaseException:
            sock.close()
            raise
        self.sock = sock


@dataclass(frozen=True, slots=True)
class Client:
    """One request per connection: the CLI makes few, and polls slowly."""

    connect: Callable[[], http.client.HTTPConnection]
    target: str  # for error messages: the socket path or the URL
    base_path: str = ""
    token: str | None = None
    hint: str = ""

    def request(
        self,
        method: str,
        path: str,
        *,
        query: dict[str, str | int] | None = None,
        body: Any = None,
    ) -> Any:
        url = self.base_path + path
        if query:
            url += "?" + urllib.parse.urlencode(query)
        headers = {"Accept": "application/json", "User-Agent": "patrctl"}
        payload: bytes | None = None
        if body is not None:
            payload = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        conn = self.connect()
        try:
            conn.request(method, url, body=payload, headers=headers)
            response = conn.getresponse()
            raw = response.read()
            status, reason = response.status, response.reason
        except OSError as exc:
            reason_text = exc.strerror or str(exc) or type(exc).__name__
            raise CliError(
                f"cannot reach patrd at {self.target}: {reason_text}{self.hint}"
            ) from exc
        except http.client.HTTPException as exc:
            raise CliError(f"bad answer from patrd at {self.target}: {exc!r}") from exc
        finally:
            conn.close()
        data = _decode(raw)
        if status >= 400:
            raise api_error(status, data, f"HTTP {status} {reason}")
        return data

    def get(self, path: str, **query: str | int) -> Any:
        return self.request("GET", path, query=query or None)


def _decode(raw: bytes) -> Any:
    if not raw:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return None


def make_client(
    *,
    socket_path: str | None,
    url: str | None,
    token_file: str | None,
    environ: Mapping[str, str] | None = None,
) -> Client:
    env = os.environ if environ is None else environ
    if url is not None:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise UsageError(f"--url must be http(s)://host[:port][/prefix], not {url!r}")
        token = _read_token(token_file) if token_file else env.get("PATRD_TOKEN") or None
        host, port = parts.hostname, parts.port
        https = parts.scheme == "https"

        def connect() -> http.client.HTTPConnection:
            if https:
                return http.client.HTTPSConnection(host, port, timeout=REQUEST_TIMEOUT_S)
            return http.client.HTTPConnection(host, port, timeout=REQUEST_TIMEOUT_S)

        return Client(connect, url, base_path=parts.path.rstrip("/"), token=token)
    path = socket_path or env.get("PATRD_SOCKET") or DEFAULT_SOCKET
    hint = (
        " (is patrd running? set --socket or PATRD_SOCKET)"
        if socket_path is None and "PATRD_SOCKET" not in env
        else ""
    )
    return Client(lambda: UnixHTTPConnection(path), path, hint=hint)


def _read_token(path: str) -> str:
    try:
        token = Path(path).read_text().strip()
    except OSError as exc:
        raise CliError(f"cannot read token file {path}: {exc.strerror or exc}") from exc
    if not token:
        raise CliError(f"token file {path} is empty")
    return token


# --- argument parsing -----------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    # Connection flags and --json are accepted before or after the verb.
    common = VerbParser(add_help=False)
    conn = common.add_argument_group("connection")
    conn.add_argument(
        "--socket",
        metavar="PATH",
        default=argparse.SUPPRESS,
        help=f"API unix socket (env PATRD_SOCKET, default {DEFAULT_SOCKET})",
    )
    conn.add_argument(
        "--url",
        metavar="URL",
        default=argparse.SUPPRESS,
        help="API over TCP instead, e.g. http://10.0.0.2:7070",
    )
    conn.add_argument(
        "--token-file",
        metavar="FILE",
        default=argparse.SUPPRESS,
        help="file holding the bearer token for --url (or env PATRD_TOKEN)",
    )
    common.add_argument(
        "--json",
        action="store_true",
        default=argparse.SUPPRESS,
        help="print the API's JSON instead of text",
    )

    parser = VerbParser(
        prog="patrctl",
        description="Manage deployments on a patrd daemon.",
        parents=[common],
    )
    parser.add_argument("--version", action="version", version=f"patrctl {__version__}")
    sub = parser.add_subparsers(dest="verb", required=True, metavar="VERB")

    def verb(name: str, help_text: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=help_text, description=help_text, parents=[common])

    p = verb("create", "create a deployment (and start it)")
    p.add_argument("name", nargs="?", metavar="NAME")
    p.add_argument("--file", metavar="SPEC.json", help="create spec as JSON ('-' for stdin)")
    p.add_argument(
        "--image",
        metavar="IMAGE",
        help="[REGISTRY/]REPO[:TAG], e.g. nginx:1.27 or ghcr.io/org/app:v2",
    )
    p.add_argument("--tag", help="image tag, if not in --image (default latest)")
    p.add_argument("--registry", help="registry host (default docker.io)")
    _add_spec_flags(p)
    p.add_argument("--no-deploy", action="store_true", help="create only; start it later")
    p.add_argument("--region", help="must be this node's region")
    _add_wait_flags(p, "until the deployment is running")

    verb("list", "list deployments")

    p = verb("show", "show one deployment, its instances and recent events")
    p.add_argument("name", metavar="NAME")

    p = verb("events", "print a deployment's events")
    p.add_argument("name", metavar="NAME")
    p.add_argument("--follow", "-f", action="store_true", help="keep printing new events")
    p.add_argument("--limit", type=_int_range(1, 1000), default=100, help="how many (default 100)")

    p = verb("update", "change env, ports, scale or resources (a new revision)")
    p.add_argument("name", metavar="NAME")
    _add_spec_flags(p, replace_ports=True)
    p.add_argument(
        "--unset-env", action="append", default=[], metavar="KEY", help="remove a variable"
    )
    p.add_argument("--no-startup-probe", action="store_true", help="remove the startup probe")
    p.add_argument("--no-liveness-probe", action="store_true", help="remove the liveness probe")
    p.add_argument(
        "--confirm-volume-loss",
        action="store_true",
        help="allow a scale-down that deletes the excess instances' volumes",
    )
    _add_wait_flags(p, "until the new revision is rolled out (exit 1 if it failed)")

    p = verb("history", "releases: the image every revision pinned, and how it got it")
    p.add_argument("name", metavar="NAME")
    p.add_argument(
        "--all", action="store_true", help="also list settings-only revisions on their own rows"
    )

    p = verb("revert", "go back to an image of the history (zero downtime)")
    p.add_argument("name", metavar="NAME")
    p.add_argument(
        "digest",
        metavar="REF",
        help="revision number, digest (sha256:...) or image id prefix (12+ hex characters)",
    )
    _add_wait_flags(p, "until the revert is rolled out")

    p = verb("redeploy", "pull the tag again; roll out its new digest, if it has one")
    p.add_argument("name", metavar="NAME")
    _add_wait_flags(p, "until the new image is rolled out")

    p = verb("start", "start a stopped deployment")
    p.add_argument("name", metavar="NAME")
    _add_wait_flags(p, "until it is running")

    p = verb("stop", "stop every instance (the spec is kept)")
    p.add_argument("name", metavar="NAME")
    _add_wait_flags(p, "until it is stopped")

    p = verb("delete", "delete a deployment and everything it runs")
    p.add_argument("name", metavar="NAME")
    p.add_argument(
        "--confirm", metavar="NAME", help="repeat the name (asked for on a terminal if absent)"
    )
    p.add_argument(
        "--delete-volumes",
        action="store_true",
        help="also delete the volumes and their data (default: keep them)",
    )
    _add_wait_flags(p, "until it is gone")

    # `backup FILE` and off-site `backup list|run|restore`
    from patrd.cli import backup as cli_backup

    cli_backup.add_parser(verb)

    p = verb("firewall", "the nftables ruleset patrd loads (a dry run when disabled)")
    p.add_argument(
        "action",
        choices=["show"],
        help="show: print the ruleset (loadable with nft -f) and counters",
    )

    from patrd.cli import urls as cli_urls  # `url …` and `certs` (issue 4)

    cli_urls.add_parsers(verb, common)

    from patrd.cli import data as cli_data  # `secret …`, `config …`, `volumes` (issue 6)

    cli_data.add_parsers(verb, common)

    from patrd.cli import observe as cli_observe  # `logs`, `metrics` (issue 7)

    cli_observe.add_parsers(verb, common)

    from patrd.cli import access as cli_access  # `token …`, `audit` (scoped tokens, audit log)

    cli_access.add_parsers(verb, common)
    from patrd.cli import notify as cli_notify  # `notify …`, `node`

    cli_notify.add_parsers(verb, common)
    from patrd.cli import exec as cli_exec  # `exec`, `run`, `job …` (patrd/cli/exec.py)

    cli_exec.add_parsers(verb, common)
    return parser


def _add_spec_flags(p: argparse.ArgumentParser, *, replace_ports: bool = False) -> None:
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
        type=_env_arg,
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
    p.add_argument("--probe-period", type=float, metavar="S", help="probe period (default 10)")
    p.add_argument("--probe-timeout", type=float, metavar="S", help="probe timeout (default 3)")
    p.add_argument("--probe-failures", type=int, metavar="N", help="failure threshold (default 15)")


def _add_wait_flags(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument("--wait", action="store_true", help=f"wait {what}, printing events")
    p.add_argument(
        "--timeout",
        type=_positive_float,
        default=DEFAULT_TIMEOUT_S,
        metavar="S",
        help=f"give up waiting after S seconds (default {DEFAULT_TIMEOUT_S:g})",
    )


def _env_arg(text: str) -> tuple[str, str | dict[str, str]]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(
            f"expected KEY=VALUE or KEY=secret:SECRET_NAME, got {text!r}"
        )
    return key, env_value(value)


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive: {text!r}")
    return value


def _int_range(lo: int, hi: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
        if not lo <= value <= hi:
            raise argparse.ArgumentTypeError(f"must be from {lo} to {hi}")
        return value

    return parse


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
    registry, repo, tag, digest = split_image(args.image)
    if digest is not None:
        raise UsageError(
            f"--image {args.image}: patrd deploys by tag; give REPO:TAG "
            "(patrctl history shows the digest each rollout ran)"
        )
    if tag is not None and args.tag is not None and tag != args.tag:
        raise UsageError(f"--image {args.image} has tag {tag!r} but --tag says {args.tag!r}")
    if registry is not None and args.registry is not None and registry != args.registry:
        raise UsageError(
            f"--image {args.image} names registry {registry!r} but --registry says "
            f"{args.registry!r}"
        )
    return repo, tag or args.tag, registry or args.registry


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
        for key, value in (
            ("period_s", args.probe_period),
            ("timeout_s", args.probe_timeout),
            ("failure_threshold", args.probe_failures),
        ):
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


# --- rendering ------------------------------------------------------------


def render_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [len(h) for h in headers]
    for row in rows:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell))
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in (headers, *rows)
    ]
    return "\n".join(lines)


def render_fields(pairs: Sequence[tuple[str, str]]) -> str:
    width = max((len(key) for key, _ in pairs), default=0) + 1
    return "\n".join(f"{(key + ':').ljust(width)}  {value}".rstrip() for key, value in pairs)


def image_ref(spec: JsonObject) -> str:
    registry = spec.get("registry", "docker.io")
    base = spec["image"] if registry == "docker.io" else f"{registry}/{spec['image']}"
    return f"{base}:{spec['tag']}"


def ready_column(deployment: JsonObject) -> str:
    instances = deployment.get("instances") or []
    ready = sum(1 for i in instances if i.get("ready"))
    scale = deployment["spec"]["scale"]
    desired = 0
    if deployment["intent"] == "run":
        desired = max(scale["min"], min(ready, scale["max"]))
    return f"{ready}/{desired}"


def status_cell(d: JsonObject, width: int = 48) -> str:
    """The status, and for ``errored`` why (cut to ``width``): a crash loop is not "starting"."""
    reason = d.get("status_reason") or ""
    if d["status"] != "errored" or not reason:
        return str(d["status"])
    short = reason if len(reason) <= width else reason[: width - 3] + "..."
    return f"{d['status']} ({short})"


def deployments_table(deployments: Sequence[JsonObject]) -> str:
    rows = [
        [
            d["name"],
            status_cell(d),
            ready_column(d),
            str(d["revision"]),
            image_ref(d["spec"]),
            d["urls"][0] if d.get("urls") else "-",
        ]
        for d in deployments
    ]
    return render_table(["NAME", "STATUS", "READY", "REVISION", "IMAGE", "URL"], rows)


def instances_table(instances: Sequence[JsonObject]) -> str:
    rows = [
        [
            i["name"],
            i["state"],
            "yes" if i["ready"] else "no",
            i.get("address") or "-",
            str(i["revision"]),
            str(i["restarts"]),
            _probe_cell(i.get("probe") or {}),
        ]
        for i in instances
    ]
    headers = ["NAME", "STATE", "READY", "ADDRESS", "REVISION", "RESTARTS", "PROBE"]
    return render_table(headers, rows)


def _probe_cell(probe: JsonObject) -> str:
    phase = probe.get("phase") or "-"
    last = probe.get("last")
    return f"{phase} ({last})" if last else phase


def history_table(history: Sequence[JsonObject], *, everything: bool = False) -> str:
    """Releases, newest first; settings-only revisions are folded under the release
    they run (``+N settings``) unless ``everything``."""
    rows: list[list[str]] = []
    folded: list[int] = []  # settings revisions seen above the next release (newest first)
    for h in history:
        if not everything and h.get("release") is False:
            folded.append(h["revision"])
            continue
        how = h.get("how") or "-"
        if folded:
            how += f" (+{len(folded)} settings: {', '.join(str(n) for n in reversed(folded))})"
            folded = []
        rows.append(
            [
                str(h["revision"]),
                (h.get("digest") or "-")[:19],
                (h.get("image_id") or "-")[:19],
                how,
                h["state"],
                h.get("deployed_at") or h.get("created_at") or "-",
                h.get("reason") or "",
            ]
        )
    if folded:  # the oldest kept revisions are settings-only (their release was pruned)
        rows.append(["-", "-", "-", f"settings: {', '.join(map(str, reversed(folded)))}"])
        rows[-1] += ["", "", ""]
    headers = ["REVISION", "DIGEST", "IMAGE ID", "HOW", "STATE", "WHEN", "REASON"]
    return render_table(headers, rows)


def event_line(event: JsonObject) -> str:
    text = event_text(event["kind"], event["message"], event.get("revision"))
    return f"{event['at']}  {event['kind']:<8} {text}"


def deployment_fields(d: JsonObject) -> list[tuple[str, str]]:
    spec = d["spec"]
    status = d["status"] + (f" ({d['status_reason']})" if d.get("status_reason") else "")
    ports = ", ".join(f"{port}/{proto}" for port, proto in spec["ports"].items())
    env = env_cell(spec.get("env") or {})
    res = spec["resources"]
    return [
        ("name", d["name"]),
        ("id", d["id"]),
        ("status", status),
        ("intent", d["intent"]),
        ("revision", _revision_cell(d)),
        ("image", image_ref(spec)),
        ("ports", ports),
        ("env", env),
        ("scale", _scale_cell(d)),
        ("resources", f"{res['cpu']:g} cpu, {res['memory_mb']} MB"),
        ("est. cost", _cost_cell(d)),
        ("region", spec.get("region") or "-"),
        ("urls", " ".join(d.get("urls") or []) or "-"),
        ("created", d["created_at"]),
        ("updated", d["updated_at"]),
    ]


def _scale_cell(d: JsonObject) -> str:
    scale = d["spec"]["scale"]
    text = f"{scale['min']}..{scale['max']}"
    if scale["max"] > scale["min"]:
        text += f", running {d.get('replicas', scale['min'])}"
        text += f" (autoscale at {scale.get('target_cpu', 80)}% cpu)"
    return text


def _cost_cell(d: JsonObject) -> str:
    cost = d.get("estimated_cost")
    if not cost:
        return "-"
    text = f"{cost['min']:.2f}..{cost['max']:.2f} {cost['currency']}/month"
    warning = (d.get("capacity") or {}).get("warning")
    return text + (f"; {warning}" if warning else "")


def print_json(data: Any) -> None:
    print(json.dumps(data, indent=2))


# --- verbs ----------------------------------------------------------------


def _path(name: str, *rest: str) -> str:
    parts = ["/v1/deployments", urllib.parse.quote(name, safe=""), *rest]
    return "/".join(parts)


def cmd_list(client: Client, args: argparse.Namespace) -> int:
    data = client.get("/v1/deployments")
    if args.json:
        print_json(data)
    elif data["deployments"]:
        print(deployments_table(data["deployments"]))
    else:
        print("no deployments")
    return 0


def cmd_show(client: Client, args: argparse.Namespace) -> int:
    deployment = client.get(_path(args.name))
    if args.json:
        print_json(deployment)
        return 0
    events = client.get(_path(args.name, "events"), limit=SHOW_EVENTS)["events"]
    print(render_fields(deployment_fields(deployment)))
    print()
    print("INSTANCES")
    instances = deployment.get("instances") or []
    print(instances_table(instances) if instances else "none")
    print()
    print("EVENTS")
    print("\n".join(event_line(e) for e in events) if events else "none")
    return 0


def cmd_events(client: Client, args: argparse.Namespace) -> int:
    events = client.get(_path(args.name, "events"), limit=args.limit)["events"]
    if args.json and not args.follow:
        print_json({"events": events})
        return 0
    _print_events(events, as_json=args.json)
    if not args.follow:
        return 0
    last = events[-1]["id"] if events else 0
    while True:
        _sleep(POLL_INTERVAL_S)
        try:
            events = client.get(_path(args.name, "events"), after=last, limit=1000)["events"]
        except ApiError as exc:
            if exc.status == 404:
                print(f"{args.name}: deleted", file=sys.stderr)
                return 0
            raise
        _print_events(events, as_json=args.json)
        if events:
            last = events[-1]["id"]


def cmd_create(client: Client, args: argparse.Namespace) -> int:
    body = create_body(args)
    deployment = client.request("POST", "/v1/deployments", body=body)
    name = deployment["name"]
    _report(args, deployment, f"created {name} (revision {deployment['revision']})")
    if not args.wait:
        return 0
    if deployment["intent"] != "run":
        _note(args, f"{name}: created without deploying; nothing to wait for")
        return 0
    return wait_for(client, name, "running", after=0, timeout=args.timeout, quiet=args.json)


def _revision_cell(d: JsonObject) -> str:
    stable = d.get("stable_revision")
    if stable is None or stable == d["revision"]:
        return str(d["revision"])
    return f"{d['revision']} (rolling out; {stable} deployed)"


def cmd_history(client: Client, args: argparse.Namespace) -> int:
    data = client.get(_path(args.name, "history"))
    if args.json:
        print_json(data)
    else:
        print(history_table(data["history"], everything=getattr(args, "all", False)))
    return 0


def cmd_revert(client: Client, args: argparse.Namespace) -> int:
    after = _last_event_id(client, args.name)
    deployment = client.request("POST", _path(args.name, "revert"), body={"ref": args.digest})
    _report(args, deployment, f"{args.name}: revision {deployment['revision']} reverts")
    if not args.wait:
        return 0
    return _wait_rollout(client, args, deployment["revision"], after)


def cmd_redeploy(client: Client, args: argparse.Namespace) -> int:
    after = _last_event_id(client, args.name)
    deployment = client.request("POST", _path(args.name, "redeploy"), body={})
    outcome = deployment["redeploy"]
    if outcome.get("warning") and not args.json:
        print(f"patrctl: warning: {outcome['warning']}", file=sys.stderr)
    if not outcome["changed"]:
        if args.json:
            print_json(deployment)
        else:
            print(f"{args.name}: {outcome['message']}")
        return 0
    _report(args, deployment, f"{args.name}: {outcome['message']}")
    if not args.wait:
        return 0
    return _wait_rollout(client, args, deployment["revision"], after)


def _wait_rollout(client: Client, args: argparse.Namespace, revision: int, after: int) -> int:
    """Wait for ``running``; then say whether ``revision`` made it or was rolled back."""
    code = wait_for(
        client, args.name, "running", after=after, timeout=args.timeout, quiet=args.json
    )
    if code != 0:
        return code
    deployment = client.get(_path(args.name))
    if deployment["revision"] != revision:
        history = client.get(_path(args.name, "history"))["history"]
        reason = next((h["reason"] for h in history if h["revision"] == revision), "")
        print(
            f"patrctl: revision {revision} failed ({reason}); "
            f"running revision {deployment['revision']}",
            file=sys.stderr,
        )
        return 1
    return 0


def cmd_update(client: Client, args: argparse.Namespace) -> int:
    current = client.get(_path(args.name))
    body = update_body(args, current["spec"])
    if not body:
        raise UsageError(
            "nothing to update: give --env, --unset-env, --port, --min, --max, --cpu, "
            "--memory-mb or a probe flag"
        )
    after = _last_event_id(client, args.name)
    query: dict[str, str | int] = (
        {"confirm_volume_loss": "true"} if args.confirm_volume_loss else {}
    )
    deployment = client.request("PATCH", _path(args.name), body=body, query=query or None)
    if deployment["revision"] == current["revision"]:
        _report(args, deployment, f"{args.name}: no change (revision {deployment['revision']})")
    else:
        _report(args, deployment, f"updated {args.name} to revision {deployment['revision']}")
    if not args.wait:
        return 0
    if deployment["intent"] != "run":
        _note(args, f"{args.name}: not running (intent {deployment['intent']}); not waiting")
        return 0
    return _wait_rollout(client, args, deployment["revision"], after)


def cmd_start(client: Client, args: argparse.Namespace) -> int:
    return _intent_verb(client, args, "start", "running")


def cmd_stop(client: Client, args: argparse.Namespace) -> int:
    return _intent_verb(client, args, "stop", "stopped")


def _confirm_delete(name: str, given: str | None) -> str:
    """``--confirm``, else the name typed at a prompt (only on a terminal)."""
    if given is not None:
        return given
    if not (sys.stdin.isatty() and sys.stderr.isatty()):
        raise UsageError(f"deleting is permanent; repeat the name: --confirm {name}")
    prompt = f"Delete {name} and everything it runs? Type its name to confirm: "
    print(prompt, end="", file=sys.stderr)
    sys.stderr.flush()
    try:
        answer = input().strip()
    except EOFError:
        answer = ""
    if answer != name:
        raise CliError(f"not deleted: {answer!r} is not {name!r}")
    return answer


def cmd_delete(client: Client, args: argparse.Namespace) -> int:
    confirm = _confirm_delete(args.name, args.confirm)
    after = _last_event_id(client, args.name)
    query: dict[str, str | int] = {"confirm": confirm}
    if args.delete_volumes:
        query["delete_volumes"] = "true"
    deployment = client.request("DELETE", _path(args.name), query=query)
    _report(args, deployment, f"{args.name}: deleting")
    kept = deployment.get("kept_volumes") or []
    if kept:
        _note(args, f"kept volumes (data stays): {', '.join(kept)}")
    if not args.wait:
        return 0
    return wait_for(
        client, args.name, "deleted", after=after, timeout=args.timeout, quiet=args.json
    )


def cmd_backup(client: Client, args: argparse.Namespace) -> int:
    """Stream ``POST /v1/backup`` into FILE: temp file 0600 in the same dir, then rename."""
    if args.file == "-":
        if sys.stdout.isatty():
            raise UsageError("refusing to write a backup to a terminal; redirect stdout")
        size = _download(client, "/v1/backup", sys.stdout.buffer)
        print(f"patrctl: wrote {size} bytes; {_BACKUP_WARNING}", file=sys.stderr)
        return 0
    dest = Path(args.file).absolute()
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise CliError(f"cannot write {dest}: {exc.strerror or exc}") from exc
    try:
        with os.fdopen(fd, "wb") as out:
            size = _download(client, "/v1/backup", out)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    summary = ""
    try:
        import tarfile

        with tarfile.open(dest) as tar:
            manifest = tar.extractfile("patrd-backup.json")
            info = json.loads(manifest.read()) if manifest is not None else {}
        summary = (
            f": schema v{info['schema_version']}, {info['deployments']} deployments, "
            f"{len(info['files'])} files"
        )
    except (OSError, KeyError, ValueError, tarfile.TarError):
        summary = " (could not read its manifest back)"
    print(f"wrote {dest} ({size} bytes){summary}")
    print(f"patrctl: {_BACKUP_WARNING}", file=sys.stderr)
    return 0


_BACKUP_WARNING = "the backup holds secrets (keys, certificates, env values): keep it private"


def _download(client: Client, path: str, out: Any) -> int:
    """POST ``path`` and copy a 200 body into ``out``; API errors as ``Client.request``."""
    conn = client.connect()
    headers = {"User-Agent": "patrctl"}
    if client.token:
        headers["Authorization"] = f"Bearer {client.token}"
    size = 0
    try:
        conn.request("POST", client.base_path + path, headers=headers)
        response = conn.getresponse()
        if response.status >= 400:
            raise api_error(response.status, _decode(response.read()), f"HTTP {response.status}")
        while chunk := response.read(256 * 1024):
            try:
                out.write(chunk)
            except OSError as exc:
                raise CliError(f"cannot write the backup: {exc.strerror or exc}") from exc
            size += len(chunk)
        if response.length not in (None, 0):
            raise CliError("the backup was cut short; nothing was written")
    except OSError as exc:
        raise CliError(
            f"cannot reach patrd at {client.target}: {exc.strerror or exc}{client.hint}"
        ) from exc
    except http.client.HTTPException as exc:
        raise CliError(f"bad answer from patrd at {client.target}: {exc!r}") from exc
    finally:
        conn.close()
    return size


def _intent_verb(client: Client, args: argparse.Namespace, action: str, target: str) -> int:
    after = _last_event_id(client, args.name)
    deployment = client.request("POST", _path(args.name, action))
    _report(args, deployment, f"{args.name}: {action} requested")
    if not args.wait:
        return 0
    return wait_for(client, args.name, target, after=after, timeout=args.timeout, quiet=args.json)


def wait_for(
    client: Client,
    name: str,
    target: str,
    *,
    after: int,
    timeout: float,
    quiet: bool = False,
) -> int:
    """Poll until ``target`` ("running", "stopped", "deleted"), printing new events.

    ``errored`` ends a wait for running or stopped with exit 1; so does the timeout.
    """
    deadline = time.monotonic() + timeout
    status = "unknown"
    while True:
        try:
            deployment: JsonObject | None = client.get(_path(name))
            events = client.get(_path(name, "events"), after=after, limit=1000)["events"]
        except ApiError as exc:
            if exc.status == 404 and target == "deleted":
                deployment, events = None, []
            else:
                raise
        if not quiet:
            _print_events(events, as_json=False)
        if events:
            after = events[-1]["id"]
        if deployment is None:
            _note_done(quiet, f"{name}: deleted")
            return 0
        status = deployment["status"]
        if status == "errored" and target != "deleted":
            reason = deployment.get("status_reason") or "no reason given"
            raise CliError(f"{name} errored: {reason}")
        if target == "running" and status == "running":
            _note_done(quiet, f"{name}: running")
            return 0
        if target == "stopped" and status == "stopped" and not _running(deployment):
            _note_done(quiet, f"{name}: stopped")
            return 0
        if time.monotonic() >= deadline:
            raise CliError(
                f"timed out after {timeout:g}s waiting for {name} to be {target} (status: {status})"
            )
        _sleep(POLL_INTERVAL_S)


def _sleep(seconds: float) -> None:
    time.sleep(seconds)  # a seam for tests


def _running(deployment: JsonObject) -> bool:
    return any(i.get("state") == "running" for i in deployment.get("instances") or [])


def _last_event_id(client: Client, name: str) -> int:
    events = client.get(_path(name, "events"), limit=1)["events"]
    return int(events[-1]["id"]) if events else 0


def _print_events(events: Sequence[JsonObject], *, as_json: bool) -> None:
    for event in events:
        print(json.dumps(event) if as_json else event_line(event), flush=True)


def _report(args: argparse.Namespace, deployment: JsonObject, text: str) -> None:
    """The response of a write verb (its JSON with --json; --wait then prints nothing more)."""
    if args.json:
        print_json(deployment)
        return
    print(f"{text}; status {deployment['status']}")
    warning = (deployment.get("capacity") or {}).get("warning")
    if warning:
        print(f"patrctl: warning: {warning}", file=sys.stderr)
    if deployment.get("urls") and deployment["intent"] == "run":
        for url in deployment["urls"]:
            print(f"  {url}")


def _note(args: argparse.Namespace, text: str) -> None:
    if args.json:
        return
    print(text)


def _note_done(quiet: bool, text: str) -> None:
    if not quiet:
        print(text)


def firewall_text(data: JsonObject) -> str:
    """``GET /v1/firewall`` as text that ``nft -f`` still loads (status in comments)."""
    if not data["enabled"]:
        head = "# firewall: disabled; this is what firewall.enabled = true would load"
    elif data["applied"]:
        head = f"# firewall: enabled and loaded (loads: {data['loads']}, last {data['applied_at']})"
    else:
        head = "# firewall: enabled but NOT loaded" + (
            f": {data['error']}" if data.get("error") else ""
        )
    lines = [head, data["ruleset"].rstrip("\n")]
    counters = data.get("counters") or {}
    if counters:
        width = max(len(name) for name in counters)
        lines.append("# counters since patrd started (packets, bytes):")
        for name, value in counters.items():
            lines.append(f"#   {name:<{width}}  {value['packets']:>10}  {value['bytes']:>12}")
    return "\n".join(lines)


def cmd_firewall(client: Client, args: argparse.Namespace) -> int:
    data = client.get("/v1/firewall")
    if args.json:
        print_json(data)
    else:
        print(firewall_text(data))
    return 0


VERBS: dict[str, Callable[[Client, argparse.Namespace], int]] = {
    "create": cmd_create,
    "list": cmd_list,
    "show": cmd_show,
    "events": cmd_events,
    "update": cmd_update,
    "history": cmd_history,
    "revert": cmd_revert,
    "redeploy": cmd_redeploy,
    "start": cmd_start,
    "stop": cmd_stop,
    "delete": cmd_delete,
    "url": lambda client, args: _cli_urls().cmd_url(client, args),
    "certs": lambda client, args: _cli_urls().cmd_certs(client, args),
    "backup": lambda client, args: _cli_backup().cmd(client, args),
    "firewall": cmd_firewall,
    "secret": lambda client, args: _cli_data().cmd_secret(client, args),
    "config": lambda client, args: _cli_data().cmd_config(client, args),
    "volumes": lambda client, args: _cli_data().cmd_volumes(client, args),
    "registry": lambda client, args: _cli_data().cmd_registry(client, args),
    "logs": lambda client, args: _cli_observe().cmd_logs(client, args),
    "metrics": lambda client, args: _cli_observe().cmd_metrics(client, args),
    "token": lambda client, args: _cli_access().cmd_token(client, args),
    "audit": lambda client, args: _cli_access().cmd_audit(client, args),
    "notify": lambda client, args: _cli_notify().cmd_notify(client, args),
    "node": lambda client, args: _cli_notify().cmd_node(client, args),
    "status": lambda client, args: _cli_notify().cmd_status(client, args),
    "exec": lambda client, args: _cli_exec().cmd_exec(client, args),
    "run": lambda client, args: _cli_exec().cmd_run(client, args),
    "job": lambda client, args: _cli_exec().cmd_job(client, args),
}


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Parse, and fill the flags shared by every verb (SUPPRESSed when absent)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    for key, default in (("socket", None), ("url", None), ("token_file", None), ("json", False)):
        if not hasattr(args, key):
            setattr(args, key, default)
    if args.socket is not None and args.url is not None:
        parser.error("give --socket or --url, not both")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """``patrctl``: returns the exit status."""
    try:
        args = parse_args(argv)
    except SystemExit as exc:  # argparse: --help (0) or a usage error (2)
        return exc.code if isinstance(exc.code, int) else 2
    try:
        client = make_client(socket_path=args.socket, url=args.url, token_file=args.token_file)
        return VERBS[args.verb](client, args)
    except UsageError as exc:
        print(exc.line(), file=sys.stderr)
        return 2
    except ApiError as exc:
        line = exc.line()
        if exc.status == 401:
            line += (
                "; give the token with --token-file FILE or the PATRD_TOKEN environment variable"
            )
        print(line, file=sys.stderr)
        return 1
    except CliError as exc:
        print(exc.line(), file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `patrctl events -f | head`
        return 1


# --- the daemon -------------------------------------------------------------

DaemonServe = Callable[["Config"], Coroutine[Any, Any, int]]


def build_daemon_parser() -> argparse.ArgumentParser:

    parser = argparse.ArgumentParser(prog="patrd", description="The patrd daemon.")
    parser.add_argument("--version", action="version", version=f"patrd {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    serve = sub.add_parser("serve", help="run the daemon in the foreground")
    serve.add_argument("--config", required=True, type=Path, metavar="FILE", help="TOML config")
    serve.add_argument("--data-dir", metavar="DIR", help="overrides daemon.data_dir")
    serve.add_argument("--api-socket", metavar="PATH", help="overrides api.socket")
    serve.add_argument(
        "--http-listen",
        action="append",
        default=[],
        metavar="HOST:PORT",
        help="overrides proxy.http_listen; repeatable",
    )
    serve.add_argument("--base-domain", metavar="DOMAIN", help="overrides proxy.base_domain")
    serve.add_argument(
        "--https-listen",
        action="append",
        default=[],
        metavar="HOST:PORT",
        help='overrides tls.https_listen; repeatable; "off" for no HTTPS',
    )
    serve.add_argument("--log-level", metavar="LEVEL", help="debug, info, warning or error")
    serve.add_argument("--log-format", metavar="FORMAT", help="logfmt, json or console")
    restore = sub.add_parser(
        "restore", help="unpack a backup (patrctl backup) onto an empty data dir"
    )
    restore.add_argument("file", type=Path, nargs="?", metavar="FILE", help="the backup tar")
    restore.add_argument(
        "--snapshot",
        metavar="RUN",
        help="instead of FILE: the state of an off-site backup run (or latest) from the "
        "[backup] repository of --config",
    )
    restore.add_argument("--config", type=Path, metavar="FILE", help="use its daemon.data_dir")
    restore.add_argument("--data-dir", metavar="DIR", help="restore here (wins over --config)")
    return parser


def daemon_main(argv: Sequence[str] | None = None) -> int:
    """``patrd serve``: load the config, then run the daemon until it stops."""
    try:
        args = build_daemon_parser().parse_args(argv)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 2
    if args.command == "restore":
        return restore_main(args)

    from patrd.model.errors import ConfigError
    from patrd.settings.config import Overrides, load

    overrides = Overrides(
        data_dir=args.data_dir,
        api_socket=args.api_socket,
        http_listen=tuple(args.http_listen),
        base_domain=args.base_domain,
        https_listen=tuple(args.https_listen),
        log_level=args.log_level,
        log_format=args.log_format,
    )
    try:
        config = load(args.config, overrides)
    except ConfigError as exc:
        print(f"patrd: {exc}", file=sys.stderr)
        return 2

    from patrd.proxy.runtime import run_event_loop

    serve = _daemon_serve()
    # The daemon's own loop is asyncio's, unless the proxy runs inside it
    # (proxy.workers = 0): then it is proxy.event_loop.
    loop = config.proxy.event_loop if config.proxy.workers == 0 else "asyncio"
    try:
        return run_event_loop(serve(config), loop)
    except KeyboardInterrupt:
        return 130


def _cli_access() -> Any:
    from patrd.cli import access as cli_access

    return cli_access


def _cli_backup() -> Any:
    from patrd.cli import backup as cli_backup

    return cli_backup


def _cli_notify() -> Any:
    from patrd.cli import notify as cli_notify

    return cli_notify


def _cli_exec() -> Any:
    from patrd.cli import exec as cli_exec

    return cli_exec


def _cli_observe() -> Any:
    from patrd.cli import observe as cli_observe

    return cli_observe


def _cli_data() -> Any:
    from patrd.cli import data as cli_data

    return cli_data


def _cli_urls() -> Any:
    from patrd.cli import urls as cli_urls

    return cli_urls


def _daemon_serve() -> DaemonServe:
    # Imported late: patrctl must not pay for the daemon's imports, and the
    # composition root may not exist yet while its parts are built.
    import importlib

    module = importlib.import_module("patrd.daemon.compose")
    return cast(DaemonServe, module.serve)


def restore_main(args: argparse.Namespace) -> int:
    """``patrd restore FILE --data-dir DIR | --config FILE``: offline, onto an empty dir."""
    from patrd.model.errors import ConfigError, PatrdError
    from patrd.settings.config import load
    from patrd.state.archive import SECRETS_WARNING, restore
    from patrd.state.store import MIGRATIONS

    if not args.data_dir and args.config is None:
        print("patrd: restore needs --data-dir DIR or --config FILE", file=sys.stderr)
        return 2
    key_file: Path | None = None
    config = None
    if args.config is not None:
        try:
            config = load(args.config)
        except ConfigError as exc:
            print(f"patrd: {exc}", file=sys.stderr)
            return 2
        data_dir, key_file = config.daemon.data_dir, config.daemon.secrets_key_file
    if args.data_dir:
        data_dir = Path(args.data_dir).absolute()
    if (args.file is None) == (args.snapshot is None):
        print("patrd: restore needs FILE or --snapshot RUN (one of them)", file=sys.stderr)
        return 2
    try:
        if args.snapshot is not None:
            from patrd.state.offsite_restore import restore_from_repository

            backup = config.backup if config is not None else None
            result = restore_from_repository(backup, args.snapshot, data_dir, key_file)
        else:
            result = restore(args.file, data_dir, key_file)
    except PatrdError as exc:
        print(f"patrd: restore: {exc}", file=sys.stderr)
        return 1
    manifest, db = result.manifest, result.database
    print(
        f"restored {len(manifest.files)} files into {result.data_dir} "
        f"(backup of patrd {manifest.patrd_version}, schema v{db.schema_version}, "
        f"{db.deployments} deployments)"
    )
    if result.secrets_key is not None:
        print(f"secrets key written to {result.secrets_key}")
    if db.schema_version < len(MIGRATIONS):
        print(f"patrd starts by migrating it to schema v{len(MIGRATIONS)} (a copy is kept)")
    print("start patrd on this data dir: every deployment converges on start")
    print(f"patrd: note: {SECRETS_WARNING}; delete copies you no longer need", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
