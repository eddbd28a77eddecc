"""``moby up``: the whole pipeline on one machine, each part a child process under the data dir."""

from __future__ import annotations

import signal
import sys
import threading
from pathlib import Path

from pydantic import ValidationError
from rich.console import Console

from moby import tokens
from moby.access import AccessConfigError, tokens_required
from moby.broker.acl import Role
from moby.broker.pki import write_secret
from moby.broker.setup import BrokerDir, SecureMosquitto
from moby.config import Settings
from moby.edge.simulate import SimConfig
from moby.procs import ManagedProcess, free_port, http_ready, port_open
from moby.store.influxd import READER, InfluxCredentials, Influxd, InfluxSetupError, create_first_admin


def credentials_dir(data_dir: Path) -> Path:
    return data_dir / "influxdb" / "credentials"


UP_TOKEN_FILE = "moby-up-viewer.token"


def viewer_token(data_dir: Path, backend_dir: Path) -> Path | None:
    """When the backend will require API tokens (MOBY_API_AUTH, MOBY_API_HOST in the environment
    ``moby up`` passes on): a viewer token for the console and Grafana, kept in a 0600 file and
    reused while it is valid; its path (never the token) goes into the hints. None when the API
    is open (loopback, the default). AccessConfigError: the settings are refused."""
    try:
        settings = Settings(data_dir=backend_dir)
    except ValidationError:
        return None  # the backend will say what is wrong with its settings
    if not tokens_required(settings.api_auth, [settings.api_host]):
        return None
    path = data_dir / UP_TOKEN_FILE
    store = tokens.TokenStore(tokens.store_path(backend_dir, settings.api_tokens_file))
    try:
        if store.verify(path.read_text().strip()) is not None:
            return path
    except FileNotFoundError:
        pass
    _, token = store.create(tokens.Role.VIEWER, "moby-up")
    write_secret(path, token.encode() + b"\n")
    return path


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
    # The broker makes each username the client id: the simulator's gateway connections (one per
    # 500 sensors) log in as fleet_user, fleet_user.1, … — one identity each, one password.
    connections = -(-sensors // SimConfig.per_connection)
    fleet_password = bdir.ensure_user(fleet_user, Role.GATEWAY, factory=factory, connections=connections)
    # for people watching the stream: with the backend's user they would take its session over
    bdir.ensure_user("moby-up-viewer", Role.READONLY)
    mqtt = f"127.0.0.1:{mqtt_port}"
    try:
        token_file = viewer_token(data_dir, data_dir / "backend")
    except AccessConfigError as exc:
        errors.print(f"error: {exc}", markup=False, highlight=False)
        return 2

    started: list[ManagedProcess] = []
    try:
        with console.status("starting Mosquitto…"):
            broker = SecureMosquitto(bdir)
            started.append(broker.start())
        console.print(
            f"[green]✓[/] Mosquitto   mqtts://{mqtt} (password), mqtts://127.0.0.1:{mqtt_cert_port} "
            f"(client certificates)  (setup in {bdir.dir})"
        )
        # InfluxDB with auth-enabled, as in production: an administrator used only by the
        # bootstrap, the backend's writer, and a reader holding only READ for the query proxy.
        # Their passwords are generated into 0600 files and handed over in the environment.
        credentials = InfluxCredentials.ensure(credentials_dir(data_dir))
        with console.status("starting InfluxDB…"):
            influx = Influxd(data_dir / "influxdb", influx_port, free_port(), auth=True)
            started.append(influx.start(timeout_s=60))
            try:
                create_first_admin(influx.url, credentials.admin)
            except InfluxSetupError as exc:
                console.print(f"[red]{exc}")
                return 1
        console.print(
            f"[green]✓[/] InfluxDB    {influx.url}  (auth on; state in {influx.directory}, "
            f"passwords in {credentials_dir(data_dir)})"
        )
        env = {
            "MOBY_MQTT_URL": f"mqtts://moby-up-backend:{backend_password}@{mqtt}",
            "MOBY_MQTT_CA_FILE": str(bdir.ca_cert),
            "MOBY_INFLUX_URL": influx.url,
            **credentials.env(),
            "MOBY_DATA_DIR": str(data_dir / "backend"),
            "MOBY_API_PORT": str(api_port),
            # its user: the broker makes the username the client id (and a MOBY_MQTT_CLIENT_ID
            # left in the shell must not reach `moby serve`, which would refuse it)
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
                **{k: v for k, v in env.items() if "INFLUX" not in k},  # the fleet needs no database
                "MOBY_MQTT_URL": f"mqtts://{fleet_user}:{fleet_password}@{mqtt}",
                # its store-and-forward buffer, apart from the backend's queue
                "MOBY_DATA_DIR": str(data_dir / "simulate"),
            },
        )
        started.append(simulator.start())
        console.print(f"[green]✓[/] Simulator   {sensors} sensors × {rate}/s in factory {factory!r}")
        auth = (
            f"  API token    the backend requires tokens: a viewer token is in {token_file} (paste it\n"
            f'               into the console; curl -H "Authorization: Bearer $(cat {token_file})" …)\n'
            if token_file
            else ""
        )
        grafana_env = (
            f'               and start Grafana with MOBY_GRAFANA_TOKEN="$(cat {token_file})"\n'
            if token_file
            else ""
        )
        console.print(
            "\n[bold]Where to look[/]\n"
            + auth
            + f"  console      http://127.0.0.1:{api_port}/  (fleet table and live charts)\n"
            f"  sensors      http://127.0.0.1:{api_port}/api/v1/sensors\n"
            f"  metrics      http://127.0.0.1:{api_port}/metrics\n"
            f"  dead letters http://127.0.0.1:{api_port}/api/v1/dlq\n"
            f"  InfluxDB     influx -port {influx_port} -database moby -username {READER} "
            f'-password "$(cat {credentials_dir(data_dir) / (READER + ".password")})" '
            "-execute 'SHOW MEASUREMENTS'\n"
            f"  live MQTT    mosquitto_sub -h 127.0.0.1 -p {mqtt_port} --cafile {bdir.ca_cert} "
            f"-u moby-up-viewer -P \"$(cat {bdir.password_path('moby-up-viewer')})\" -t 'moby/#' -v\n"
            f"  a sensor     {moby} broker add-sensor SENSOR_ID --factory {factory} --dir {bdir.dir}\n"
            f"               then: {moby} edge --config {bdir.dir}/sensors/SENSOR_ID/agent.toml\n"
            f"  Grafana      {moby} grafana export {data_dir / 'grafana'} "
            f"--api-url http://127.0.0.1:{api_port} --influx-url {influx.url} --influx-user {READER}\n"
            f"               (Grafana's password: MOBY_GRAFANA_INFLUX_PASSWORD=\"$(cat "
            f'{credentials_dir(data_dir) / (READER + ".password")})")\n'
            "               then mount it as Grafana's provisioning folder (docs/GRAFANA.md)\n"
            + grafana_env
            + "\nCtrl-C stops everything."
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
