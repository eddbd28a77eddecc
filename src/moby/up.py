"""``moby up``: the whole pipeline on one machine, each part a child process under the data dir."""

from __future__ import annotations

import signal
import sys
import threading
from pathlib import Path

from rich.console import Console

from moby.broker.acl import Role
from moby.broker.setup import BrokerDir, SecureMosquitto
from moby.procs import ManagedProcess, free_port, http_ready, port_open
from moby.store.influxd import Influxd


def run_up(
    data_dir: Path,
    *,
    mqtt_port: int,
    mqtt_cert_port: int,
    influx_port: int,
    api_port: int,
    sensors: int,
    rate: float,
    factory: str,
    console: Console,
    errors: Console,
    moby: str = "moby",
) -> int:
    """Progress and hints go to ``console`` (stdout), problems to ``errors`` (stderr); the hints
    spell the ``moby`` command as ``moby`` (how the user ran it, e.g. ``.venv/bin/moby``)."""
    data_dir = data_dir.resolve()
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    for name, port in (
        ("MQTT", mqtt_port),
        ("MQTT-cert", mqtt_cert_port),
        ("InfluxDB", influx_port),
        ("API", api_port),
    ):
        if port_open(port):
            errors.print(f"[red]port {port} ({name}) is taken: choose another with --{name.lower()}-port")
            return 2

    # TLS and authentication on, as in production: the backend and the simulated fleet each get
    # a user of their own role; passwords stay in files under the broker folder (0600).
    bdir = BrokerDir(data_dir / "broker")
    bdir.ensure(mqtt_cert_port, mqtt_port)
    backend_password = bdir.ensure_user("moby-up-backend", Role.BACKEND)
    fleet_user = f"moby-up-fleet-{factory}"
    fleet_password = bdir.ensure_user(fleet_user, Role.GATEWAY, factory=factory)
    mqtt = f"127.0.0.1:{mqtt_port}"

    started: list[ManagedProcess] = []
    try:
        with console.status("starting Mosquitto…"):
            broker = SecureMosquitto(bdir)
            started.append(broker.start())
        console.print(
            f"[green]✓[/] Mosquitto   mqtts://{mqtt} (password), mqtts://127.0.0.1:{mqtt_cert_port} "
            f"(client certificates)  (setup in {bdir.dir})"
        )
        with console.status("starting InfluxDB…"):
            influx = Influxd(data_dir / "influxdb", influx_port, free_port())
            started.append(influx.start(timeout_s=60))
        console.print(f"[green]✓[/] InfluxDB    {influx.url}  (state in {influx.directory})")
        env = {
            "MOBY_MQTT_URL": f"mqtts://moby-up-backend:{backend_password}@{mqtt}",
            "MOBY_MQTT_CA_FILE": str(bdir.ca_cert),
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
            env={
                **env,
                "MOBY_MQTT_URL": f"mqtts://{fleet_user}:{fleet_password}@{mqtt}",
                # its store-and-forward buffer, apart from the backend's queue
                "MOBY_DATA_DIR": str(data_dir / "simulate"),
            },
        )
        started.append(simulator.start())
        console.print(f"[green]✓[/] Simulator   {sensors} sensors × {rate}/s in factory {factory!r}")
        console.print(
            "\n[bold]Where to look[/]\n"
            f"  console      http://127.0.0.1:{api_port}/  (fleet table and live charts)\n"
            f"  sensors      http://127.0.0.1:{api_port}/api/v1/sensors\n"
            f"  metrics      http://127.0.0.1:{api_port}/metrics\n"
            f"  dead letters http://127.0.0.1:{api_port}/api/v1/dlq\n"
            f"  InfluxDB     influx -port {influx_port} -database moby "
            "-execute 'SHOW MEASUREMENTS'\n"
            f"  live MQTT    mosquitto_sub -h 127.0.0.1 -p {mqtt_port} --cafile {bdir.ca_cert} "
            f"-u moby-up-backend -P \"$(cat {bdir.password_path('moby-up-backend')})\" -t 'moby/#' -v\n"
            f"  a sensor     {moby} broker add-sensor SENSOR_ID --factory {factory} --dir {bdir.dir}\n"
            f"               then: {moby} edge --config {bdir.dir}/sensors/SENSOR_ID/agent.toml\n"
            f"  Grafana      {moby} grafana export {data_dir / 'grafana'} "
            f"--api-url http://127.0.0.1:{api_port} --influx-url {influx.url}\n"
            "               then mount it as Grafana's provisioning folder (docs/GRAFANA.md)\n"
            "\nCtrl-C stops everything."
        )
        while not stop.wait(1.0):
            dead = [p for p in started if not p.running]
            if dead:
                errors.print(f"[red]{dead[0].name} exited; see {dead[0].log_path}:", markup=True)
                errors.print(dead[0].tail(), markup=False, highlight=False)
                return 1
        return 0
    finally:
        console.print("\nstopping…")
        for proc in reversed(started):
            code = proc.stop()
            console.print(f"  {proc.name} stopped ({code})")
