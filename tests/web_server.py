"""Helpers for the web tests: an app on a temp SQLite store and web folder, a signed-in TestClient, a live uvicorn
server in a background thread, and Playwright fixtures driving Debian's Chromium.

    app = make_app(tmp_path)                                  # create_app on tmp_path/results.sqlite, tmp_path/web
    client = signed_in(app, "ada", "a long passphrase")       # TestClient with a session
    with LiveServer(app) as base_url: ...                     # http://127.0.0.1:PORT, stopped at the end

    from web_server import browser, page                      # pytest fixtures: import them into the test module

Argon2 with its production parameters costs ~0.3 s per hash here; ``make_app`` swaps in a cheap PasswordHasher so a
test file stays fast (tests/test_web_auth.py checks the production hasher separately: a cheap hash is upgraded at
the next login). Playwright's own browser download does not work offline: the fixtures launch /usr/bin/chromium
(EMBEDLAB_CHROMIUM overrides; .ci/run installs it with apt) and fail with that hint when it is missing.
"""
from __future__ import annotations

import atexit
import os
import re
import shutil
import socket
import tempfile
import threading
import time
from pathlib import Path

import pytest
from argon2 import PasswordHasher
from fastapi.testclient import TestClient

from embedlab.web import WebConfig, create_app

CHROMIUM = os.environ.get("EMBEDLAB_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
SECRET = "test-secret-" + "x" * 40


def fast_hasher() -> PasswordHasher:
    return PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)


_empty_store: Path | None = None


def _fresh_sqlite(tmp_path: Path) -> str:
    """A new, already migrated, empty results store in tmp_path: a copy of one made once per test session (creating
    each with Alembic costs ~0.3 s)."""
    global _empty_store
    if _empty_store is None:
        from embedlab.bench.store import ResultsStore

        folder = Path(tempfile.mkdtemp(prefix="embedlab-web-test-"))
        atexit.register(shutil.rmtree, folder, True)
        ResultsStore(f"sqlite:///{folder / 'results.sqlite'}").close()
        _empty_store = folder / "results.sqlite"
    target = tmp_path / "results.sqlite"
    tmp_path.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(_empty_store, target)
    return f"sqlite:///{target}"


def make_app(tmp_path: Path, db_url: str | None = None, **config):
    """create_app on a temp store (or ``db_url``) and web folder, with a cheap password hasher."""
    config.setdefault("secret_key", SECRET)
    cfg = WebConfig(db_url=db_url or _fresh_sqlite(tmp_path), web_dir=tmp_path / "web", **config)
    app = create_app(cfg)
    app.state.accounts.hasher = fast_hasher()
    return app


def csrf_from(html: str) -> str:
    found = re.search(r'name="csrf-token" content="([^"]+)"', html) or \
        re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert found, "no CSRF token in the page"
    return found.group(1)


def login(client: TestClient, username: str, password: str, next: str = "/"):
    """The browser's way: GET /login for the form's token, then POST the form. Returns the POST's response."""
    token = csrf_from(client.get("/login").text)
    return client.post("/login", data={"csrf_token": token, "username": username, "password": password,
                                       "next": next}, follow_redirects=False)


def signed_in(app, username: str, password: str) -> TestClient:
    client = TestClient(app)
    response = login(client, username, password)
    assert response.status_code == 303, response.text[-500:]
    return client


def api_token(client: TestClient) -> dict[str, str]:
    """The header a signed-in API client sends with state-changing requests."""
    return {"X-CSRF-Token": client.get("/api/me").json()["csrf_token"]}


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LiveServer:
    """The app under uvicorn in a daemon thread on a free 127.0.0.1 port; the context value is the base URL."""

    def __init__(self, app):
        import uvicorn

        self.port = free_port()
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning",
                                                    lifespan="on"))
        self.thread = threading.Thread(target=self.server.run, daemon=True, name="uvicorn-test")

    def __enter__(self) -> str:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the test server did not start")
            time.sleep(0.02)
        return f"http://127.0.0.1:{self.port}"

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


def chromium_path() -> str:
    path = CHROMIUM if os.path.isabs(CHROMIUM) else shutil.which(CHROMIUM)
    if not path or not os.access(path, os.X_OK):
        pytest.fail(f"Chromium not found at {CHROMIUM}: install it (apt-get install chromium; .ci/run does) or set "
                    "EMBEDLAB_CHROMIUM", pytrace=False)
    return path


@pytest.fixture(scope="module")
def browser():
    """A headless Chromium (Debian's, through Playwright) for the module."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        launched = pw.chromium.launch(executable_path=chromium_path(), headless=True, args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture
def page(browser):
    """A fresh browser context (no cookies) and page per test."""
    context = browser.new_context(viewport={"width": 1200, "height": 800})
    context.set_default_timeout(10_000)
    try:
        yield context.new_page()
    finally:
        context.close()


def watch_errors(tab) -> list[str]:
    """The page's JavaScript errors and console errors (CSP violations included), collected for an assertion."""
    errors: list[str] = []
    tab.on("pageerror", lambda e: errors.append(f"page error: {e}"))
    tab.on("console", lambda m: errors.append(f"console: {m.text}") if m.type == "error" else None)
    return errors


def browser_login(tab, base: str, username: str, password: str, next: str = "") -> None:
    """Sign in through the login page (``next``: where the app sends the user afterwards)."""
    tab.goto(base + "/login" + (f"?next={next}" if next else ""))
    tab.get_by_label("User name").fill(username)
    tab.get_by_label("Password").fill(password)
    tab.get_by_role("button", name="Log in").click()
