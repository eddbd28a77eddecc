"""The built-in console at `/` in headless Chromium: what a plant engineer sees on the first screen
(1400×1000: every sensor's newest values with their units, vibration zones, stale and offline
sensors marked), the live charts, the fleet table, accessibility, its Content-Security-Policy
(nothing blocked), and asking for an API token when one is required.

The screenshots are kept as test artifacts (their paths are printed; under pytest's tmp folder):
``first-screen.png`` (the viewport), ``console.png`` (the whole page) and ``charts.png``.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from moby.broker.mosquitto import Mosquitto
from moby.store.influxd import Influxd
from tests.cdp import CHROMIUM, Browser
from tests.support import Backend, DemoSensor, http_json, mosquitto_pub_lines, wait_until

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


PER_TYPE = 10  # 40 sensors, as many as `moby up` simulates
WIDTH, HEIGHT = 1400, 1000
# Vibration sensors driven into zones C and D (RMS velocity in mm/s, iso_zone 1-4 = A-D).
ZONED = {"vib-02": (5.0, 3.0), "vib-03": (9.0, 4.0)}
FLAT = "tem-01"  # a thermometer reading 40.00 ± 0.01 °C: its chart must not look dramatic
GAPPY = "hum-01"  # readings missing for a minute in the middle: the chart line breaks
STALE = "tem-stale"  # connected, but its newest reading is 10 minutes old
OFFLINE = "vib-off"  # its last word was an offline status
# What each type's tile shows first: label, value name, unit as shown (births spell mm/s, degC, %RH, dB(A)).
MAIN = {
    "vibration": ("RMS velocity", "rms_velocity", "mm/s"),
    "temperature": ("Temperature", "temperature", "°C"),
    "humidity": ("Humidity", "humidity", "% RH"),
    "noise": ("LAeq", "laeq", "dB(A)"),
}


def with_shown(expression: str) -> str:
    """``expression`` with ``shown(node)``: the text a sighted user reads, without the words kept
    for screen readers only."""
    return (
        "(() => { const shown = (node) => { const c = node.cloneNode(true);"
        " c.querySelectorAll('.visually-hidden').forEach(h => h.remove());"
        " return c.textContent.replace(/\\s+/g, ' ').trim(); };"
        f" return ({expression}); }})()"
    )


def telemetry(s: DemoSensor, readings: list[dict[str, Any]]) -> bytes:
    return orjson.dumps({"schema": "moby.telemetry.v1", "sensor_type": s.sensor_type, "readings": readings})


def reading(s: DemoSensor, seq: int, t: float) -> dict[str, Any]:
    values = s.values(t)
    if s.sensor_id in ZONED:
        values["rms_velocity"], values["iso_zone"] = ZONED[s.sensor_id]
    if s.sensor_id == FLAT:
        values = {"temperature": 40.0 + (0.01 if seq % 2 else -0.01)}
    return {"ts": int(t * 1000), "seq": seq, "values": values}


def history(port: int, factory: str) -> tuple[list[DemoSensor], dict[str, dict[str, Any]]]:
    """Births and the last five minutes of readings (one every 5 s) of a fleet; returns the
    sensors and each one's newest reading."""
    sensors = [
        DemoSensor(factory, f"{t[:3]}-{i:02d}", t, "line-1", f"m-{i:02d}")
        for t in TYPES
        for i in range(PER_TYPE)
    ]
    sensors += [
        DemoSensor(factory, STALE, "temperature", "line-2", "m-stale"),
        DemoSensor(factory, OFFLINE, "vibration", "line-2", "m-off"),
    ]
    now = time.time()
    newest: dict[str, dict[str, Any]] = {}
    for s in sensors:
        mosquitto_pub_lines(port, f"moby/{factory}/{s.sensor_id}/status", [s.birth()])
        start = now - (900 if s.sensor_id == STALE else 300)
        readings = [reading(s, k, start + k * 5) for k in range(60)]
        if s.sensor_id == GAPPY:
            readings = readings[:20] + readings[32:]  # a minute without readings
        newest[s.sensor_id] = readings[-1]
        mosquitto_pub_lines(port, f"moby/{factory}/{s.sensor_id}/telemetry", [telemetry(s, readings)])
    return sensors, newest


def wait_stored(backend: Backend, count: int) -> None:
    wait_until(lambda: backend.stored() >= count, 90, what=f"{count} readings stored")


async def test_the_first_screen_shows_values_units_zones_and_stale_sensors(
    broker: Mosquitto, influxd: Influxd, make_backend: Callable[..., Backend], tmp_path: Path
) -> None:
    backend = make_backend(broker, influxd)
    factory = f"console-{uuid.uuid4().hex[:6]}"
    sensors, newest = history(broker.port, factory)
    total = sum(60 - (12 if s.sensor_id == GAPPY else 0) for s in sensors)
    wait_stored(backend, total)
    mosquitto_pub_lines(
        broker.port, f"moby/{factory}/{OFFLINE}/status", [b'{"schema":"moby.status.v1","online":false}']
    )
    wait_until(
        lambda: (
            not next(s for s in backend.get("/api/v1/sensors")["items"] if s["sensor_id"] == OFFLINE)[
                "online"
            ]
        ),
        30,
        what=f"{OFFLINE} offline",
    )

    async with Browser(tmp_path / "chromium", width=WIDTH, height=HEIGHT) as browser:
        await browser.viewport(WIDTH, HEIGHT)
        # One fresh reading each just before the page opens, so that "current" does not depend on
        # how long the machine took to store the history (the console calls a reading stale
        # after a minute).
        fresh = [s for s in sensors if s.sensor_id not in (STALE, OFFLINE)]
        for s in fresh:
            newest[s.sensor_id] = reading(s, 60, time.time())
            mosquitto_pub_lines(
                broker.port, f"moby/{factory}/{s.sensor_id}/telemetry", [telemetry(s, [newest[s.sensor_id]])]
            )
        wait_stored(backend, total + len(fresh))

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
            f"document.querySelectorAll('#overview li.tile').length === {len(sensors)} && "
            f"document.querySelectorAll('#charts svg.plot').length === {len(sensors)} && "
            "document.getElementById('status').textContent.startsWith('42 sensors')",
            timeout_s=30,
        )
        await browser.evaluate("window.scrollTo(0, 0)")
        first = await browser.screenshot(tmp_path / "first-screen.png", full_page=False)

        # --- the first screen: every sensor's tile, inside the 1400×1000 viewport ---------------
        tiles: dict[str, dict[str, Any]] = {
            t["name"]: t
            for t in await browser.evaluate(
                with_shown(
                    """[...document.querySelectorAll('#overview li.tile')].map(li => {
                     const r = li.getBoundingClientRect();
                     return {name: li.querySelector('h3').innerText.trim(), cls: li.className,
                       top: r.top, bottom: r.bottom, left: r.left, right: r.right,
                       state: li.querySelector('.state').innerText.trim(),
                       values: [...li.querySelectorAll('dl.values > div')].map(d => ({
                         label: d.querySelector('dt').innerText.trim(),
                         text: shown(d.querySelector('dd')),
                         zone: d.querySelector('.zone') ? d.querySelector('.zone').className : null,
                         spoken: d.querySelector('dd').textContent.trim()})),
                       meta: li.querySelector('.meta').textContent.replace(/\\s+/g, ' ').trim()};
                   })"""
                )
            )
        }
        assert set(tiles) == {s.sensor_id for s in sensors}
        for name, tile in tiles.items():
            assert tile["top"] >= 0 and tile["bottom"] <= HEIGHT and tile["right"] <= WIDTH, (name, tile)

        def value(name: str, label: str) -> str:
            return next(v["text"] for v in tiles[name]["values"] if v["label"] == label)

        # Values with their units rendered properly (birth metadata: degC, %RH, mm/s, dB(A)).
        for s in fresh:
            tile = tiles[s.sensor_id]
            assert tile["state"] == "online" and "stale" not in tile["cls"], tile
            want = newest[s.sensor_id]["values"]
            main = MAIN[s.sensor_type]
            text = value(s.sensor_id, main[0])
            number, unit = re.fullmatch(r"(-?[\d.]+)\s*(.*)", text).groups()  # type: ignore[union-attr]
            assert unit == main[2], (s.sensor_id, text)
            sent = want[main[1]]
            shown_to = 0.5 if abs(sent) >= 1000 else 0.05 if abs(sent) >= 10 else 0.005  # the digits shown
            assert abs(float(number) - sent) <= shown_to + 1e-9, (s.sensor_id, text, sent)
        all_text = " ".join(v["text"] for t in tiles.values() for v in t["values"])
        assert "degC" not in all_text and "%RH" not in all_text and "°C" in all_text
        assert value("hum-00", "Temperature").endswith("°C") and value("noi-00", "LAmax").endswith("dB(A)")

        # ISO 10816 zones: a coloured badge with the letter as text (and its meaning for screen readers).
        zones = {name: next((v for v in t["values"] if v["zone"]), None) for name, t in tiles.items()}
        assert {name for name, z in zones.items() if z} == {
            s.sensor_id for s in sensors if s.sensor_type == "vibration"
        }
        assert zones["vib-02"]["text"] == "C" and "zone-c" in zones["vib-02"]["zone"]  # type: ignore[index]
        assert zones["vib-03"]["text"] == "D" and "zone-d" in zones["vib-03"]["zone"]  # type: ignore[index]
        assert zones["vib-03"]["spoken"] == "zone D, damage likely"  # type: ignore[index]
        assert all(z["text"] in "ABCD" for z in zones.values() if z)

        # Stale and offline, in words.
        assert tiles[STALE]["state"] == "stale" and "stale" in tiles[STALE]["cls"]
        assert re.search(r"newest reading 1[0-4] min ago", tiles[STALE]["meta"]), tiles[STALE]
        assert tiles[OFFLINE]["state"] == "offline" and "offline" in tiles[OFFLINE]["cls"]
        assert value(STALE, "Temperature").endswith("°C")  # the last value is still shown, dimmed
        status = await browser.evaluate("document.getElementById('status').textContent")
        assert status == f"{len(sensors)} sensors: {len(fresh)} online, 1 stale, 1 offline."

        # --- the charts --------------------------------------------------------------------------
        charts = {
            c["id"].removeprefix(f"chart-{factory}-"): c
            for c in await browser.evaluate(
                """[...document.querySelectorAll('#charts figure')].map(f => ({id: f.id,
                     lines: [...f.querySelectorAll('polyline')]
                       .map(p => p.getAttribute('points').split(' ').length),
                     dots: f.querySelectorAll('circle').length,
                     ticks: [...f.querySelectorAll('svg text')].map(t => t.textContent),
                     label: f.querySelector('svg').getAttribute('aria-label'),
                     latest: f.querySelector('.latest').textContent}))"""
            )
        }
        assert set(charts) == {s.sensor_id for s in sensors}
        for name, chart in charts.items():
            assert "latest" in chart["label"] and "min" in chart["label"], chart
            if name not in (GAPPY, STALE, OFFLINE):  # five minutes of history, then the fresh reading
                assert chart["lines"][0] == 60 and sum(chart["lines"]) + chart["dots"] == 61, (name, chart)
        assert (
            charts["vib-00"]["label"].startswith("RMS velocity of vib-00")
            and "mm/s" in charts["vib-00"]["label"]
        )
        assert charts["tem-00"]["latest"].endswith("°C")
        # A minute without readings is drawn as a gap: the line breaks, and the summary says so.
        assert charts[GAPPY]["lines"][:2] == [20, 28] and "gap" in charts[GAPPY]["label"], charts[GAPPY]
        # 40.00 ± 0.01 °C spans at least 2 °C of the chart: sensor noise is not a dramatic swing.
        lo, hi = (float(t) for t in charts[FLAT]["ticks"][:2])
        assert hi - lo >= 1.99, charts[FLAT]["ticks"]

        # --- the fleet table -----------------------------------------------------------------
        rows = await browser.evaluate(
            with_shown("[...document.querySelectorAll('#fleet tbody tr')].map(r => [...r.cells].map(shown))")
        )
        assert sorted(r[0] for r in rows) == sorted(s.sensor_id for s in sensors)
        by_name = {r[0]: r for r in rows}
        assert all(r[1] == factory and r[6].endswith("ago") for r in rows), rows
        assert {r[2] for r in rows} == set(TYPES)
        assert by_name["vib-03"][5] == "D" and by_name["tem-00"][5] == "—"
        assert (
            by_name[STALE][3] == "stale"
            and by_name[OFFLINE][3] == "offline"
            and by_name["tem-00"][3] == "online"
        )
        assert "°C" in by_name["tem-00"][4] and "mm/s" in by_name["vib-00"][4]

        # Screen readers: a captioned table with column headers, a polite live region, labelled controls.
        a11y = await browser.evaluate(
            """({
              caption: !!document.querySelector('#fleet caption'),
              scopedHeaders: [...document.querySelectorAll('#fleet thead th')]
                 .every(th => th.scope === 'col'),
              live: document.getElementById('status').getAttribute('aria-live'),
              unlabelled: [...document.querySelectorAll('select, input')]
                 .filter(c => !(c.labels && c.labels.length)).map(c => c.id),
              lang: document.documentElement.lang,
              tileHeadings: document.querySelectorAll('#overview li.tile h3 button').length,
              inlineStyles: document.querySelectorAll('[style]').length,
              inlineScripts: [...document.querySelectorAll('script')].filter(s => !s.src).length,
            })"""
        )
        assert a11y["caption"] and a11y["scopedHeaders"] and a11y["live"] == "polite" and a11y["lang"] == "en"
        assert a11y["unlabelled"] == [] and a11y["tileHeadings"] == len(sensors)
        assert a11y["inlineStyles"] == 0 and a11y["inlineScripts"] == 0  # a strict CSP allows neither

        # Keyboard: Tab reaches the skip link first; a sensor's name button moves focus to its chart.
        await browser.evaluate("document.activeElement && document.activeElement.blur()")
        await browser.press("Tab", "Tab", 9)
        assert await browser.evaluate("document.activeElement.className") == "skip"
        await browser.evaluate("document.querySelector('#overview li.tile h3 button').focus()")
        await browser.press("Enter", "Enter", 13, text="\r")
        focused = await browser.evaluate("document.activeElement.id")
        assert focused.startswith(f"chart-{factory}-"), focused

        shot = await browser.screenshot(tmp_path / "console.png")
        await browser.evaluate("document.getElementById('charts-heading').scrollIntoView()")
        charts_shot = await browser.screenshot(tmp_path / "charts.png", full_page=False)
        await assert_csp_enforced_and_nothing_blocked(browser)
    assert first.stat().st_size > 10_000 and shot.stat().st_size > 10_000
    print(f"console screenshots: {first} {shot} {charts_shot}")


async def test_without_influxdb_the_states_stay_and_the_values_are_said_to_be_unavailable(
    broker: Mosquitto, own_influxd: Influxd, make_backend: Callable[..., Backend], tmp_path: Path
) -> None:
    backend = make_backend(broker, own_influxd)
    factory = f"console-{uuid.uuid4().hex[:6]}"
    sensors = [DemoSensor(factory, f"{t[:3]}-0", t, "line-1", "m-0") for t in TYPES[:2]]
    for s in sensors:
        mosquitto_pub_lines(broker.port, f"moby/{factory}/{s.sensor_id}/status", [s.birth()])
        mosquitto_pub_lines(
            broker.port,
            f"moby/{factory}/{s.sensor_id}/telemetry",
            [telemetry(s, [reading(s, 0, time.time())])],
        )
    wait_stored(backend, len(sensors))
    own_influxd.stop()
    status, body = http_json(f"{backend.api}/api/v1/latest?factory_id={factory}")
    assert status == 502 and body["detail"].startswith("InfluxDB: "), body

    async with Browser(tmp_path / "chromium", width=WIDTH, height=HEIGHT) as browser:
        await browser.viewport(WIDTH, HEIGHT)
        await open_console(browser, f"{backend.api}/?")
        await browser.wait_for("document.body && document.body.dataset.loaded === 'true'", timeout_s=60)
        await browser.evaluate(
            f"(() => {{ const s = document.getElementById('factory'); s.value = '{factory}';"
            " s.dispatchEvent(new Event('change')); })()"
        )
        await browser.wait_for(f"document.querySelectorAll('#overview li.tile').length === {len(sensors)}")
        status_line = await browser.wait_for(
            "(t => t.startsWith('2 sensors') && t)(document.getElementById('status').textContent)"
        )
        assert status_line == "2 sensors: 2 online, 0 stale, 0 offline. Newest values unavailable: " + (
            "the database did not answer."
        )
        tiles = await browser.evaluate(
            "[...document.querySelectorAll('#overview li.tile')].map(li => [li.className,"
            " li.querySelector('.state').textContent, li.querySelector('.novalues').textContent])"
        )
        assert tiles == [["tile online", "online", "Values unavailable."]] * len(sensors)
        charts = await browser.evaluate(
            "[...document.querySelectorAll('#charts .body')].map(b => b.textContent)"
        )
        assert charts == ["Readings unavailable (HTTP 502)."] * len(sensors)
        await browser.screenshot(tmp_path / "no-influxdb.png", full_page=False)


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
