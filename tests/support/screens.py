"""Browser screen helpers: a viewport of a given width, screenshots, sideways overflow."""

from __future__ import annotations

from typing import Any

from tests.support.browser import ARTIFACTS, Browser


def set_width(b: Browser, width: int) -> None:
    """Make the page's viewport ``width`` CSS pixels wide (the window's chrome aside)."""
    b.driver.set_window_size(width, 900)
    inner = int(b.js("return window.innerWidth"))
    if inner != width:
        b.driver.set_window_size(width + (width - inner), 900)
    assert int(b.js("return window.innerWidth")) == width


def shot(b: Browser, name: str, width: int) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    height = int(b.js("return document.documentElement.scrollHeight"))
    b.driver.set_window_size(width, max(900, min(height + 40, 3000)))
    b.driver.save_screenshot(str(ARTIFACTS / f"console-{name}.png"))
    set_width(b, width)


def overflow(b: Browser) -> dict[str, Any]:
    """How far the page scrolls sideways, and the widest elements that cause it."""
    return dict(
        b.js(
            """
            const w = window.innerWidth;
            const culprits = [...document.querySelectorAll('main *, header *')]
              .filter(el => el.getBoundingClientRect().right > w + 1)
              .slice(0, 5).map(el => el.tagName + '.' + el.className + '#' + el.id);
            return {scroll: document.documentElement.scrollWidth, inner: w, culprits};
            """
        )
    )
