"""``patrctl secret …``, ``patrctl config …`` and ``patrctl volumes``: what a container needs.

A verb module: it registers its subparsers and handlers (``add_parsers``). Secret
values are read from ``--value``, a file or standard input and never printed.
"""

from __future__ import annotations

import argparse
import base64
import sys
import urllib.parse
from pathlib import Path

from patrd.cli.client import AddVerb, Client, CliError, JsonObject, UsageError, deployment_path
from patrd.cli.output import print_json, render_fields, render_table


def add_parsers(verb: AddVerb, common: argparse.ArgumentParser) -> None:
    p = verb("secret", "secrets: encrypted at rest, values write-only", cmd_secret)
    sub = p.add_subparsers(dest="secret_verb", required=True, metavar="ACTION")

    def action(name: str, help_text: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=help_text, description=help_text, parents=[common])

    action("list", "names, versions and the deployments using them (never values)")
    a = action("show", "one secret's metadata")
    a.add_argument("name", metavar="NAME")
    for name, text in (("create", "store a new secret"), ("set", "replace a secret's value")):
        a = action(name, f"{text} (deployments using it roll to the new value)")
        a.add_argument("name", metavar="NAME")
        source = a.add_mutually_exclusive_group()
        source.add_argument("--value", help="the value (visible in your shell history!)")
        source.add_argument("--from-file", metavar="FILE", help="read the value from FILE")
        a.epilog = "Without --value or --from-file the value is read from standard input."
    a = action("delete", "delete a secret no deployment uses")
    a.add_argument("name", metavar="NAME")

    p = verb("config", "config files mounted read-only at /etc/config (edits are live)", cmd_config)
    sub = p.add_subparsers(dest="config_verb", required=True, metavar="ACTION")
    a = action_in(sub, common, "put", "write a file into /etc/config of every instance")
    a.add_argument("name", metavar="DEPLOYMENT")
    a.add_argument("file", metavar="FILE", help="local file to upload ('-' for stdin)")
    a.add_argument("--as", dest="target", metavar="NAME", help="file name in /etc/config")
    a = action_in(sub, common, "get", "print a config file")
    a.add_argument("name", metavar="DEPLOYMENT")
    a.add_argument("target", metavar="FILE")
    a = sub.add_parser(  # "delete", as for every other thing patrctl removes
        "delete",
        aliases=["rm"],
        help="delete a config file",
        description="delete a config file",
        parents=[common],
    )
    a.add_argument("name", metavar="DEPLOYMENT")
    a.add_argument("target", metavar="FILE")
    a = action_in(sub, common, "list", "list a deployment's config files")
    a.add_argument("name", metavar="DEPLOYMENT")

    p = verb("volumes", "a deployment's volumes per instance, with the space they use", cmd_volumes)
    p.add_argument("name", metavar="DEPLOYMENT")

    p = verb("registry", "the node registry", cmd_registry)
    sub = p.add_subparsers(dest="registry_verb", required=True, metavar="ACTION")
    action_in(sub, common, "login-info", "print the docker login line for the node registry")


def action_in(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
    common: argparse.ArgumentParser,
    name: str,
    help_text: str,
) -> argparse.ArgumentParser:
    return sub.add_parser(name, help=help_text, description=help_text, parents=[common])


def cmd_secret(client: Client, args: argparse.Namespace) -> int:
    action = args.secret_verb
    if action == "list":
        data = client.get("/v1/secrets")
        if args.json:
            print_json(data)
        else:
            # Below the write scope the API gives names only.
            rows = [
                [
                    s["name"],
                    str(s.get("version", "-")),
                    s.get("updated_at", "-"),
                    ", ".join(s.get("used_by", [])) or "-",
                ]
                for s in data["secrets"]
            ]
            print(render_table(["NAME", "VERSION", "UPDATED", "USED BY"], rows))
        return 0
    if action == "show":
        _print_secret(client.get(_secret_path(args.name)), args)
        return 0
    if action == "delete":
        client.request("DELETE", _secret_path(args.name))
        if not args.json:
            print(f"deleted secret {args.name}")
        return 0
    value = _read_value(args)
    if action == "create":
        data = client.request("POST", "/v1/secrets", body={"name": args.name, "value": value})
    else:
        data = client.request("PUT", _secret_path(args.name), body={"value": value})
    _print_secret(data, args)
    return 0


def _print_secret(data: JsonObject, args: argparse.Namespace) -> None:
    if args.json:
        print_json(data)
        return
    print(
        render_fields(
            [
                ("name", data["name"]),
                ("version", str(data.get("version", "-"))),
                ("created", data.get("created_at", "-")),
                ("updated", data.get("updated_at", "-")),
                ("used by", ", ".join(data.get("used_by", [])) or "-"),
            ]
        )
    )


def _read_value(args: argparse.Namespace) -> str:
    if args.value is not None:
        return str(args.value)
    try:
        if args.from_file:
            return Path(args.from_file).read_text().rstrip("\n")
        if sys.stdin.isatty():
            raise UsageError("give --value, --from-file, or the value on standard input")
        return sys.stdin.read().rstrip("\n")
    except OSError as exc:
        raise CliError(f"cannot read the value: {exc.strerror or exc}") from exc


def cmd_config(client: Client, args: argparse.Namespace) -> int:
    path = deployment_path(args.name)
    current = client.get(path)
    files: dict[str, str] = dict(current["spec"].get("config_mounts") or {})
    action = args.config_verb
    if action == "list":
        if args.json:
            print_json({"files": sorted(files)})
        else:
            rows = [[n, str(len(base64.b64decode(c)))] for n, c in sorted(files.items())]
            print(render_table(["FILE", "BYTES"], rows))
        return 0
    if action == "get":
        if args.target not in files:
            raise CliError(f"{args.name} has no config file {args.target!r}")
        sys.stdout.buffer.write(base64.b64decode(files[args.target]))
        return 0
    if action in ("delete", "rm"):
        if args.target not in files:
            raise CliError(f"{args.name} has no config file {args.target!r}")
        del files[args.target]
    else:
        target = args.target or (None if args.file == "-" else Path(args.file).name)
        if not target:
            raise UsageError("reading from stdin needs --as NAME")
        try:
            content = sys.stdin.buffer.read() if args.file == "-" else Path(args.file).read_bytes()
        except OSError as exc:
            raise CliError(f"cannot read {args.file}: {exc.strerror or exc}") from exc
        files[target] = base64.b64encode(content).decode()
    deployment = client.request("PATCH", path, body={"config_mounts": files})
    if args.json:
        print_json(deployment)
    else:
        print(
            f"{args.name}: config files now {', '.join(sorted(files)) or '(none)'} "
            f"(revision {deployment['revision']}; edits are live, the first file rolls out once)"
        )
    return 0


def cmd_volumes(client: Client, args: argparse.Namespace) -> int:
    data = client.get(deployment_path(args.name, "volumes"))
    if args.json:
        print_json(data)
        return 0
    rows = [
        [
            v["name"],
            str(v["instance"]),
            v["volume"],
            v["path"],
            f"{v['size_gb']} GB",
            _bytes(v["used_bytes"]),
        ]
        for v in data["volumes"]
    ]
    print(render_table(["NAME", "INSTANCE", "DOCKER VOLUME", "PATH", "SIZE", "USED"], rows))
    return 0


def _bytes(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


def _secret_path(name: str) -> str:
    return "/v1/secrets/" + urllib.parse.quote(name, safe="")


def cmd_registry(client: Client, args: argparse.Namespace) -> int:
    """``registry login-info``: the line to run; the password stays in its 0600 file."""
    info = client.get("/v1/registry/login")
    if args.json:
        print_json(info)
    elif info.get("login"):
        print(info["login"])
    else:
        print(f"# the node registry at {info['registry']} has no auth (registry.auth = false)")
    return 0
