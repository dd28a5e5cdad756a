"""``patrctl url …`` and ``patrctl certs``: managed URLs and their certificates.

A verb module: it registers its subparsers and handlers (``add_parsers``); the
same conventions: one request per call, ``--json`` prints the API's JSON.
"""

from __future__ import annotations

import argparse
import urllib.parse
from collections.abc import Sequence

from patrd.cli.client import AddVerb, Client, JsonObject, UsageError
from patrd.cli.output import print_json, render_fields, render_table


def add_parsers(verb: AddVerb, common: argparse.ArgumentParser) -> None:
    p = verb("url", "managed URLs: custom domains for deployments, redirects, proxies", cmd_url)
    sub = p.add_subparsers(dest="url_verb", required=True, metavar="ACTION")

    def action(name: str, help_text: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=help_text, description=help_text, parents=[common])

    action("list", "list managed URLs with their certificate status")
    a = action("show", "show one managed URL")
    a.add_argument("id", metavar="ID")
    a = action("add", "add a managed URL (its certificate is issued in the background)")
    a.add_argument("domain", metavar="DOMAIN")
    a.add_argument("--path", default=None, help="path prefix (default /)")
    _target_flags(a)
    a = action("update", "change a managed URL")
    a.add_argument("id", metavar="ID")
    a.add_argument("--domain", help="new domain")
    a.add_argument("--path", help="new path prefix")
    _target_flags(a)
    a = action("delete", "remove a managed URL")
    a.add_argument("id", metavar="ID")

    verb("certs", "certificates: issuer, expiry, renewal time, failures", cmd_certs)


def _target_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--deployment", metavar="NAME", help="target: this deployment (with --port)")
    p.add_argument("--port", type=int, metavar="PORT", help="the deployment's HTTP port")
    p.add_argument("--redirect", metavar="URL", help="target: redirect to URL (308)")
    p.add_argument("--temporary", action="store_true", help="with --redirect: 307, not 308")
    p.add_argument("--proxy", metavar="URL", help="target: proxy to an outside http(s) URL")
    group = p.add_mutually_exclusive_group()
    group.add_argument(
        "--https-redirect",
        dest="http_redirect",
        action="store_true",
        default=None,
        help="answer plain HTTP with a 308 to HTTPS",
    )
    group.add_argument(
        "--no-https-redirect",
        dest="http_redirect",
        action="store_false",
        help="serve plain HTTP too",
    )


def target_from_args(args: argparse.Namespace, required: bool) -> JsonObject | None:
    kinds = [k for k in ("deployment", "redirect", "proxy") if getattr(args, k)]
    if len(kinds) > 1:
        raise UsageError("give one target: --deployment/--port, --redirect or --proxy")
    if not kinds:
        if required:
            raise UsageError(
                "a target is required: --deployment NAME --port N, --redirect URL or --proxy URL"
            )
        if args.port is not None or args.temporary:
            raise UsageError("--port needs --deployment; --temporary needs --redirect")
        return None
    kind = kinds[0]
    if kind == "deployment":
        if args.port is None:
            raise UsageError("--deployment needs --port")
        return {"deployment": args.deployment, "port": args.port}
    if args.port is not None:
        raise UsageError("--port goes with --deployment")
    if kind == "redirect":
        return {"redirect": args.redirect, "permanent": not args.temporary}
    if args.temporary:
        raise UsageError("--temporary goes with --redirect")
    return {"proxy": args.proxy}


def add_body(args: argparse.Namespace) -> JsonObject:
    body: JsonObject = {"domain": args.domain, "target": target_from_args(args, True)}
    if args.path is not None:
        body["path"] = args.path
    if args.http_redirect is not None:
        body["http_redirect"] = args.http_redirect
    return body


def update_body(args: argparse.Namespace) -> JsonObject:
    body: JsonObject = {}
    for key in ("domain", "path", "http_redirect"):
        if getattr(args, key) is not None:
            body[key] = getattr(args, key)
    target = target_from_args(args, False)
    if target is not None:
        body["target"] = target
    if not body:
        raise UsageError(
            "nothing to update: give --domain, --path, a target or --[no-]https-redirect"
        )
    return body


def target_text(target: JsonObject) -> str:
    if "deployment" in target:
        return f"{target['deployment']}:{target['port']}"
    if "redirect" in target:
        return f"{'308' if target.get('permanent', True) else '307'} → {target['redirect']}"
    return f"proxy → {target['proxy']}"


def tls_text(tls: JsonObject) -> str:
    text = str(tls.get("status", "-"))
    if tls.get("expires_at"):
        text += f" until {tls['expires_at']}"
    if tls.get("error"):
        text += f" ({tls['error']})"
    return text


def urls_table(urls: Sequence[JsonObject]) -> str:
    rows = [
        [u["id"], u["domain"] + u["path"], target_text(u["target"]), tls_text(u["tls"])]
        for u in urls
    ]
    return render_table(["ID", "URL", "TARGET", "TLS"], rows)


def url_fields(u: JsonObject) -> list[tuple[str, str]]:
    return [
        ("id", u["id"]),
        ("url", u["url"]),
        ("domain", u["domain"]),
        ("path", u["path"]),
        ("target", target_text(u["target"])),
        ("http redirect", "yes" if u["http_redirect"] else "no"),
        ("tls", tls_text(u["tls"])),
        ("created", u["created_at"]),
        ("updated", u["updated_at"]),
    ]


def certs_table(certs: Sequence[JsonObject]) -> str:
    rows = []
    for c in certs:
        state = c["status"] + (" ALERT" if c["alert"] else "")
        if c["failures"]:
            state += f" ({c['failures']} failed: {c['error']})"
        rows.append(
            [
                c["domain"],
                c["issuer"] or "-",
                c["not_after"] or "-",
                c["renew_at"] or "-",
                state,
            ]
        )
    return render_table(["DOMAIN", "ISSUER", "EXPIRES", "RENEWS", "STATUS"], rows)


def _path(url_id: str) -> str:
    return "/v1/urls/" + urllib.parse.quote(url_id, safe="")


def cmd_url(client: Client, args: argparse.Namespace) -> int:
    verb = args.url_verb
    if verb == "list":
        data = client.get("/v1/urls")
        if args.json:
            print_json(data)
        elif data["urls"]:
            print(urls_table(data["urls"]))
        else:
            print("no managed URLs")
        return 0
    if verb == "show":
        url = client.get(_path(args.id))
    elif verb == "add":
        url = client.request("POST", "/v1/urls", body=add_body(args))
    elif verb == "update":
        url = client.request("PATCH", _path(args.id), body=update_body(args))
    else:
        url = client.request("DELETE", _path(args.id))
    if args.json:
        print_json(url)
    elif verb == "delete":
        print(f"deleted {url['id']} ({url['domain']}{url['path']})")
    else:
        print(render_fields(url_fields(url)))
    return 0


def cmd_certs(client: Client, args: argparse.Namespace) -> int:
    data = client.get("/v1/certificates")
    if args.json:
        print_json(data)
    elif data["certificates"]:
        print(certs_table(data["certificates"]))
    else:
        print("no certificates")
    return 0
