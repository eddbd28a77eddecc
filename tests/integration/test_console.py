"""The built-in console at `/` in headless Chromium: the fleet table, live charts, accessibility,
its Content-Security-Policy (nothing blocked), and asking for an API token when one is required.

The screenshot is kept as a test artifact (its path is printed; under pytest's tmp folder).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest

from moby.broker.mosquitto import Mosquitto
from moby.store.influxd import Influxd
from tests.cdp import CHROMIUM, Browser
from tests.support import Backend, DemoSensor, mosquitto_pub_lines, wait_until

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed"),
]

TYPES = ("vibration", "temperature", "humidity", "noise")
# Installed before the page's own scripts: every Content-Security-Policy violation, as reported.
CSP_WATCH = (
    "window.__csp = []; document.addEventListener('securitypolicyviolation',"
    " e => window.__csp.push(`${e.effectiveDirective} ${e.blockedURI}`));"
)


async def open_console(browser: Browser, url: str) -> None:
    await browser.send("Page.enable")
    await browser.send("Page.addScriptToEvaluateOnNewDocument", source=CSP_WATCH)
    await browser.send("Page.navigate", url=url)


async def assert_csp_enforced_and_nothing_blocked(browser: Browser) -> None:
    assert await browser.evaluate("window.__csp") == [], "the console broke its own CSP"
    # The watch works and the policy is on: an inline script is blocked and reported.
    await browser.evaluate(
        "(() => { const s = document.createElement('script'); s.textContent = 'window.__ran = 1';"
        " document.body.append(s); })()"
    )
    await browser.wait_for("window.__csp.length === 1")
    assert await browser.evaluate("window.__ran === undefined && window.__csp[0]") == "script-src-elem inline"


def feed(port: int, factory: str) -> list[DemoSensor]:
    """Births and the last five minutes of readings (one every 5 s) of four simulated sensors."""
    sensors = [DemoSensor(factory, f"{t[:3]}-{i}", t, "line-1", f"m-{i}") for i, t in enumerate(TYPES)]
    now = time.time()
    for s in sensors:
        mosquitto_pub_lines(port, f"moby/{factory}/{s.sensor_id}/status", [s.birth()])
        readings = [
            {"ts": int((now - 300 + k * 5) * 1000), "seq": k, "values": s.values(now - 300 + k * 5)}
            for k in range(60)
        ]
        payload = orjson.dumps(
            {"schema": "moby.telemetry.v1", "sensor_type": s.sensor_type, "readings": readings}
        )
        mosquitto_pub_lines(port, f"moby/{factory}/{s.sensor_id}/telemetry", [payload])
    return sensors


async def test_the_console_shows_the_fleet_and_a_chart_per_sensor(
    broker: Mosquitto, influxd: Influxd, make_backend: Callable[..., Backend], tmp_path: Path
) -> None:
    backend = make_backend(broker, influxd)
    factory = f"console-{uuid.uuid4().hex[:6]}"
    sensors = feed(broker.port, factory)
    wait_until(lambda: backend.stored() >= 240, 60, what="240 readings stored")

    async with Browser(tmp_path / "chromium") as browser:
        await open_console(browser, f"{backend.api}/?")
        await browser.wait_for("document.body && document.body.dataset.loaded === 'true'")
        # Narrow to this test's factory through the labelled control, as a user would.
        await browser.wait_for(
            f"[...document.querySelectorAll('#factory option')].some(o => o.value === '{factory}')"
        )
        await browser.evaluate(
            f"(() => {{ const s = document.getElementById('factory'); s.value = '{factory}';"
            " s.dispatchEvent(new Event('change')); })()"
        )
        await browser.wait_for(
            f"document.querySelectorAll('#fleet tbody tr').length === {len(sensors)} && "
            "document.querySelectorAll('#charts svg.plot polyline').length === "
            f"{len(sensors)}",
            timeout_s=30,
        )
        rows = await browser.evaluate(
            "[...document.querySelectorAll('#fleet tbody tr')]"
            ".map(tr => [...tr.cells].map(c => c.innerText.trim()))"
        )
        assert sorted(r[0] for r in rows) == sorted(s.sensor_id for s in sensors)
        assert all(r[1] == factory and r[3] == "online" and r[4].endswith("ago") for r in rows), rows
        assert {r[2] for r in rows} == set(TYPES)

        # Each chart drew the readings: a polyline with many points, and says so in words.
        charts = await browser.evaluate(
            "[...document.querySelectorAll('#charts figure')].map(f => ({id: f.id,"
            " points: f.querySelector('polyline').getAttribute('points').split(' ').length,"
            " label: f.querySelector('svg').getAttribute('aria-label')}))"
        )
        assert len(charts) == len(sensors)
        for chart in charts:
            assert chart["points"] >= 50, chart
            assert "latest" in chart["label"] and "min" in chart["label"], chart
        vib = next(c for c in charts if "vib-0" in c["id"])
        assert vib["label"].startswith("rms_velocity of vib-0") and "mm/s" in vib["label"]

        # Screen readers: a captioned table with column headers, a polite live region, labelled controls.
        a11y = await browser.evaluate(
            """({
              caption: !!document.querySelector('#fleet caption'),
              scopedHeaders: [...document.querySelectorAll('#fleet thead th')]
                 .every(th => th.scope === 'col'),
              live: document.getElementById('status').getAttribute('aria-live'),
              status: document.getElementById('status').textContent,
              unlabelled: [...document.querySelectorAll('select, input')]
                 .filter(c => !(c.labels && c.labels.length)).map(c => c.id),
              lang: document.documentElement.lang,
            })"""
        )
        assert a11y["caption"] and a11y["scopedHeaders"] and a11y["live"] == "polite" and a11y["lang"] == "en"
        assert a11y["unlabelled"] == []
        assert a11y["status"] == f"{len(sensors)} sensors, {len(sensors)} online, 0 offline."

        # Keyboard: Tab reaches the skip link first; a sensor's name button moves focus to its chart.
        await browser.evaluate("document.activeElement && document.activeElement.blur()")
        await browser.press("Tab", "Tab", 9)
        assert await browser.evaluate("document.activeElement.className") == "skip"
        await browser.evaluate("document.querySelector('#fleet tbody button').focus()")
        await browser.press("Enter", "Enter", 13, text="\r")
        focused = await browser.evaluate("document.activeElement.id")
        assert focused.startswith(f"chart-{factory}-"), focused

        shot = await browser.screenshot(tmp_path / "console.png")
        await assert_csp_enforced_and_nothing_blocked(browser)
    assert shot.stat().st_size > 10_000
    print(f"console screenshot: {shot}")


def create_token(data_dir: Path, role: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "moby", "token", "create", "--role", role],
        env={
            **{k: v for k, v in os.environ.items() if not k.startswith("MOBY_")},
            "MOBY_DATA_DIR": str(data_dir),
        },
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return done.stdout.strip()


async def test_the_console_asks_for_a_token_when_tokens_are_required(
    broker: Mosquitto, influxd: Influxd, make_backend: Callable[..., Backend], tmp_path: Path
) -> None:
    backend = make_backend(broker, influxd, moby_api_auth="required")
    token = create_token(tmp_path / "backend", "viewer")
    factory = f"console-{uuid.uuid4().hex[:6]}"
    sensors = feed(broker.port, factory)
    wait_until(lambda: backend.stored() >= 240, 60, what="240 readings stored")

    async with Browser(tmp_path / "chromium") as browser:
        await open_console(browser, f"{backend.api}/")
        # Guarded: until the new document is parsed, #login does not exist yet.
        login_shown = "(() => { const f = document.getElementById('login'); return !!f && !f.hidden; })()"
        await browser.wait_for(login_shown)
        asked = await browser.evaluate(
            "({message: document.getElementById('login-message').textContent,"
            " focused: document.activeElement.id, rows: document.querySelectorAll('#fleet tbody tr').length,"
            " label: document.getElementById('token').labels.length})"
        )
        assert asked == {
            "message": "This backend needs an API token (viewer or above).",
            "focused": "token",
            "rows": 0,
            "label": 1,
        }

        async def use(value: str) -> None:
            await browser.evaluate(
                f"(() => {{ document.getElementById('token').value = {value!r};"
                " document.getElementById('login').requestSubmit(); })()"
            )

        await use("moby_0123456789abcdef_" + "A" * 43)
        await browser.wait_for(
            f"{login_shown} && "
            "document.getElementById('login-message').textContent.startsWith('The token was refused')"
        )
        await use(token)
        await browser.wait_for(
            f"document.getElementById('login').hidden && [...document.querySelectorAll('#fleet tbody tr')]"
            f".filter(tr => tr.cells[1].innerText === '{factory}').length === {len(sensors)}",
            timeout_s=30,
        )
        assert await browser.evaluate("sessionStorage.getItem('moby-api-token')") == token
        assert not await browser.evaluate("document.getElementById('forget').hidden")
        # A reload in the same tab keeps it; the charts read the readings with it.
        await browser.evaluate("window.__before_reload = true")
        await browser.send("Page.reload")
        await browser.wait_for(
            "!window.__before_reload && document.body && document.body.dataset.loaded === 'true'"
        )
        await browser.wait_for(
            "document.querySelectorAll('#charts svg.plot polyline').length > 0", timeout_s=30
        )
        assert await browser.evaluate("document.getElementById('login').hidden")
        # Forgetting it asks again.
        await browser.evaluate("document.getElementById('forget').click()")
        await browser.wait_for(login_shown)
        assert await browser.evaluate("sessionStorage.getItem('moby-api-token')") is None
        await assert_csp_enforced_and_nothing_blocked(browser)
