"""`/docs` and `/redoc` render in headless Chromium with no network but the backend.

Chromium resolves no host name but 127.0.0.1 (``--host-resolver-rules``), as on a factory
network with no way out: before, Swagger UI came from a CDN and /docs stayed blank.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from moby.broker.mosquitto import Mosquitto
from moby.store.influxd import Influxd
from tests.cdp import CHROMIUM, Browser
from tests.support import Backend

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed"),
]

OFFLINE = "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"


async def test_api_docs_render_with_no_network_but_the_backend(
    broker: Mosquitto, influxd: Influxd, make_backend: Callable[..., Backend], tmp_path: Path
) -> None:
    backend = make_backend(broker, influxd)
    paths = sorted(backend.get("/openapi.json")["paths"])
    assert "/api/v1/sensors" in paths and "/healthz" in paths

    async with Browser(tmp_path / "chromium", args=[OFFLINE]) as browser:
        await browser.send("Page.enable")
        # The block is real: a host name outside the machine does not resolve.
        await browser.send("Page.navigate", url="https://cdn.jsdelivr.net/npm/swagger-ui-dist@5/")
        await browser.wait_for("document.readyState === 'complete'")
        assert await browser.evaluate("location.href.startsWith('chrome-error://')")

        await browser.send("Page.navigate", url=f"{backend.api}/docs")
        await browser.wait_for(
            f"document.querySelectorAll('.opblock-summary-path').length === {len(paths)}", timeout_s=60
        )
        shown = await browser.evaluate(
            "[...document.querySelectorAll('.opblock-summary-path')].map(e => e.dataset.path || e.innerText)"
        )
        assert sorted(p.replace("\u200b", "") for p in shown) == paths
        assert await browser.evaluate("document.querySelector('.info .title').innerText.startsWith('MOBY')")
        loaded = await browser.evaluate("performance.getEntriesByType('resource').map(e => e.name)")
        assert loaded and all(url.startswith(backend.api + "/") for url in loaded), loaded
        shot = await browser.screenshot(tmp_path / "docs.png")
        assert shot.stat().st_size > 10_000
        print(f"/docs screenshot: {shot}")

        # ReDoc's bundle always asks for its attribution logo from cdn.redoc.ly; the page's
        # Content-Security-Policy (img-src 'self') blocks it before any request leaves, and ReDoc
        # then leaves the logo out. Every other resource comes from the backend.
        await browser.send(
            "Page.addScriptToEvaluateOnNewDocument",
            source="window.__csp = []; document.addEventListener('securitypolicyviolation',"
            " e => window.__csp.push(e.blockedURI));",
        )
        await browser.send("Page.navigate", url=f"{backend.api}/redoc")
        await browser.wait_for(
            "document.body && document.body.innerText.includes('Every sensor seen') && "
            "document.body.innerText.includes('Process is alive')",
            timeout_s=60,
        )
        loaded = await browser.evaluate("performance.getEntriesByType('resource').map(e => e.name)")
        blocked = await browser.evaluate("window.__csp")
        outside = [url for url in loaded if not url.startswith(backend.api + "/")]
        assert blocked == outside == ["https://cdn.redoc.ly/redoc/logo-mini.svg"], (loaded, blocked)
