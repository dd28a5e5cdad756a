"""`patrctl list` asks for deployments in pages (issue 20): every page is followed, none twice."""

from __future__ import annotations

from typing import Any, cast

from patrd.cli import deployments as cli_deployments
from patrd.cli.client import Client


class PagedStandIn:
    """``GET /v1/deployments`` as the daemon answers it: by name, ``limit``/``after``, ``next``."""

    def __init__(self, names: list[str]) -> None:
        self.names = sorted(names)
        self.queries: list[dict[str, Any]] = []

    def get(self, path: str, **query: Any) -> Any:
        assert path == "/v1/deployments"
        self.queries.append(query)
        after = query.get("after")
        rest = [n for n in self.names if after is None or n > after]
        limit = int(query["limit"])
        page = rest[:limit]
        more = len(rest) > limit
        return {"deployments": [{"name": n} for n in page], "next": page[-1] if more else None}


def test_list_follows_every_page() -> None:
    names = [f"d{i:03d}" for i in range(2 * cli_deployments.LIST_PAGE + 7)]
    stand_in = PagedStandIn(names)
    got = cli_deployments.list_all(cast(Client, stand_in))
    assert [d["name"] for d in got] == sorted(names)
    assert len(stand_in.queries) == 3
    assert all(q["limit"] == cli_deployments.LIST_PAGE for q in stand_in.queries)
    assert "after" not in stand_in.queries[0]


def test_list_of_nothing_is_one_request() -> None:
    stand_in = PagedStandIn([])
    assert cli_deployments.list_all(cast(Client, stand_in)) == []
    assert len(stand_in.queries) == 1
