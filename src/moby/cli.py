"""The ``moby`` command.

Every subcommand runs inside :class:`MobyGroup`: it warns about ``MOBY_*`` variables that no
part of MOBY reads, and turns a :class:`~moby.configerror.ConfigError` raised anywhere below it
into one line per problem on stderr and exit code 2 (the traceback only at
``MOBY_LOG_LEVEL=debug``). Results go to stdout, problems to stderr (:mod:`moby.terminal`).
"""

from __future__ import annotations

import asyncio
import os
import traceback
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from typer.core import TyperCommand, TyperGroup

from moby import __version__
from moby.configerror import ConfigError
from moby.terminal import err, problem, say
from moby.tokencli import token_app

if TYPE_CHECKING:
    from moby.config import Loaded
    from moby.edge.agent import AgentConfig

CONFIG_ERROR_EXIT = 2


def report_config_error(exc: ConfigError) -> None:
    if os.environ.get("MOBY_LOG_LEVEL", "").lower() == "debug":
        traceback.print_exception(exc)
    for line in exc.warnings:
        problem(f"warning: {line}")
    for line in exc.problems:
        problem(f"error: {line}")


class MobyGroup(TyperGroup):
    """The root command: one place where configuration mistakes become lines and exit 2."""

    def invoke(self, ctx: Any) -> Any:
        from moby.config import unknown_variables

        for line in unknown_variables(os.environ):
            problem(f"warning: {line}")
        try:
            return super().invoke(ctx)
        except ConfigError as exc:
            report_config_error(exc)
            raise typer.Exit(CONFIG_ERROR_EXIT) from None
        except ImportError as exc:
            missing = missing_server_package(exc)
            if missing is None:
                raise
            report_config_error(missing)
            raise typer.Exit(CONFIG_ERROR_EXIT) from None


class SettingsHelp(TyperCommand):
    """A command configured by Settings: its --help lists every variable, grouped, with defaults."""

    def format_help(self, ctx: Any, formatter: Any) -> None:
        super().format_help(ctx, formatter)
        from moby.config import CONFIG_VARIABLE, OTHER_VARIABLES, settings_reference
        from moby.terminal import out

        groups = settings_reference()
        rows = [v for _, variables in groups for v in variables]
        name_w = max(len(v.name) for v in rows)
        default_w = max(len(v.default) for v in rows)
        console = out()
        where = f"or lower-case keys in the file named by {CONFIG_VARIABLE}"
        console.print(f" [bold]Environment variables[/] ({where})")
        console.print(f"   {'variable':<{name_w}}  {'default':<{default_w}}  allowed", style="dim")
        for title, variables in groups:
            console.print(f" [bold]{title}[/]", highlight=False)
            for v in variables:
                meaning = f" — {v.meaning}" if v.meaning else ""
                line = f"   {v.name:<{name_w}}  {v.default:<{default_w}}  {v.allowed}{meaning}"
                console.print(line, markup=False, highlight=False)
        console.print(f" {CONFIG_VARIABLE}: {OTHER_VARIABLES[CONFIG_VARIABLE]}.", markup=False)
        console.print(" Every variable is described in docs/CONFIGURATION.md.", markup=False)


def _settings() -> Loaded:
    """The settings, their warnings printed; a mistake raises ConfigError (MobyGroup reports it)."""
    from moby.config import load_settings

    loaded = load_settings()
    for line in loaded.warnings:
        problem(f"warning: {line}")
    return loaded


# Packages only the backend's install brings (pip install 'moby[server]'); a lean edge install
# (pip install 'moby[edge]') runs every command that does not need them.
SERVER_PACKAGES = frozenset(
    {
        "fastapi",
        "fastapi_offline",
        "uvicorn",
        "aiohttp",
        "httpx",
        "prometheus_client",
        "cryptography",
        "yaml",
        "grafana_foundation_sdk",
    }
)


def missing_server_package(exc: ImportError) -> ConfigError | None:
    """An import of a backend package on a lean install, as one line saying what to install."""
    name = (exc.name or "").split(".")[0]
    if name not in SERVER_PACKAGES:
        return None
    return ConfigError(
        [f"this command needs the package {name!r}, not installed here: pip install 'moby[server]'"]
    )


app = typer.Typer(
    cls=MobyGroup,
    help="MOBY: industrial sensor data — MQTT → validated, durable, batched → InfluxDB.",
    no_args_is_help=True,
)
schema_app = typer.Typer(help="The contract's JSON Schemas.", no_args_is_help=True)
app.add_typer(schema_app, name="schema")
try:
    from moby.broker.commands import broker_app

    app.add_typer(broker_app, name="broker")
except ImportError as _missing:  # a lean edge install: no cryptography
    _broker_missing = missing_server_package(_missing)
    if _broker_missing is None:
        raise

    @app.command(
        "broker",
        help="(not installed here: pip install 'moby[server]')",
        context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    )
    def broker_unavailable() -> None:
        assert _broker_missing is not None
        raise _broker_missing


grafana_app = typer.Typer(
    help="Grafana provisioning: data sources, dashboards, alert rules.", no_args_is_help=True
)
app.add_typer(grafana_app, name="grafana")
app.add_typer(token_app, name="token")


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


@app.command(cls=SettingsHelp)
def serve() -> None:
    """Run the backend (MQTT ingest + HTTP API), configured by MOBY_* environment variables."""
    import uvicorn

    from moby.access import AccessConfigError
    from moby.api.app import create_app
    from moby.api.server import GracefulServer
    from moby.config import check_data_dir
    from moby.logs import configure
    from moby.service import Engine

    loaded = _settings()
    settings = loaded.settings
    conflict = settings.client_id_conflict()
    if conflict:
        raise ConfigError([conflict])
    check_data_dir(loaded)
    configure(settings.log_level, settings.log_format)
    _loop_policy()
    engine = Engine(settings)
    try:
        api = create_app(engine)
    except AccessConfigError as exc:
        raise ConfigError([str(exc)]) from None
    config = uvicorn.Config(
        api,
        host=settings.api_host,
        port=settings.api_port,
        log_level="warning",
        access_log=False,
        loop="uvloop",
        timeout_graceful_shutdown=30,
    )
    asyncio.run(GracefulServer(config).serve())  # a failed start exits 3 inside uvicorn
    if engine.stop_failed:  # a shutdown step or a task failed (logged): not a clean stop
        raise typer.Exit(1)


@app.command(cls=SettingsHelp)
def proxy(
    port: Annotated[int | None, typer.Option(help="default: MOBY_PROXY_PORT, else 8087")] = None,
) -> None:
    """Run only the read-only, caching InfluxQL proxy (no ingest), e.g. several behind a balancer.

    It serves InfluxDB's own paths (/ping, /query) and /metrics, configured like `moby serve`.
    """
    import uvicorn

    from moby.access import AccessConfigError, AccessPolicy
    from moby.api.server import GracefulServer
    from moby.logs import configure
    from moby.metrics import Metrics
    from moby.query.proxy import proxy_from_settings
    from moby.webguard import AllowedHosts, WebGuard

    settings = _settings().settings
    configure(settings.log_level, settings.log_format)
    _loop_policy()
    try:
        # Tokens, Host allow-list and cross-site refusal as on `moby serve` (docs/SECURITY.md).
        access = AccessPolicy.from_settings(settings, [settings.proxy_host])
        hosts = AllowedHosts.build(settings.api_allowed_hosts, [settings.proxy_host])
    except AccessConfigError as exc:
        raise ConfigError([str(exc)]) from None
    access.startup_report()
    server = proxy_from_settings(settings, Metrics(), access=access)
    config = uvicorn.Config(
        WebGuard(server.app(with_metrics=True), hosts=hosts, proxy_prefixes=("/",)),
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

    from moby.query.routing import retention_ms
    from moby.store.bootstrap import Bootstrap
    from moby.store.influx import InfluxClient

    s = _settings().settings
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

    say(f"ran {asyncio.run(main())} rollup statements")


@app.command()
def up(
    data_dir: Annotated[
        Path | None, typer.Option(help="state of every part [default: MOBY_DATA_DIR, else ./var]")
    ] = None,
    mqtt_port: Annotated[int, typer.Option(help="the broker's TLS port for passwords")] = 18830,
    mqtt_cert_port: Annotated[
        int, typer.Option(help="the broker's TLS port for client certificates")
    ] = 18831,
    influx_port: Annotated[int, typer.Option(help="InfluxDB's HTTP port")] = 18086,
    api_port: Annotated[
        int | None, typer.Option(help="the backend's HTTP port [default: MOBY_API_PORT, else 8000]")
    ] = None,
    sensors: Annotated[int, typer.Option(help="simulated sensors")] = 40,
    rate: Annotated[float, typer.Option(help="readings per second per sensor")] = 1.0,
    factory: Annotated[str, typer.Option(help="factory id of the simulated fleet")] = "demo",
) -> None:
    """Run the whole pipeline locally: Mosquitto, InfluxDB, the backend and a simulated fleet."""
    from moby.config import check_state_path
    from moby.terminal import invocation, out
    from moby.up import run_up

    # The backend and the simulator it starts read the same MOBY_* variables: check them now.
    loaded = _settings()
    if data_dir is None:
        data_dir = loaded.settings.data_dir
        check_state_path(loaded.origins.name(("data_dir",)), data_dir)
    else:
        check_state_path("--data-dir", data_dir)
    raise typer.Exit(
        run_up(
            data_dir,
            mqtt_port=mqtt_port,
            mqtt_cert_port=mqtt_cert_port,
            influx_port=influx_port,
            api_port=api_port if api_port is not None else loaded.settings.api_port,
            sensors=sensors,
            rate=rate,
            factory=factory,
            console=out(),
            errors=err(),
            moby=invocation(),
        )
    )


FAULTS = "Fault injection"


@app.command()
def simulate(
    factory: Annotated[str, typer.Option(help="factory id")] = "demo",
    sensors: Annotated[int, typer.Option(help="number of sensors", min=1)] = 40,
    rate: Annotated[
        float, typer.Option(help="readings/s per sensor (0: only send what is buffered)", min=0)
    ] = 1.0,
    duration: Annotated[float | None, typer.Option(help="seconds to run (default: until stopped)")] = None,
    per_connection: Annotated[int, typer.Option(help="sensors per MQTT connection (gateway)", min=1)] = 500,
    health_every: Annotated[float, typer.Option(help="seconds between health reports", min=0.1)] = 10.0,
    replay_rate: Annotated[float, typer.Option(help="backlog readings/s replayed per connection")] = 5000.0,
    drain_timeout: Annotated[
        float, typer.Option(help="on stop, seconds to wait for the buffer to drain")
    ] = 30.0,
    buffer_max_mb: Annotated[int, typer.Option(help="buffer bound in MiB", min=1)] = 512,
    drop_policy: Annotated[str, typer.Option(help="when full: drop_oldest or refuse_newest")] = "drop_oldest",
    seed: Annotated[int, typer.Option(help="seed of the drivers and of who gets which fault")] = 1,
    vib_refresh: Annotated[
        int, typer.Option(help="vibration features recomputed every N readings", min=1)
    ] = 10,
    cut_every: Annotated[
        float, typer.Option(help="a network cut every N s (0: none)", rich_help_panel=FAULTS)
    ] = 0,
    cut_for: Annotated[float, typer.Option(help="length of each network cut, s", rich_help_panel=FAULTS)] = 0,
    flatline: Annotated[
        float, typer.Option(help="stuck sensors: fraction (<1) or count", rich_help_panel=FAULTS)
    ] = 0,
    spike: Annotated[
        float, typer.Option(help="spiking sensors: fraction or count", rich_help_panel=FAULTS)
    ] = 0,
    spike_prob: Annotated[
        float,
        typer.Option(help="chance that a spiking sensor's reading spikes (×10)", rich_help_panel=FAULTS),
    ] = 0.05,
    out_of_range: Annotated[
        float, typer.Option(help="sensors reporting -9999: fraction or count", rich_help_panel=FAULTS)
    ] = 0,
    dropout: Annotated[
        float, typer.Option(help="sensors that miss readings: fraction or count", rich_help_panel=FAULTS)
    ] = 0,
    dropout_prob: Annotated[
        float, typer.Option(help="chance that a dropout sensor misses a reading", rich_help_panel=FAULTS)
    ] = 0.5,
    skew: Annotated[float, typer.Option(help="clock skew in seconds (±)", rich_help_panel=FAULTS)] = 0,
    skew_sensors: Annotated[
        float, typer.Option(help="sensors with the skew: fraction or count", rich_help_panel=FAULTS)
    ] = 0.1,
    malformed_rate: Annotated[
        float, typer.Option(help="deliberately bad messages per second", rich_help_panel=FAULTS)
    ] = 0,
) -> None:
    """A simulated fleet on the edge buffer, publishing to MOBY_MQTT_URL (buffer in MOBY_DATA_DIR).

    SIGINT/SIGTERM (or --duration) stop sampling, wait for the buffer to drain (at most
    --drain-timeout s), publish every sensor's offline status and exit.
    """
    import signal

    from moby.config import check_state_path
    from moby.edge.buffer import DropPolicy
    from moby.edge.faults import FaultPlan
    from moby.edge.simulate import SimConfig, Simulator, buffer_path
    from moby.logs import configure
    from moby.net import tls_context

    loaded = _settings()
    settings = loaded.settings
    configure(settings.log_level, settings.log_format)
    _loop_policy()
    try:
        plan = FaultPlan(
            flatline=flatline,
            spike=spike,
            spike_prob=spike_prob,
            out_of_range=out_of_range,
            dropout=dropout,
            dropout_prob=dropout_prob,
            skew_s=skew,
            skew=skew_sensors,
            malformed_rate=malformed_rate,
            cut_every_s=cut_every,
            cut_for_s=cut_for,
        )
        cfg = SimConfig(
            factory_id=factory,
            sensors=sensors,
            rate=rate,
            brokers=(settings.mqtt_url,),
            data_dir=settings.data_dir,
            ssl_context=(
                tls_context(settings.mqtt_ca_file, settings.mqtt_cert_file, settings.mqtt_key_file)
                if settings.mqtt_url.startswith(("mqtts:", "ssl:"))
                else None
            ),
            per_connection=per_connection,
            health_every_s=health_every,
            replay_rate=replay_rate,
            drain_timeout_s=drain_timeout,
            buffer_max_bytes=buffer_max_mb * 1024 * 1024,
            drop_policy=DropPolicy(drop_policy),
            seed=seed,
            vib_refresh=vib_refresh,
            faults=plan,
        )
    except ValueError as exc:
        problem(f"error: {exc}")
        raise typer.Exit(2) from None
    check_state_path(
        loaded.origins.name(("data_dir",)), cfg.data_dir, database=buffer_path(cfg.data_dir, factory)
    )

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await Simulator(cfg).run(stop, duration)

    asyncio.run(main())


@app.command()
def edge(
    config: Annotated[Path, typer.Option("--config", "-c", help="the agent's TOML configuration")],
) -> None:
    """Run the edge agent: sample sensors, buffer on disk, publish to the broker(s)."""
    import signal

    from moby.config import check_state_path
    from moby.edge.agent import EdgeAgent
    from moby.edge.devices.config import startup_check
    from moby.logs import configure

    loaded = _settings()
    cfg = load_agent_config(config)
    check_state_path(f"{config}: buffer_path", cfg.buffer_path, cfg.buffer_path.parent, cfg.buffer_path)
    configure(loaded.settings.log_level, loaded.settings.log_format)
    _loop_policy()
    agent = EdgeAgent(cfg)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        # real devices are reached once first: a wrong register map or node stops here, one line each
        sensors = [(i, link.cfg.sensor_id, link.driver) for i, link in enumerate(agent.links)]
        await startup_check(sensors, str(config), cfg.startup_error_behavior)
        await agent.run(stop)

    asyncio.run(main())


def load_agent_config(path: Path) -> AgentConfig:
    """An edge agent's TOML file, or a ConfigError naming the file, the key and the problem."""
    import tomllib

    from pydantic import ValidationError

    from moby.configerror import toml_problem
    from moby.edge.agent import AgentConfig
    from moby.edge.devices.config import config_problems

    try:
        return AgentConfig.load(path)
    except FileNotFoundError:
        raise ConfigError([f"--config {str(path)!r}: no such file"]) from None
    except (OSError, UnicodeDecodeError) as exc:
        why = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise ConfigError([f"--config {str(path)!r}: cannot read it ({why})"]) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([toml_problem(path, exc)]) from None
    except ValidationError as exc:
        raise ConfigError(config_problems(exc, AgentConfig, str(path))) from None


@schema_app.command("export")
def schema_export(
    directory: Annotated[Path, typer.Argument(help="where to write the *.schema.json files")] = Path(
        "docs/schema"
    ),
) -> None:
    """Write the JSON Schemas of the contract's payloads."""
    from moby.schema.jsonschema import write_schemas

    for path in write_schemas(directory):
        say(f"wrote {path}")


@grafana_app.command("export")
def grafana_export(
    directory: Annotated[Path, typer.Argument(help="the provisioning folder to write (mount it in Grafana)")],
    api_url: Annotated[
        str, typer.Option(help="the MOBY backend as Grafana reaches it; the data source is its /influx")
    ] = "http://127.0.0.1:8000",
    influx_url: Annotated[str, typer.Option(help="InfluxDB as Grafana reaches it (second data source)")] = (
        "http://127.0.0.1:8086"
    ),
    database: Annotated[str, typer.Option(envvar="MOBY_INFLUX_DB", help="InfluxDB database")] = "moby",
    influx_user: Annotated[
        str | None,
        typer.Option(help="InfluxDB user, when auth is on (password: $MOBY_GRAFANA_INFLUX_PASSWORD)"),
    ] = None,
    api_token_env: Annotated[
        str,
        typer.Option(
            help="Grafana's environment variable holding a viewer API token for the MOBY data source "
            "(moby token create --role viewer); written as $NAME, never the token; '' for none"
        ),
    ] = "MOBY_GRAFANA_TOKEN",
    machine_class: Annotated[
        str, typer.Option(help="ISO 10816 machine class of the zone thresholds and alerts")
    ] = "class_ii",
    grafana_dir: Annotated[
        str, typer.Option(help="where Grafana sees DIRECTORY (the dashboard provider's path)")
    ] = "/etc/grafana/provisioning",
    alert_webhook_url: Annotated[
        str | None,
        typer.Option(
            envvar="MOBY_ALERT_WEBHOOK_URL",
            help="alerts are POSTed (JSON) to this URL; '$VAR' leaves it to Grafana's environment",
        ),
    ] = None,
    alert_email: Annotated[
        list[str] | None,
        typer.Option(
            envvar="MOBY_ALERT_EMAIL",
            help="alerts are e-mailed here (repeat, or separate by commas; needs Grafana's SMTP set up)",
        ),
    ] = None,
) -> None:
    """Write Grafana provisioning: data sources, dashboard provider + dashboards, alert rules and
    the contact point + notification policy they notify."""
    from moby.dashboards.alerts import AlertSettings
    from moby.dashboards.export import ExportSettings, export
    from moby.dashboards.notify import Contacts, email_addresses, webhook_url
    from moby.edge.features import MachineClass

    try:
        mc = MachineClass(machine_class)
    except ValueError:
        choices = ", ".join(m.value for m in MachineClass)
        raise typer.BadParameter(f"choose one of {choices}", param_hint="--machine-class") from None
    try:
        webhook = webhook_url(alert_webhook_url) if alert_webhook_url is not None else None
    except ValueError as exc:
        hint = "--alert-webhook-url / MOBY_ALERT_WEBHOOK_URL"
        raise typer.BadParameter(str(exc), param_hint=hint) from None
    try:
        emails = email_addresses(alert_email or [])
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--alert-email / MOBY_ALERT_EMAIL") from None
    contacts = Contacts(webhook_url=webhook, emails=emails)
    settings = ExportSettings(
        api_url=api_url,
        influx_url=influx_url,
        database=database,
        influx_user=influx_user,
        api_token_env=api_token_env,
        grafana_dir=grafana_dir,
        alerts=AlertSettings(machine_class=mc),
        contacts=contacts,
    )
    try:
        written = export(directory, settings)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--api-token-env") from None
    for path in written:
        say(f"wrote {path}")
    if contacts.configured:
        say(f"alerts notify the contact point MOBY: {contacts.describe()}")
    else:
        problem(
            "warning: no alert contact configured: the alert rules will fire in Grafana "
            "but notify no one. Pass --alert-webhook-url URL and/or --alert-email ADDRESS "
            "(or set MOBY_ALERT_WEBHOOK_URL / MOBY_ALERT_EMAIL) to write alerting/notifications.yaml."
        )
