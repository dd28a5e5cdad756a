"""``/v1/urls`` (managed URLs) and ``/v1/certificates``: handlers and JSON shapes.

URLs are desired state (the store); each answer carries the certificate
status of its domain as the TLS controller sees it (``tls``: ``pending``,
``issued`` or ``failed``, with the last error and the expiry).
"""

from __future__ import annotations

from typing import Protocol

from aiohttp import web

from patrd.api.context import parts, read_json, rfc3339
from patrd.model import urls
from patrd.model.urls import UrlRecord
from patrd.model.view_shapes import (
    CertificateJson,
    CertificateListJson,
    UrlJson,
    UrlListJson,
    UrlTlsJson,
)
from patrd.settings.config import Config
from patrd.tls.controller import CertStatus


class TlsView(Protocol):
    """What the API may ask of the certificate controller."""

    def status(self, domain: str, now: float | None = None) -> CertStatus: ...

    def statuses(self) -> list[CertStatus]: ...

    def wake(self) -> None: ...


TLS = web.AppKey[TlsView]("patrd.tls")


async def list_urls(request: web.Request) -> web.Response:
    store, _, config = parts(request)
    records = await store.list_urls()
    tls = request.app.get(TLS)
    body: UrlListJson = {"urls": [url_json(r, config, tls) for r in records]}
    return web.json_response(body)


async def create_url(request: web.Request) -> web.Response:
    store, controller, config = parts(request)
    body = await read_json(request)
    spec = urls.parse_create(body, default_http_redirect=config.tls.redirect_http)
    record = await store.create_url(spec)
    controller.wake()
    tls = request.app.get(TLS)
    return web.json_response(
        url_json(record, config, tls), status=201, headers={"Location": f"/v1/urls/{record.id}"}
    )


async def get_url(request: web.Request) -> web.Response:
    store, _, config = parts(request)
    record = await store.get_url(request.match_info["id"])
    return web.json_response(url_json(record, config, request.app.get(TLS)))


async def update_url(request: web.Request) -> web.Response:
    store, controller, config = parts(request)
    body = await read_json(request)
    record = await store.update_url(
        request.match_info["id"], lambda current: urls.parse_update(current, body)
    )
    controller.wake()
    return web.json_response(url_json(record, config, request.app.get(TLS)))


async def delete_url(request: web.Request) -> web.Response:
    store, controller, config = parts(request)
    record = await store.delete_url(request.match_info["id"])
    controller.wake()
    return web.json_response(url_json(record, config, request.app.get(TLS)))


async def list_certificates(request: web.Request) -> web.Response:
    tls = request.app.get(TLS)
    statuses = tls.statuses() if tls is not None else []
    body: CertificateListJson = {"certificates": [certificate_json(s) for s in statuses]}
    return web.json_response(body)


# --- views (Url, UrlTls, Certificate: patrd/model/view_shapes.py) ---------------


def url_json(record: UrlRecord, config: Config, tls: TlsView | None) -> UrlJson:
    spec = record.spec
    listens = config.tls.https_listen
    if listens:
        port = listens[0].port
        base = f"https://{spec.domain}" + ("" if port == 443 else f":{port}")
    else:
        port = config.proxy.http_listen[0].port if config.proxy.http_listen else 80
        base = f"http://{spec.domain}" + ("" if port == 80 else f":{port}")
    return {
        "id": record.id,
        **spec.to_json(),
        "url": base + ("/" if spec.path == "/" else spec.path),
        "created_at": rfc3339(record.created_at),
        "updated_at": rfc3339(record.updated_at),
        "tls": url_tls_json(tls.status(spec.domain) if tls is not None else None),
    }


def url_tls_json(status: CertStatus | None) -> UrlTlsJson:
    if status is None:
        return {"status": "pending", "error": "", "expires_at": None, "issuer": ""}
    return {
        "status": status.status,
        "error": status.error,
        "expires_at": rfc3339(status.not_after) if status.not_after else None,
        "issuer": status.issuer,
    }


def certificate_json(status: CertStatus) -> CertificateJson:
    def at(value: float | None) -> str | None:
        return rfc3339(value) if value else None

    return {
        "domain": status.domain,
        "status": status.status,
        "issuer": status.issuer,
        "serial": status.serial,
        "not_before": at(status.not_before),
        "not_after": at(status.not_after),
        "renew_at": at(status.renew_at),
        "error": status.error,
        "failures": status.failures,
        "next_attempt_at": at(status.next_attempt_at),
        "attempts": status.attempts,
        "orders_last_hour": status.orders_last_hour,
        "orders_total": status.orders_total,
        "renewals": status.renewals,
        "alert": status.alert,
    }


def add_routes(app: web.Application) -> None:
    r = app.router
    r.add_get("/v1/urls", list_urls, name="list_urls", allow_head=False)
    r.add_post("/v1/urls", create_url, name="create_url")
    r.add_get("/v1/urls/{id}", get_url, name="get_url", allow_head=False)
    r.add_patch("/v1/urls/{id}", update_url, name="update_url")
    r.add_delete("/v1/urls/{id}", delete_url, name="delete_url")
    r.add_get("/v1/certificates", list_certificates, name="list_certificates", allow_head=False)
