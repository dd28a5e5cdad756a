"""The Create form states no limits of its own: its number bounds, its defaults and the name's
length come from the create shape the daemon declares (patrd/model/spec_shapes.py), read
from the OpenAPI document it serves. A real daemon, a real browser.
"""

from __future__ import annotations

from typing import Any

import pytest

from patrd.model import spec_shapes
from tests.support import dashboard_site
from tests.support.browser import Browser
from tests.support.dashboard_site import Site, login

site = dashboard_site.site
browser = dashboard_site.browser

pytestmark = pytest.mark.docker


def _js(number: float | int) -> str:
    """A number as the browser writes it in an attribute (64.0 → "64")."""
    return str(int(number)) if float(number).is_integer() else str(number)


def test_the_create_form_takes_bounds_and_defaults_from_the_declared_shape(
    site: Site, browser: Browser
) -> None:
    b = browser
    login(b, site)
    b.get(f"{site.base}/ui/#/create")
    b.wait_css("#create-form")
    scale: Any = spec_shapes.SCALE.fields
    resources: Any = spec_shapes.RESOURCES.fields
    declared = {
        "scale.min": (scale["min"], scale["min"].default),
        "scale.max": (scale["max"], scale["min"].default),  # a create's max defaults to min
        "scale.target_cpu": (scale["target_cpu"], scale["target_cpu"].default),
        "resources.cpu": (resources["cpu"], resources["cpu"].default),
        "resources.memory_mb": (resources["memory_mb"], resources["memory_mb"].default),
    }
    for path, (shape, default) in declared.items():
        want = (_js(shape.lo), _js(shape.hi), _js(default))

        def seen(path: str = path, want: tuple[str, str, str] = want) -> tuple[str, ...] | None:
            el = b.css(f'[data-field="{path}"]')
            got = (el.get_attribute("min"), el.get_attribute("max"), el.get_property("value"))
            return got if got == want else None

        b.wait(f"{path} bounded by {want}", seen)
    name = b.css('[data-field="name"]')
    limits = (str(spec_shapes.NAME.min_length), str(spec_shapes.MAX_NAME))
    b.wait(
        "the name's declared length",
        lambda: (
            (name.get_attribute("minlength"), name.get_attribute("maxlength")) == limits or None
        ),
    )
    hint = b.css(f"#{name.get_attribute('id')}-hint").text
    assert hint.endswith(f"{limits[0]} to {limits[1]} characters."), hint
    assert spec_shapes.MAX_NAME == 57
