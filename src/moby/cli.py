"""The ``moby`` command."""

from __future__ import annotations

import asyncio
import os
import ssl
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from moby import __version__
from moby.broker.commands import broker_app

app = typer.Typer(
    help="MOBY: industrial sensor data — MQTT → validated, durable, batched → InfluxDB.",
    no_args_is_help=True,
)
schema_app = typer.Typer(help="The contract's JSON Schemas.", no_args_is_help=True)
app.add_typer(schema_app, name="schema")
app.add_typer(broker_app, name="broker")
console = Console(stderr=True)


def _loop_policy() -> None:
    try:
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    except ImportError:  # pragma: no cover - uvloop is a dependency, but it is only a speed-up
        pass


@app.command()
def version() -> None:
    """Print the version."""
    print(__version__)


@app.command()
def serve() -> None:
    """Run the backend (MQTT ingest + HTTP API), configured by MOBY_* environment variables."""
    import uvicorn

    from moby.api.app import create_app
    from moby.api.server import GracefulServer
    from moby.config import Settings
    from moby.logs import configure
    from moby.service import Engine

    settings = Settings()
    configure(settings.log_level, settings.log_format)
    _loop_policy()
    config = uvicorn.Config(
        create_app(Engine(settings)),
        host=settings.api_host,
        port=settings.api_port,
        log_level="warning",
        access_log=False,
        loop="uvloop",
        timeout_graceful_shutdown=30,
    )
    asyncio.run(GracefulServer(config).serve())


@app.command()
def proxy(
    port: Annotated[int | None, typer.Option(help="default: MOBY_PROXY_PORT, else 8087")] = None,
) -> None:
    """Run only the read-only, caching InfluxQL proxy (no ingest), e.g. several behind a balancer.

    It serves InfluxDB's own paths (/ping, /query) and /metrics, configured like `moby serve`.
    """
    import uvicorn

    from moby.api.server import GracefulServer
    from moby.config import Settings
    from moby.logs import configure
    from moby.metrics import Metrics
    from moby.query.proxy import proxy_from_settings

    settings = Settings()
    configure(settings.log_level, settings.log_format)
    _loop_policy()
    server = proxy_from_settings(settings, Metrics())
    config = uvicorn.Config(
        server.app(with_metrics=True),
        host=settings.proxy_host,
        port=port or settings.proxy_port or 8087,
        log_level="warning",
        access_log=False,
        loop="uvloop",
    )
    asyncio.run(GracefulServer(config).serve())


rollup_app = typer.Typer(help="The rollup retention policies.", no_args_is_help=True)
app.add_typer(rollup_app, name="rollup")


@rollup_app.command("backfill")
def rollup_backfill(
    since: Annotated[str, typer.Option(help="how far back, an InfluxQL duration such as 36h or 7d")] = "24h",
) -> None:
    """Recompute rollup_1m and rollup_1h from raw over the last SINCE (late edge backfill)."""
    import time

    from moby.config import Settings
    from moby.query.routing import retention_ms
    from moby.store.bootstrap import Bootstrap
    from moby.store.influx import InfluxClient

    s = Settings()
    client = InfluxClient(
        s.influx_url,
        s.influx_db,
        username=s.influx_username,
        password=s.influx_password.get_secret_value() if s.influx_password else None,
        timeout_s=300,
    )

    async def main() -> int:
        try:
            now_ms = int(time.time() * 1000)
            return await Bootstrap(client).backfill(now_ms - retention_ms(since), now_ms)
        finally:
            await client.close()

    console.print(f"ran {asyncio.run(main())} rollup statements")


@app.command()
def up(
    data_dir: Annotated[Path, typer.Option(envvar="MOBY_DATA_DIR", help="state of every part")] = Path(
        "./var"
    ),
    mqtt_port: Annotated[int, typer.Option(help="the broker's TLS port for passwords")] = 18830,
    mqtt_cert_port: Annotated[
        int, typer.Option(help="the broker's TLS port for client certificates")
    ] = 18831,
    influx_port: Annotated[int, typer.Option(help="InfluxDB's HTTP port")] = 18086,
    api_port: Annotated[int, typer.Option(envvar="MOBY_API_PORT", help="the backend's HTTP port")] = 8000,
    sensors: Annotated[int, typer.Option(help="simulated sensors")] = 40,
    rate: Annotated[float, typer.Option(help="readings per second per sensor")] = 1.0,
    factory: Annotated[str, typer.Option(help="factory id of the simulated fleet")] = "demo",
) -> None:
    """Run the whole pipeline locally: Mosquitto, InfluxDB, the backend and a simulated fleet."""
    from moby.up import run_up

    raise typer.Exit(
        run_up(
            data_dir,
            mqtt_port=mqtt_port,
            mqtt_cert_port=mqtt_cert_port,
            influx_port=influx_port,
            api_port=api_port,
            sensors=sensors,
            rate=rate,
            factory=factory,
            console=console,
        )
    )


@app.command()
def simulate(
    factory: Annotated[str, typer.Option(help="factory id")] = "demo",
    sensors: Annotated[int, typer.Option(help="number of sensors")] = 40,
    rate: Annotated[float, typer.Option(help="readings per second per sensor")] = 1.0,
    duration: Annotated[float | None, typer.Option(help="seconds to run (default: until stopped)")] = None,
) -> None:
    """Publish a simulated fleet of sensors to MOBY_MQTT_URL."""
    import signal

    from moby.edge.simulate import run_fleet
    from moby.logs import configure

    configure(os.environ.get("MOBY_LOG_LEVEL", "info"))
    _loop_policy()
    url = os.environ.get("MOBY_MQTT_URL", "mqtt://127.0.0.1:1883")
    ssl_context = _tls_from_env() if url.startswith(("mqtts:", "ssl:")) else None

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await run_fleet(url, factory, sensors, rate, duration_s=duration, stop=stop, ssl_context=ssl_context)

    asyncio.run(main())


def _tls_from_env() -> ssl.SSLContext:
    """TLS for mqtts:// from MOBY_MQTT_CA_FILE / _CERT_FILE / _KEY_FILE (as `moby serve` reads them)."""
    from moby.net import tls_context

    def path(name: str) -> Path | None:
        value = os.environ.get(f"MOBY_MQTT_{name}_FILE")
        return Path(value) if value else None

    return tls_context(path("CA"), path("CERT"), path("KEY"))


@app.command()
def edge(
    config: Annotated[Path, typer.Option("--config", "-c", help="the agent's TOML configuration")],
) -> None:
    """Run the edge agent: sample sensors, buffer on disk, publish to the broker(s)."""
    import signal

    from moby.edge.agent import AgentConfig, EdgeAgent
    from moby.logs import configure

    configure(os.environ.get("MOBY_LOG_LEVEL", "info"))
    _loop_policy()
    agent = EdgeAgent(AgentConfig.load(config))

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await agent.run(stop)

    asyncio.run(main())


@schema_app.command("export")
def schema_export(
    directory: Annotated[Path, typer.Argument(help="where to write the *.schema.json files")] = Path(
        "docs/schema"
    ),
) -> None:
    """Write the JSON Schemas of the contract's payloads."""
    from moby.schema.jsonschema import write_schemas

    for path in write_schemas(directory):
        console.print(f"wrote {path}")
