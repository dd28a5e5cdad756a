"""The OpenAPI document's links reach every operation on a created resource."""

from __future__ import annotations

from typing import Any

from patrd.api.openapi import OPENAPI, document


def _operations_with(param: str, prefix: str) -> set[str]:
    return {
        op["operationId"]
        for path, item in OPENAPI["paths"].items()
        if path.startswith(prefix)
        for method, op in item.items()
        if method != "parameters"
    }


def _links(path: str) -> dict[str, Any]:
    return dict(OPENAPI["paths"][path]["post"]["responses"]["201"]["links"])


def test_create_deployment_links_to_every_name_operation() -> None:
    wanted = _operations_with("name", "/v1/deployments/{name}")
    assert len(wanted) >= 20
    links = _links("/v1/deployments")
    assert set(links) == wanted
    assert all(link["parameters"]["name"] == "$response.body#/name" for link in links.values())
    # A deletion repeats the name as ?confirm=NAME: the link fills it too.
    confirm = links.pop("delete_deployment")["parameters"]["query.confirm"]
    assert confirm == "$response.body#/name"
    assert all(len(link["parameters"]) == 1 for link in links.values())


def test_urls_and_secrets_link_to_their_operations() -> None:
    assert set(_links("/v1/urls")) == {"get_url", "update_url", "delete_url"}
    assert _links("/v1/urls")["get_url"]["parameters"] == {"id": "$response.body#/id"}
    assert set(_links("/v1/secrets")) == {"get_secret", "put_secret", "delete_secret"}


def test_every_link_names_an_operation_of_the_document() -> None:
    ids = _operations_with("", "/")
    for item in OPENAPI["paths"].values():
        for method, op in item.items():
            if method == "parameters":
                continue
            for response in op["responses"].values():
                for link in response.get("links", {}).values():
                    assert link["operationId"] in ids


def test_the_document_is_built_afresh_and_never_patched() -> None:
    assert document() == OPENAPI
    assert document() is not OPENAPI
