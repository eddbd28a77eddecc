"""`make bench` (device drivers): what `moby edge` costs polling real protocol servers.

One agent, against a real Mosquitto, with
- 100 Modbus registers polled at 1 Hz: 10 sensors × 10 holding registers on one pymodbus server
  (one shared TCP connection, one read request per sensor per second), and
- 10 OPC UA subscriptions: 10 sensors on one asyncua server (one shared session), each
  subscribed to a variable that changes every second.
The agent's CPU time over a window after warm-up (from /proc: utime + stime), as a fraction of
one core; also its RSS, and the readings it took (every one of them buffered with an fsync and
published at QoS 1). The servers run in processes of their own and are not counted.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.devices: the servers

from tests.devices.procs import ROOT, modbus_server, opcua_server

from ingest import cpu_seconds, machine, rss_mb
from moby.broker.mosquitto import Mosquitto
from moby.edge.buffer import EdgeBuffer, sensor_key
from moby.procs import ManagedProcess, free_port

MODBUS_SENSORS, REGISTERS, OPCUA_SENSORS = 10, 10, 10


def config(tmp: Path, broker: str, modbus_port: int, opc_port: int) -> str:
    lines = [f'factory_id = "bench"\nbrokers = ["{broker}"]\nbuffer_path = "{tmp}/edge.sqlite"\n']
    for s in range(MODBUS_SENSORS):
        lines.append(
            f'[[sensors]]\nsensor_id = "mb-{s}"\ntype = "temperature"\ndriver = "modbus"\n'
            f'url = "tcp://127.0.0.1:{modbus_port}"\ninterval_s = 1.0\n'
        )
        for r in range(REGISTERS):
            lines.append(
                f'[[sensors.registers]]\nname = "t{r}"\naddress = {s * REGISTERS + r}\nscale = 0.1\n'
            )
    for s in range(OPCUA_SENSORS):
        lines.append(
            f'[[sensors]]\nsensor_id = "ua-{s}"\ntype = "temperature"\ndriver = "opcua"\n'
            f'endpoint = "opc.tcp://127.0.0.1:{opc_port}/moby/"\ninterval_s = 1.0\n'
            f'nodes = [{{ name = "temperature", node_id = "ns=2;s=Bench.{s}" }}]\n'
        )
    return "\n".join(lines)


def run(window_s: float, warmup_s: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="moby-bench-devices-") as name:
        tmp = Path(name)
        broker = Mosquitto(tmp / "mosquitto", free_port())
        broker.start()
        modbus_port, opc_port = free_port(), free_port()
        words = list(range(MODBUS_SENSORS * REGISTERS))
        procs = [
            modbus_server(tmp / "mb", {"1": {"holding": {"0": words}}}, tcp=modbus_port).start(),
            opcua_server(tmp, opc_port, "--period", "1.0", "--nodes", str(OPCUA_SENSORS)).start(
                timeout_s=120
            ),
        ]
        path = tmp / "edge.toml"
        path.write_text(config(tmp, broker.url, modbus_port, opc_port))
        edge = ManagedProcess(
            "moby edge",
            [sys.executable, "-m", "moby", "edge", "-c", str(path)],
            log_path=tmp / "edge.log",
            ready=lambda: True,
            cwd=ROOT,
        ).start()
        started = time.monotonic()
        try:
            time.sleep(warmup_s)
            cpu0, t0 = cpu_seconds(edge.pid), time.monotonic()
            time.sleep(window_s)
            cpu1, t1 = cpu_seconds(edge.pid), time.monotonic()
            rss = rss_mb(edge.pid)
            edge.signal(signal.SIGTERM)
            assert edge.proc is not None and edge.proc.wait(30) == 0, edge.tail()
            ran = time.monotonic() - started
            warnings = sum("warning" in line for line in edge.tail(10_000).splitlines())
            with EdgeBuffer(tmp / "edge.sqlite", max_bytes=1 << 30, max_age_s=86400) as buffer:
                taken = {k: buffer.next_seq(k) for k in _keys()}
                left = buffer.depth()
        finally:
            edge.stop()
            for proc in procs:
                proc.stop()
            broker.stop()
        modbus = sum(v for k, v in taken.items() if "/mb-" in k)
        opcua = sum(v for k, v in taken.items() if "/ua-" in k)
        return {
            "window_s": round(t1 - t0, 1),
            "agent_cores": round((cpu1 - cpu0) / (t1 - t0), 4),
            "agent_rss_mb": round(rss, 1),
            # over the agent's whole run, start-up included
            "modbus_registers_per_s": round(modbus * REGISTERS / ran, 1),
            "opcua_readings_per_s": round(opcua / ran, 1),
            "left_in_buffer": left,
            "log_warnings": warnings,
        }


def _keys() -> list[str]:
    return [sensor_key("bench", f"mb-{s}") for s in range(MODBUS_SENSORS)] + [
        sensor_key("bench", f"ua-{s}") for s in range(OPCUA_SENSORS)
    ]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--window", type=float, default=60.0)
    parser.add_argument("--warmup", type=float, default=15.0)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    results = {"machine": machine(), "at": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    results["devices"] = run(args.window, args.warmup)
    text = json.dumps(results, indent=2)
    if args.json:
        args.json.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
