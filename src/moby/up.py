"""``moby up``: the whole pipeline on one machine, each part a child process under the data dir."""

from __future__ import annotations

import signal
import sys
import threading
from pathlib import Path

from rich.console import Console

from moby.broker.mosquitto import Mosquitto
from moby.procs import ManagedProcess, free_port, http_ready, port_open
from moby.store.influxd import Influxd


def run_up(
    data_dir: Path,
    *,
    mqtt_port: int,
    influx_port: int,
    api_port: int,
    sensors: int,
    rate: float,
    factory: str,
    console: Console,
) -> int:
    data_dir = data_dir.resolve()
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    for name, port in (("MQTT", mqtt_port), ("InfluxDB", influx_port), ("API", api_port)):
        if port_open(port):
            console.print(f"[red]port {port} ({name}) is taken: choose another with --{name.lower()}-port")
            return 2

    started: list[ManagedProcess] = []
    try:
        with console.status("starting Mosquitto…"):
            broker = Mosquitto(data_dir / "mosquitto", mqtt_port)
            started.append(broker.start())
        console.print(f"[green]✓[/] Mosquitto   mqtt://127.0.0.1:{mqtt_port}  (state in {broker.directory})")
        with console.status("starting InfluxDB…"):
            influx = Influxd(data_dir / "influxdb", influx_port, free_port())
            started.append(influx.start(timeout_s=60))
        console.print(f"[green]✓[/] InfluxDB    {influx.url}  (state in {influx.directory})")
        env = {
            "MOBY_MQTT_URL": broker.url,
            "MOBY_INFLUX_URL": influx.url,
            "MOBY_DATA_DIR": str(data_dir / "backend"),
            "MOBY_API_PORT": str(api_port),
            "MOBY_MQTT_CLIENT_ID": "moby-up-backend",
        }
        with console.status("starting the backend…"):
            backend = ManagedProcess(
                "moby serve",
                [sys.executable, "-m", "moby", "serve"],
                log_path=data_dir / "logs" / "serve.log",
                ready=lambda: http_ready(f"http://127.0.0.1:{api_port}/readyz"),
                env=env,
            )
            started.append(backend.start(timeout_s=60))
        console.print(f"[green]✓[/] Backend     http://127.0.0.1:{api_port}/docs  (log {backend.log_path})")
        simulator = ManagedProcess(
            "moby simulate",
            [
                sys.executable,
                "-m",
                "moby",
                "simulate",
                "--factory",
                factory,
                "--sensors",
                str(sensors),
                "--rate",
                str(rate),
            ],
            log_path=data_dir / "logs" / "simulate.log",
            ready=lambda: True,
            # its store-and-forward buffer, apart from the backend's queue
            env={**env, "MOBY_DATA_DIR": str(data_dir / "simulate")},
        )
        started.append(simulator.start())
        console.print(f"[green]✓[/] Simulator   {sensors} sensors × {rate}/s in factory {factory!r}")
        console.print(
            "\n[bold]Where to look[/]\n"
            f"  sensors      http://127.0.0.1:{api_port}/api/v1/sensors\n"
            f"  metrics      http://127.0.0.1:{api_port}/metrics\n"
            f"  dead letters http://127.0.0.1:{api_port}/api/v1/dlq\n"
            f"  InfluxDB     influx -port {influx_port} -database moby "
            "-execute 'SHOW MEASUREMENTS'\n"
            f"  live MQTT    mosquitto_sub -p {mqtt_port} -t 'moby/#' -v\n"
            "\nCtrl-C stops everything."
        )
        while not stop.wait(1.0):
            dead = [p for p in started if not p.running]
            if dead:
                console.print(f"[red]{dead[0].name} exited; see {dead[0].log_path}:\n{dead[0].tail()}")
                return 1
        return 0
    finally:
        console.print("\nstopping…")
        for proc in reversed(started):
            code = proc.stop()
            console.print(f"  {proc.name} stopped ({code})")
