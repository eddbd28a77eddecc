"""Real sensors end to end: protocol servers → ``moby edge`` → Mosquitto → ``moby serve`` → InfluxDB.

The devices are programs of their own on free ports and pseudo-terminals: pymodbus's server over
TCP and over RTU on a ``socat`` pty pair, an asyncua server, a script printing lines on another
pty pair, a program run by the command driver, and a known sine written into a FIFO.
"""

from __future__ import annotations

import math
import os
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from moby.edge.buffer import EdgeBuffer, sensor_key
from moby.procs import ManagedProcess, free_port
from tests.devices.procs import ROOT, modbus_server, opcua_server, pty_pair
from tests.support import influx_query, wait_until

pytestmark = pytest.mark.integration

SENSOR_TYPES = "vibration,noise,temperature,humidity,pressure"
SINE_HZ, SINE_MM_S, RATE_HZ, COUNTS_PER_M_S2 = 100.0, 4.0, 5000, 1000


def words(fmt: str, value: float, *, word_order: str = "big") -> list[int]:
    """A value's 16-bit registers, encoded independently of the driver (struct, big-endian)."""
    raw = struct.pack(fmt, value)
    regs = [int.from_bytes(raw[i : i + 2], "big") for i in range(0, len(raw), 2)]
    return regs if word_order == "big" else regs[::-1]


def agent(tmp_path: Path, broker_url: str, sensors: str, name: str = "edge") -> ManagedProcess:
    config = tmp_path / f"{name}.toml"
    config.write_text(
        f'factory_id = "f1"\nbrokers = ["{broker_url}"]\nbuffer_path = "{tmp_path / name}.sqlite"\n'
        f"health_every_s = 1.0\n{sensors}"
    )
    return ManagedProcess(
        "moby edge",
        [sys.executable, "-m", "moby", "edge", "--config", str(config)],
        log_path=tmp_path / f"{name}.log",
        ready=lambda: True,
        cwd=ROOT,
    )


def points(influx_url: str, db: str, sensor: str, measurement: str) -> list[dict[str, Any]]:
    res = influx_query(influx_url, f"SELECT * FROM \"{measurement}\" WHERE sensor_id = '{sensor}'", db)
    series = res[0].get("series", [])
    if not series:
        return []
    columns = series[0]["columns"]
    return [dict(zip(columns, row, strict=True)) for row in series[0]["values"]]


def sine_int16(seconds: float) -> bytes:
    """A sine of SINE_MM_S mm/s RMS velocity at SINE_HZ, as int16 counts of 1 mm/s² each."""
    t = np.arange(int(RATE_HZ * seconds)) / RATE_HZ
    amplitude = math.sqrt(2) * SINE_MM_S / 1000 * 2 * math.pi * SINE_HZ  # m/s²
    counts = np.round(amplitude * COUNTS_PER_M_S2 * np.sin(2 * np.pi * SINE_HZ * t))
    return counts.astype("<i2").tobytes()


def test_every_driver_end_to_end(tmp_path, broker, influxd, make_backend) -> None:
    backend = make_backend(broker, influxd, moby_sensor_types=SENSOR_TYPES)
    tcp_port, opc_port = free_port(), free_port()
    started: list[ManagedProcess] = []

    def start(proc: ManagedProcess, timeout_s: float = 30) -> ManagedProcess:
        started.append(proc)
        return proc.start(timeout_s)

    try:
        start(
            modbus_server(
                tmp_path / "mb-tcp",
                {"1": {"holding": {"0": [215]}, "input": {"4": words(">f", 40.25)}, "coil": {"0": [0, 1]}}},
                tcp=tcp_port,
            )
        )
        rtu_socat, rtu_device_end, rtu_agent_end = pty_pair(tmp_path, "rtu")
        start(rtu_socat)
        start(
            modbus_server(
                tmp_path / "mb-rtu",
                {"7": {"holding": {"100": words(">i", -123456, word_order="little")}}},
                rtu=str(rtu_device_end),
            )
        )
        go_bad = tmp_path / "pressure-sensor-fails"
        start(opcua_server(tmp_path, opc_port, "--bad-when", str(go_bad)), timeout_s=90)
        serial_socat, serial_device_end, serial_agent_end = pty_pair(tmp_path, "serial")
        start(serial_socat)
        fifo = tmp_path / "accel.fifo"
        endpoint = f"opc.tcp://127.0.0.1:{opc_port}/moby/"
        sensors = f"""
[[sensors]]
sensor_id = "tt-101"
type = "temperature"
driver = "modbus"
url = "tcp://127.0.0.1:{tcp_port}"
interval_s = 0.5
registers = [
  {{ name = "temperature", address = 0, data_type = "int16", scale = 0.1, units = "degC" }},
  {{ name = "humidity", table = "input", address = 4, data_type = "float32", units = "%RH" }},
  {{ name = "alarm", table = "coil", address = 1 }},
]

[[sensors]]
sensor_id = "tt-102"
type = "temperature"
driver = "modbus"
url = "rtu://{rtu_agent_end}"
baudrate = 19200
unit_id = 7
interval_s = 0.5

[[sensors.registers]]
name = "temperature"
address = 100
data_type = "int32"
word_order = "little"
scale = 0.001
units = "degC"

[[sensors]]
sensor_id = "oven-temp"
type = "temperature"
driver = "opcua"
endpoint = "{endpoint}"
interval_s = 0.2
nodes = [{{ name = "temperature", node_id = "ns=2;s=Oven.Temp", units = "degC" }}]

[[sensors]]
sensor_id = "oven-pressure"
type = "pressure"
driver = "opcua"
endpoint = "{endpoint}"
mode = "polling"
interval_s = 0.5
nodes = [{{ name = "pressure", browse_path = "0:Objects/2:Plant/2:Oven/2:Pressure", units = "bar" }}]

[[sensors]]
sensor_id = "oven-level"
type = "pressure"
driver = "opcua"
endpoint = "{endpoint}"
mode = "polling"
interval_s = 0.5
nodes = [{{ name = "level", node_id = "ns=2;s=Oven.Level", units = "m" }}]

[[sensors]]
sensor_id = "hum-1"
type = "humidity"
driver = "serial"
port = "{serial_agent_end}"
baudrate = 115200
values = {{ humidity = "%RH", temperature = "degC" }}

[[sensors]]
sensor_id = "noise-1"
type = "noise"
driver = "command"
command = ["{sys.executable}", "-c", "print('{{\\"laeq\\": 71.5, \\"lamax\\": 80.25}}')"]
format = "json"
interval_s = 0.5
values = {{ laeq = "dB(A)", lamax = "dB(A)" }}

[[sensors]]
sensor_id = "vib-1"
driver = "waveform"
source = "fifo"
path = "{fifo}"
sample_rate_hz = {RATE_HZ}
sensitivity = {1 / COUNTS_PER_M_S2}
"""
        t0 = int(time.time() * 1000)
        edge = start(agent(tmp_path, broker.url, sensors))
        start(
            ManagedProcess(
                "line printer",
                [
                    sys.executable,
                    "-m",
                    "tests.devices.line_printer",
                    str(serial_device_end),
                    "--every",
                    "0.1",
                ],
                log_path=tmp_path / "printer.log",
                ready=lambda: True,
                cwd=ROOT,
            )
        )
        wait_until(fifo.exists, 30, what="the agent creates the FIFO")
        # opening the FIFO waits for the agent's reader; what is written then stays until it is read
        fed_at = int(time.time() * 1000)
        with open(fifo, "wb") as pipe:  # three 1 s windows, written at once as a DAQ's burst
            pipe.write(sine_int16(3.0))

        db = backend.db
        expected = {
            "tt-101": "temperature",
            "tt-102": "temperature",
            "oven-temp": "temperature",
            "oven-pressure": "pressure",
            "oven-level": "pressure",
            "hum-1": "humidity",
            "noise-1": "noise",
            "vib-1": "vibration",
        }

        # the pressure tag turns Bad once a few Good readings of it are stored
        wait_until(lambda: len(points(influxd.url, db, "oven-pressure", "pressure")) >= 3, 60, what="Good")
        go_bad.touch()

        def bad_pressure() -> bool:
            return any(
                p.get("quality") == "bad" for p in points(influxd.url, db, "oven-pressure", "pressure")
            )

        try:
            wait_until(
                lambda: (
                    all(len(points(influxd.url, db, s, m)) >= 3 for s, m in expected.items())
                    and bad_pressure()
                ),
                90,
                interval=1,
            )
        except AssertionError:
            counts = {s: len(points(influxd.url, db, s, m)) for s, m in expected.items()}
            raise AssertionError(
                f"stored per sensor: {counts}; bad pressure: {bad_pressure()}\n{edge.tail()}"
            ) from None
        edge.signal(signal.SIGTERM)
        assert edge.proc is not None and edge.proc.wait(30) == 0
        t1 = int(time.time() * 1000)

        # every reading taken was stored, seq contiguous from 0, each at a time within the run
        with EdgeBuffer(tmp_path / "edge.sqlite", max_bytes=1 << 30, max_age_s=86400) as buffer:
            taken = {s: buffer.next_seq(sensor_key("f1", s)) for s in expected}
        stored: dict[str, list[dict[str, Any]]] = {}
        for sensor, measurement in expected.items():
            wait_until(
                lambda s=sensor, m=measurement: len(points(influxd.url, db, s, m)) == taken[s],
                30,
                what=f"all {taken[sensor]} readings of {sensor}",
            )
            stored[sensor] = points(influxd.url, db, sensor, measurement)
            assert sorted(p["seq"] for p in stored[sensor]) == list(range(taken[sensor])), sensor
            assert all(t0 <= p["time"] <= t1 for p in stored[sensor]), sensor

        tt101 = stored["tt-101"]
        assert {(p["temperature"], p["humidity"], p["alarm"]) for p in tt101} == {(21.5, 40.25, 1.0)}
        assert {p["temperature"] for p in stored["tt-102"]} == {-123.456}
        oven = sorted(stored["oven-temp"], key=lambda p: p["time"])
        temps = [p["temperature"] for p in oven]
        assert temps == sorted(temps) and len(set(temps)) == len(temps)  # a changing variable
        assert all(round((t - 20.0) / 0.5, 6).is_integer() for t in temps)
        assert all(p.get("quality") is None for p in oven)  # Good: no quality field
        pressure = stored["oven-pressure"]
        assert {p["pressure"] for p in pressure} == {1.5}
        assert {p.get("quality") for p in pressure} == {None, "bad"}  # Good, then BadSensorFailure
        assert {(p["level"], p.get("quality")) for p in stored["oven-level"]} == {(0.75, "uncertain")}
        assert all(p["temperature"] == 21.5 and 40 <= p["humidity"] <= 49 for p in stored["hum-1"])
        assert "status" not in stored["hum-1"][0] or stored["hum-1"][0]["status"] is None
        assert {(p["laeq"], p["lamax"]) for p in stored["noise-1"]} == {(71.5, 80.25)}
        vib = stored["vib-1"]
        assert len(vib) == 3
        for p in vib:
            assert p["rms_velocity"] == pytest.approx(SINE_MM_S, rel=0.01)
            assert p["dominant_freq_hz"] == pytest.approx(SINE_HZ)
            assert p["iso_zone"] == 3.0  # class II: 2.8 < 4.0 ≤ 7.1 mm/s is zone C
            assert fed_at <= p["time"] <= fed_at + 5000

        # the birth metadata carries each driver's units; health counts the device's problems
        registry = {s["sensor_id"]: s for s in backend.get("/api/v1/sensors")["items"]}
        units = {s: registry[s]["metadata"]["units"] for s in expected}
        assert units["tt-101"] == {"temperature": "degC", "humidity": "%RH", "alarm": ""}
        assert units["oven-pressure"] == {"pressure": "bar"}
        assert units["hum-1"] == {"humidity": "%RH", "temperature": "degC"}
        assert units["vib-1"]["rms_velocity"] == "mm/s"
        assert registry["hum-1"]["health"]["errors"]["serial_parse"] >= 1  # the ERR lines
    finally:
        for proc in reversed(started):
            proc.stop()


def modbus_sensor(port: int, *registers: str, extra: str = "") -> str:
    regs = "\n".join(f"[[sensors.registers]]\n{r}\n" for r in registers)
    return (
        f'[[sensors]]\nsensor_id = "tt-101"\ntype = "temperature"\ndriver = "modbus"\n'
        f'url = "tcp://127.0.0.1:{port}"\ninterval_s = 0.5\ntimeout_s = 0.5\n{extra}\n{regs}'
    )


TEMPERATURE = 'name = "temperature"\naddress = 0\ndata_type = "int16"\nscale = 0.1\nunits = "degC"'


def test_modbus_device_down_for_20_s_is_counted_and_resumes(tmp_path, broker, influxd, make_backend) -> None:
    backend = make_backend(broker, influxd)
    port = free_port()
    units = {"1": {"holding": {"0": [215]}}}
    server = modbus_server(tmp_path / "mb", units, tcp=port).start()
    edge = agent(tmp_path, broker.url, modbus_sensor(port, TEMPERATURE)).start()
    try:

        def stored() -> list[dict[str, Any]]:
            return points(influxd.url, backend.db, "tt-101", "temperature")

        def health() -> dict[str, Any]:
            items = {s["sensor_id"]: s for s in backend.get("/api/v1/sensors")["items"]}
            return (items.get("tt-101") or {}).get("health") or {}

        wait_until(lambda: len(stored()) >= 3, 30, what="first readings")
        server.stop()
        stopped_at = int(time.time() * 1000)
        time.sleep(20)
        assert edge.running  # the agent lives through it
        errors = health().get("errors", {})
        assert errors.get("modbus_unreachable", 0) + errors.get("modbus_timeout", 0) >= 20, errors
        gap = [p for p in stored() if p["time"] > stopped_at + 1000]
        assert not gap  # no readings invented while the device was away

        server = modbus_server(tmp_path / "mb", units, tcp=port).start()
        back_at = int(time.time() * 1000)
        wait_until(lambda: len([p for p in stored() if p["time"] >= back_at]) >= 3, 30, what="resumed")
        edge.signal(signal.SIGTERM)
        assert edge.proc is not None and edge.proc.wait(30) == 0
        with EdgeBuffer(tmp_path / "edge.sqlite", max_bytes=1 << 30, max_age_s=86400) as buffer:
            taken = buffer.next_seq(sensor_key("f1", "tt-101"))
        wait_until(lambda: len(stored()) == taken, 30, what="every reading stored")
        assert sorted(p["seq"] for p in stored()) == list(range(taken))  # no gap in seq: nothing lost
        assert {p["temperature"] for p in stored()} == {21.5}
        # one log line when the device went away, one when it came back: not one per failed poll
        log = (tmp_path / "edge.log").read_text()
        assert log.count("device fault") in (1, 2), log  # unreachable (and maybe a timeout first)
        assert log.count("device answers again") == 1, log
    finally:
        edge.stop()
        server.stop()


def run_edge(config: Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.upper().startswith("MOBY_")}
    return subprocess.run(
        [sys.executable, "-m", "moby", "edge", "--config", str(config)],
        env=clean,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
    )


def error_lines(done: subprocess.CompletedProcess[str]) -> list[str]:
    assert done.returncode == 2, (done.returncode, done.stderr)
    assert "Traceback" not in done.stderr, done.stderr
    return [line.removeprefix("error: ") for line in done.stderr.splitlines() if line.startswith("error: ")]


def test_a_wrong_register_map_is_one_line_at_start(tmp_path) -> None:
    port = free_port()
    server = modbus_server(tmp_path / "mb", {"1": {"holding": {"0": [215, 1]}}}, tcp=port).start()
    config = tmp_path / "edge.toml"
    broker = f"mqtt://127.0.0.1:{free_port()}"  # never reached: the check comes first
    head = f'factory_id = "f1"\nbrokers = ["{broker}"]\nbuffer_path = "{tmp_path}/b.sqlite"\n'
    try:
        pressure = 'name = "pressure"\naddress = 500\nunits = "bar"'
        config.write_text(head + modbus_sensor(port, TEMPERATURE, pressure))
        assert error_lines(run_edge(config)) == [
            f"{config}: [sensors.0] registers.1.address=500 (sensor tt-101, modbus): the device refuses it: "
            "holding 500-500: Modbus exception 2 (illegal data address)"
        ]
        # a float32 at address 1 reads registers 1-2: the device has no register 2
        config.write_text(
            head + modbus_sensor(port, 'name = "temperature"\naddress = 1\ndata_type = "float32"')
        )
        assert error_lines(run_edge(config)) == [
            f"{config}: [sensors.0] registers.0.address=1 (sensor tt-101, modbus): the device refuses it: "
            "holding 1-2: Modbus exception 2 (illegal data address)"
        ]
    finally:
        server.stop()
    # the device not there at all: one line naming the URL; "retry" starts anyway and keeps trying
    config.write_text(head + modbus_sensor(port, TEMPERATURE))
    [line] = error_lines(run_edge(config))
    assert line.startswith(f"{config}: [sensors.0] url='tcp://127.0.0.1:{port}' (sensor tt-101, modbus): ")
    assert line.endswith('to start without it: startup_error_behavior = "retry"'), line
    config.write_text(head + 'startup_error_behavior = "retry"\n' + modbus_sensor(port, TEMPERATURE))
    edge = ManagedProcess(
        "moby edge",
        [sys.executable, "-m", "moby", "edge", "-c", str(config)],
        log_path=tmp_path / "e.log",
        ready=lambda: True,
        cwd=ROOT,
    ).start()
    try:
        wait_until(lambda: "device not reachable at start" in edge.tail(), 30, what="the warning")
        time.sleep(1)
        assert edge.running
    finally:
        edge.stop()
