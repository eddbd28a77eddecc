"""Helpers for integration tests: a backend child process, publishing, counting points."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import orjson

from moby.edge.fleet import make_driver
from moby.edge.messages import birth_payload
from moby.procs import ManagedProcess, free_port, http_ready


def http_json(url: str, timeout: float = 5) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, orjson.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, orjson.loads(e.read() or b"null")


def influx_query(influx_url: str, q: str, db: str = "") -> list[dict[str, Any]]:
    params = urllib.parse.urlencode({"q": q, "db": db, "epoch": "ms"})
    with urllib.request.urlopen(f"{influx_url}/query?{params}", timeout=30) as r:
        return orjson.loads(r.read())["results"]  # type: ignore[no-any-return]


def count_points(influx_url: str, db: str, rp: str = "raw") -> int:
    """Points stored across all measurements (each has the integer field seq)."""
    try:
        results = influx_query(influx_url, f'SELECT count("seq") FROM "{rp}"./.*/', db)
    except OSError:
        return -1
    return sum(s["values"][0][1] for s in results[0].get("series", []))


def wait_until(predicate: Callable[[], bool], timeout: float, interval: float = 0.25, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}")


def telemetry(seq: int, ts_ms: int, sensor_type: str = "vibration", **values: float) -> bytes:
    return orjson.dumps(
        {
            "schema": "moby.telemetry.v1",
            "sensor_type": sensor_type,
            "ts": ts_ms,
            "seq": seq,
            "values": values or {"rms_velocity": 1.0 + seq % 7},
        }
    )


def mosquitto_pub_lines(port: int, topic: str, payloads: Iterable[bytes], qos: int = 1) -> None:
    """Publish each payload as one message with `mosquitto_pub -l` (as fast as it can)."""
    data = b"\n".join(payloads) + b"\n"
    subprocess.run(
        ["mosquitto_pub", "-p", str(port), "-q", str(qos), "-t", topic, "-l", "-V", "mqttv5"],
        input=data,
        check=True,
        timeout=300,
    )


class Backend(ManagedProcess):
    """`moby serve` as a child process, as an operator would run it."""

    def __init__(
        self,
        *,
        data_dir: Path,
        mqtt_url: str,
        influx_url: str,
        db: str,
        client_id: str,
        extra_env: dict[str, str] | None = None,
    ) -> None:
        self.api_port = free_port()
        self.api = f"http://127.0.0.1:{self.api_port}"
        self.influx_url = influx_url
        self.db = db
        env = {
            "MOBY_MQTT_URL": mqtt_url,
            "MOBY_INFLUX_URL": influx_url,
            "MOBY_INFLUX_DB": db,
            "MOBY_DATA_DIR": str(data_dir),
            "MOBY_API_PORT": str(self.api_port),
            "MOBY_MQTT_CLIENT_ID": client_id,
            "MOBY_LOG_LEVEL": "info",
            **(extra_env or {}),
        }
        super().__init__(
            "moby serve",
            [sys.executable, "-m", "moby", "serve"],
            log_path=data_dir.parent / f"serve-{self.api_port}.log",
            ready=self._ready_now,
            env=env,
        )

    def _ready_now(self) -> bool:
        return http_ready(f"{self.api}/readyz")

    def get(self, path: str) -> Any:
        status, body = http_json(self.api + path)
        assert status == 200, (status, body)
        return body

    def metric(self, name: str, labels: str = "") -> float:
        with urllib.request.urlopen(f"{self.api}/metrics", timeout=5) as r:
            text = r.read().decode()
        total = 0.0
        for line in text.splitlines():
            if line.startswith("#"):
                continue
            key, _, value = line.rpartition(" ")
            if key.split("{", 1)[0] == name and labels in key:
                total += float(value)
        return total

    def stored(self) -> int:
        return count_points(self.influx_url, self.db)


class StreamPublisher:
    """A steady stream of telemetry from several sensors, one `mosquitto_pub -l` each.

    A thread writes lines round-robin at ``rate`` messages/s in total; every sensor's ``seq``
    counts up from 0 and its ``ts`` is ``start_ms + seq`` so every reading is a distinct point.
    ``stop()`` closes the pipes and waits until every QoS 1 publish was acknowledged.
    """

    def __init__(self, port: int, *, sensors: int = 4, rate: float = 500, factory: str = "f1") -> None:
        self.port = port
        self.rate = rate
        self.start_ms = int(time.time() * 1000) - 3_600_000
        self.topics = [f"moby/{factory}/s{i}/telemetry" for i in range(sensors)]
        self.sent = 0
        self._stop = threading.Event()
        self._procs = [
            subprocess.Popen(
                ["mosquitto_pub", "-p", str(port), "-q", "1", "-t", t, "-l", "-V", "mqttv5"],
                stdin=subprocess.PIPE,
            )
            for t in self.topics
        ]
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> StreamPublisher:
        self._thread.start()
        return self

    def _run(self) -> None:
        started = time.monotonic()
        seq = 0
        while not self._stop.is_set():
            due = int((time.monotonic() - started) * self.rate)
            while self.sent < due:
                proc = self._procs[self.sent % len(self._procs)]
                assert proc.stdin is not None
                proc.stdin.write(telemetry(seq, self.start_ms + seq) + b"\n")
                self.sent += 1
                if self.sent % len(self._procs) == 0:
                    seq += 1
            for proc in self._procs:
                assert proc.stdin is not None
                proc.stdin.flush()
            time.sleep(0.01)

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        for proc in self._procs:
            assert proc.stdin is not None
            proc.stdin.close()
        for proc in self._procs:
            assert proc.wait(timeout=120) == 0
        return self.sent


async def end_session(host: str, port: int, client_id: str) -> None:
    """Connect with clean start and no session expiry, then leave: the broker forgets the session."""
    from moby.mqtt import SessionOptions, open_connection

    options = SessionOptions(client_id=client_id, clean_start=True, session_expiry_s=0)
    try:
        conn, _ = await open_connection(host, port, options, lambda *a: None, timeout_s=5)
    except (OSError, TimeoutError, ValueError):
        return  # the broker is gone, and the session with it
    await conn.disconnect()


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise LookupError(pid)


SENSOR_TYPES = ("vibration", "temperature", "humidity", "noise")


class DemoSensor:
    """A sensor of the shipped simulated kinds, for tests that need realistic contract messages
    (births with units, readings with every value a real driver sends) without the simulator."""

    def __init__(
        self, factory_id: str, sensor_id: str, sensor_type: str, line_id: str, machine_id: str
    ) -> None:
        self.factory_id, self.sensor_id, self.sensor_type = factory_id, sensor_id, sensor_type
        self.line_id, self.machine_id = line_id, machine_id
        self.driver = make_driver(SENSOR_TYPES.index(sensor_type), seed=len(sensor_id), vib_refresh=10)
        assert self.driver.sensor_type == sensor_type

    def birth(self) -> bytes:
        return birth_payload(
            sensor_type=self.sensor_type,
            units=self.driver.units,
            model="SIM-1",
            firmware="1.0.0",
            line_id=self.line_id,
            machine_id=self.machine_id,
        )

    def values(self, t: float) -> dict[str, float]:
        """A reading (the drivers keep their own time; ``t`` is accepted for the call sites)."""
        return self.driver.read()
