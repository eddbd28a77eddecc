"""The built-in console at `/` in headless Chromium: the fleet table, live charts, accessibility.

The screenshot is kept as a test artifact (its path is printed; under pytest's tmp folder).
"""

from __future__ import annotations

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
        await browser.send("Page.enable")
        await browser.send("Page.navigate", url=f"{backend.api}/?")
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
    assert shot.stat().st_size > 10_000
    print(f"console screenshot: {shot}")
