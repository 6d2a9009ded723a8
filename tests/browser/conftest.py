"""Headless Chromium (Debian's /usr/bin/chromium, driven by Playwright) and dashboard servers.

One browser per test session; each test gets a fresh page whose console errors, page errors
and any request that leaves 127.0.0.1 (all of which are aborted) are recorded, and the test
fails on any of them. Servers are started in-process on 127.0.0.1, port 0, and stopped.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse

import pytest

CHROMIUM = Path("/usr/bin/chromium")
FLAGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
         "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]
FIRST_GRAPH_MS = 20_000  # plotly.js alone takes 2-4 s to evaluate on 2 cores
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


@pytest.fixture(scope="session")
def browser():
    if not CHROMIUM.exists() and not shutil.which("chromium"):
        pytest.skip("no Chromium at /usr/bin/chromium (apt-get install -y chromium)")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=FLAGS)
        yield b
        b.close()


class Page:
    """A Playwright page plus what went wrong in it."""

    def __init__(self, page, base_url: str):
        self.page = page
        self.base_url = base_url.rstrip("/")
        self.errors: list[str] = []
        self.offsite: list[str] = []

    def check_clean(self) -> None:
        assert self.errors == [], f"browser console errors: {self.errors}"
        assert self.offsite == [], f"requests that left 127.0.0.1: {self.offsite}"


@pytest.fixture
def open_page(browser, request) -> Iterator:
    contexts = []

    def opener(server) -> Page:
        ctx = browser.new_context(viewport={"width": 1400, "height": 1000})
        contexts.append(ctx)
        page = ctx.new_page()
        out = Page(page, server.url)

        def route(r):
            if urlparse(r.request.url).hostname in ("127.0.0.1", "localhost"):
                r.continue_()
            else:
                out.offsite.append(r.request.url)
                r.abort()

        ctx.route("**/*", route)
        page.on("console", lambda m: m.type == "error" and out.errors.append(m.text))
        page.on("pageerror", lambda e: out.errors.append(str(e)))
        page.set_default_timeout(FIRST_GRAPH_MS)
        return out

    yield opener
    failed = getattr(request.node, "rep_call", None)
    for ctx in contexts:
        if failed is not None and failed.failed:
            ARTIFACTS.mkdir(exist_ok=True)
            for k, p in enumerate(ctx.pages):
                p.screenshot(path=str(ARTIFACTS / f"{request.node.name}-{k}.png"), full_page=True)
        ctx.close()


@pytest.hookimpl(tryfirst=True, hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, f"rep_{rep.when}", rep)
