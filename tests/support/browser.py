"""Headless Chromium (Debian's ``chromium`` + ``chromium-driver``) driven by Selenium.

Nothing is downloaded: the driver and browser are the Debian binaries, named
explicitly so Selenium Manager never runs. Every browser gets a fresh
profile directory (no cookies, no cache) and collects the page's console
messages so a test can assert that the page logged no errors.

Chromium runs in a network namespace of its own. Chromium drops every
request in flight with ``ERR_NETWORK_CHANGED`` when an interface or address
of its namespace changes, and the Docker engine adds a bridge or veth (with
an IPv6 link-local address) for every deployment and instance the tests
start: in the root namespace the browser would fail at random. Inside the
namespace there is only ``lo``; the ports the test names are forwarded to the
same port on the root namespace's loopback (threads in this process, sockets
made in the namespace with ``setns``), and ChromeDriver attaches to the
browser's DevTools port, forwarded the other way.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import tempfile
import threading
import urllib.request
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

from selenium import webdriver
from selenium.common.exceptions import (
    NoAlertPresentException,
    NoSuchElementException,
    StaleElementReferenceException,
    WebDriverException,
)
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement

from tests.support.daemon import free_port
from tests.support.netns import listener_in, netns, socket_in
from tests.support.waits import until_sync

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "dashboard"

T = TypeVar("T")

FLAGS = (
    "--headless=new",
    "--no-sandbox",  # tests run as root
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-extensions",
    "--window-size=1280,900",
)


class Forwarder:
    """Accept on ``listener``; pipe each connection to a socket ``connect()`` returns."""

    def __init__(self, listener: socket.socket, connect: Callable[[], socket.socket]) -> None:
        listener.setblocking(True)
        listener.settimeout(0.2)
        self._listener = listener
        self._connect = connect
        self._stop = threading.Event()
        self._sockets: set[socket.socket] = set()
        self._thread = threading.Thread(target=self._accept, daemon=True, name="forwarder")
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._listener.close()
        for sock in list(self._sockets):
            with contextlib.suppress(OSError):
                sock.close()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                upstream = self._connect()
            except OSError:
                client.close()
                continue
            client.settimeout(None)
            pair = _Pair(client, upstream, self._sockets)
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=pair.pump, args=(a, b), daemon=True).start()


class _Pair:
    """Two connected sockets piped both ways; both are closed when both directions end."""

    def __init__(self, a: socket.socket, b: socket.socket, registry: set[socket.socket]) -> None:
        self._sockets = (a, b)
        self._registry = registry
        self._lock = threading.Lock()
        self._open = 2
        registry.update(self._sockets)

    def pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                sink.shutdown(socket.SHUT_WR)
            with self._lock:
                self._open -= 1
                done = self._open == 0
            if done:
                for sock in self._sockets:
                    self._registry.discard(sock)
                    sock.close()


def _root_connect(port: int) -> Callable[[], socket.socket]:
    def connect() -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        sock.settimeout(None)  # a followed log may stay quiet for long
        return sock

    return connect


def _ns_connect(ns: str, port: int) -> Callable[[], socket.socket]:
    def connect() -> socket.socket:
        sock = socket_in(ns)
        try:
            sock.settimeout(10)
            sock.connect(("127.0.0.1", port))
        except OSError:
            sock.close()
            raise
        sock.settimeout(None)
        return sock

    return connect


class Browser:
    """``ports``: loopback ports of this machine the page may reach (same numbers inside)."""

    def __init__(self, ports: Iterable[int], extra_flags: tuple[str, ...] = ()) -> None:
        missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.exists()]
        if missing:
            raise RuntimeError(f"missing {', '.join(missing)}: run scripts/setup")
        self.console: list[dict[str, Any]] = []
        self._stack = contextlib.ExitStack()
        try:
            self._start(list(ports), extra_flags)
        except BaseException:
            self._stack.close()
            raise

    def _start(self, ports: list[int], extra_flags: tuple[str, ...]) -> None:
        stack = self._stack
        self.ns = stack.enter_context(netns("pbr"))  # killed with everything in it at exit
        for port in ports:
            inbound = Forwarder(listener_in(self.ns, "127.0.0.1", port), _root_connect(port))
            stack.callback(inbound.close)
        devtools = free_port()
        outbound = Forwarder(_root_listener(devtools), _ns_connect(self.ns, devtools))
        stack.callback(outbound.close)
        self.profile = Path(tempfile.mkdtemp(prefix="patrd-chromium-"))
        stack.callback(shutil.rmtree, self.profile, ignore_errors=True)
        self._chromium = subprocess.Popen(
            [
                "ip",
                "netns",
                "exec",
                self.ns,
                str(CHROMIUM),
                *FLAGS,
                *extra_flags,
                f"--user-data-dir={self.profile}",
                f"--remote-debugging-port={devtools}",
                "about:blank",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        stack.callback(self._stop_chromium)
        _wait_devtools(devtools, self._chromium)
        options = webdriver.ChromeOptions()
        options.debugger_address = f"127.0.0.1:{devtools}"
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        self.driver = webdriver.Chrome(options=options, service=Service(str(CHROMEDRIVER)))
        stack.callback(self.driver.quit)
        self.driver.set_page_load_timeout(30)

    def _stop_chromium(self) -> None:
        self._chromium.terminate()
        try:
            self._chromium.wait(10)
        except subprocess.TimeoutExpired:
            self._chromium.kill()
            self._chromium.wait()

    def close(self) -> None:
        self._stack.close()

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- pages ---------------------------------------------------------------

    def get(self, url: str) -> None:
        self.driver.get(url)

    @property
    def url(self) -> str:
        return str(self.driver.current_url)

    def js(self, script: str, *args: Any) -> Any:
        return self.driver.execute_script(script, *args)

    def css(self, selector: str) -> WebElement:
        return self.driver.find_element(By.CSS_SELECTOR, selector)

    def all(self, selector: str) -> list[WebElement]:
        return list(self.driver.find_elements(By.CSS_SELECTOR, selector))

    def wait(self, what: str, check: Callable[[], T | None], timeout: float = 20) -> T:
        """Poll ``check`` until it returns something truthy (DOM churn is retried); on
        failure the page's console and a screenshot are kept."""
        last_error: list[Exception] = []

        def value() -> T | None:
            try:
                return check()
            except (NoSuchElementException, StaleElementReferenceException) as exc:
                last_error[:] = [exc]
                return None

        def failed() -> str:
            self.collect_console()
            with contextlib.suppress(WebDriverException):
                ARTIFACTS.mkdir(parents=True, exist_ok=True)
                self.driver.save_screenshot(str(ARTIFACTS / "failed-wait.png"))
            return f"url {self.url}; last error {last_error!r}; console {self.console[-5:]}"

        found: T = until_sync(value, timeout, f"waiting for {what}", interval=0.05, detail=failed)
        return found

    def wait_css(self, selector: str, timeout: float = 20) -> WebElement:
        def visible() -> WebElement | None:
            for el in self.all(selector):
                if el.is_displayed():
                    return el
            return None

        return self.wait(f"a visible {selector!r}", visible, timeout)

    def wait_text(self, selector: str, text: str, timeout: float = 20) -> WebElement:
        def has() -> WebElement | None:
            for el in self.all(selector):
                if text in el.text:
                    return el
            return None

        return self.wait(f"{selector!r} containing {text!r}", has, timeout)

    def fill(self, selector: str, text: str) -> WebElement:
        el = self.wait_css(selector)
        el.clear()
        el.send_keys(text)
        return el

    def click(self, selector: str) -> None:
        self.wait_css(selector).click()

    def accept_confirm(self, timeout: float = 10) -> str:
        """Accept the page's ``window.confirm`` question; return its text."""
        return self._answer_confirm(True, timeout)

    def dismiss_confirm(self, timeout: float = 10) -> str:
        """Answer the page's ``window.confirm`` question with Cancel; return its text."""
        return self._answer_confirm(False, timeout)

    def _answer_confirm(self, accept: bool, timeout: float) -> str:
        def alert() -> Any:
            try:
                return self.driver.switch_to.alert
            except NoAlertPresentException:
                return None

        question = self.wait("a confirm dialog", alert, timeout)
        text = str(question.text)
        if accept:
            question.accept()
        else:
            question.dismiss()
        return text

    def screenshot(self, name: str) -> Path:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        path = ARTIFACTS / f"{name}.png"
        height = self.js("return document.documentElement.scrollHeight")
        self.driver.set_window_size(1280, max(900, min(int(height) + 40, 3000)))
        self.driver.save_screenshot(str(path))
        self.driver.set_window_size(1280, 900)
        return path

    def collect_console(self) -> list[dict[str, Any]]:
        with contextlib.suppress(WebDriverException):
            self.console.extend(self.driver.get_log("browser"))
        return self.console

    def console_errors(self) -> list[dict[str, Any]]:
        return [m for m in self.collect_console() if m.get("level") == "SEVERE"]

    def cookies(self) -> dict[str, dict[str, Any]]:
        return {c["name"]: c for c in self.driver.get_cookies()}


def _root_listener(port: int) -> socket.socket:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(64)
    return sock


def _wait_devtools(port: int, proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
    def answering() -> bool:
        if proc.poll() is not None:
            raise RuntimeError(f"chromium exited {proc.returncode} before DevTools answered")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/version", timeout=1):
                return True
        except OSError:
            return False

    until_sync(answering, timeout, f"chromium's DevTools answering on port {port}")
