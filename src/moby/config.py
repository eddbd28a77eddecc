"""Configuration of ``moby serve`` from ``MOBY_*`` environment variables (and an optional file).

The first six variables are the public contract; the rest are tuning knobs with defaults that
suit one backend process on a small machine. A TOML file named by ``MOBY_CONFIG`` may hold the
same settings (lower-case names without the prefix); environment variables win over it.

:func:`load_settings` is how every command reads them: a mistake becomes a
:class:`~moby.configerror.ConfigError` whose lines name the variable (or the file's key) as the
user wrote it. The variable names, what each allows and its default all come from
:class:`Settings` itself, so a field added there gets the same treatment with no other change.
"""

from __future__ import annotations

import inspect
import os
import re
import socket
import sqlite3
import tempfile
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import (
    AliasChoices,
    BeforeValidator,
    Field,
    FilePath,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
    TomlConfigSettingsSource,
)

from moby.configerror import (
    ConfigError,
    Loc,
    default_of,
    describe_allowed,
    did_you_mean,
    field_schemas,
    problem_lines,
    redact_url,
    show_default,
    show_value,
    toml_key,
    toml_problem,
)
from moby.net import MqttEndpoint

__all__ = ["ConfigError", "Loaded", "Settings", "load_settings", "redact_url"]

GiB = 1024**3
LogLevel = Literal["debug", "info", "warning", "error"]
MiB = 1024**2
# The sensor types the contract names; MOBY_SENSOR_TYPES replaces the list.
DEFAULT_SENSOR_TYPES = ("vibration", "noise", "temperature", "humidity")
_SENSOR_TYPE = re.compile(r"^[a-z][a-z0-9_]{0,31}$")


def _lower(value: object) -> object:
    return value.lower() if isinstance(value, str) else value


ENV_PREFIX = "MOBY_"
CONFIG_VARIABLE = "MOBY_CONFIG"
# Variables of MOBY that are not settings of the backend (so not fields of Settings).
OTHER_VARIABLES: Mapping[str, str] = {
    CONFIG_VARIABLE: "a TOML file holding any of these settings (lower-case names, no prefix)",
    # named in the Grafana provisioning `moby grafana export` writes; Grafana reads it
    "MOBY_GRAFANA_INFLUX_PASSWORD": "InfluxDB password, in Grafana's environment",
    "MOBY_GRAFANA_TOKEN": "the viewer API token Grafana's MOBY data source sends, in Grafana's environment",
    # read by `moby grafana export` (its --alert-webhook-url / --alert-email)
    "MOBY_ALERT_WEBHOOK_URL": "the webhook MOBY's alert rules notify (moby grafana export)",
    "MOBY_ALERT_EMAIL": "the e-mail addresses MOBY's alert rules notify (moby grafana export)",
}


class Settings(BaseSettings):
    # env_ignore_empty: an empty variable (`MOBY_X=` in a compose file) counts as unset.
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", env_ignore_empty=True)

    # --- the contract ---------------------------------------------------------------------
    mqtt_url: str = "mqtt://127.0.0.1:1883"
    influx_url: str = "http://127.0.0.1:8086"
    influx_db: Annotated[str, Field(pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$")] = "moby"
    data_dir: Path = Path("./var")
    api_host: str = "127.0.0.1"
    api_port: Annotated[int, Field(ge=1, le=65535)] = 8000

    # --- MQTT -----------------------------------------------------------------------------
    # Names the backend's persistent session. Unset: the username of MOBY_MQTT_URL — a broker set
    # up by `moby broker` (or deploy/emqx) makes every client's id its username, so that is the id
    # the session has anyway — else moby-backend-<hostname>. See client_id_conflict().
    mqtt_client_id: str = ""
    # Set it (the same on every backend) to split the stream over several backends with an MQTT v5
    # shared subscription. Off by default: Mosquitto 2.0.x drops messages for an *offline*
    # shared-subscription member after a broker restart (see docs/ARCHITECTURE.md).
    mqtt_share_group: str = ""
    mqtt_session_expiry_s: int = 7 * 86400
    # Unacknowledged QoS 1 messages the broker may have in flight to us: bounds our memory.
    mqtt_receive_maximum: Annotated[int, Field(ge=1, le=65535)] = 1000
    # ... and the payload bytes they may hold; past either bound the backend stops reading.
    mqtt_max_unacked_bytes: Annotated[int, Field(ge=1024 * 1024)] = 64 * 1024 * 1024
    mqtt_keepalive_s: int = 30
    mqtt_ca_file: FilePath | None = None
    mqtt_cert_file: FilePath | None = None
    mqtt_key_file: FilePath | None = None
    mqtt_reconnect_max_s: float = 5.0

    # --- durable queue ----------------------------------------------------------------------
    queue_max_bytes: Annotated[int, Field(ge=1024 * 1024)] = GiB
    # "full": fsync every group commit (survives power loss); "normal": survives a process kill.
    queue_sync: Literal["full", "normal"] = "full"
    group_commit_max_messages: int = 2000
    group_commit_interval_s: float = 0.005

    # --- InfluxDB writer ----------------------------------------------------------------------
    influx_username: str | None = None
    influx_password: SecretStr | None = None
    # An InfluxDB administrator, used only by the bootstrap when InfluxDB has auth-enabled: it
    # creates the database and retention policies and the two users below (writer, reader).
    influx_admin_username: str | None = None
    influx_admin_password: SecretStr | None = None
    batch_max_points: Annotated[int, Field(ge=1)] = 5000
    batch_min_points: Annotated[int, Field(ge=1)] = 1000
    batch_linger_s: Annotated[float, Field(ge=0)] = 1.0
    write_concurrency: Annotated[int, Field(ge=1, le=16)] = 4
    write_timeout_s: float = 15.0
    retry_initial_s: float = 0.2
    retry_max_s: float = 30.0
    raw_retention: str = "30d"
    rollup_retention: str = "365d"
    rollup_1h_retention: str = "1825d"
    # Re-roll the last N hours of raw data into both rollups every 15 minutes, so readings an
    # edge device delivers late (after the continuous queries' resample window) reach the
    # rollups too; 0 turns it off.
    rollup_reroll_hours: Annotated[int, Field(ge=0, le=24 * 7)] = 6

    # --- query layer: the InfluxQL proxy for Grafana ----------------------------------------
    # Served at /influx of the API always, and at InfluxDB's own paths on this port when set.
    proxy_port: int | None = None
    proxy_host: str = "127.0.0.1"
    # When both are set, the proxy (and only the proxy) requires them, as InfluxDB with auth does.
    proxy_username: str | None = None
    proxy_password: SecretStr | None = None
    proxy_cache: bool = True
    # Keep complete GROUP BY time() buckets and ask InfluxDB only for the open tail (docs/QUERY.md).
    proxy_cache_delta: bool = True
    proxy_cache_max_bytes: Annotated[int, Field(ge=0)] = 64 * 1024 * 1024
    # Answers whose time range ended before now (minus the rollups' settle time) are complete.
    proxy_cache_ttl_s: Annotated[float, Field(ge=0)] = 3600.0
    # Answers that include the still-open bucket (a range reaching to now) are kept this long.
    proxy_cache_recent_ttl_s: Annotated[float, Field(ge=0)] = 5.0
    # Answers without a time range (SHOW TAG VALUES for dashboard variables, ...).
    proxy_cache_meta_ttl_s: Annotated[float, Field(ge=0)] = 30.0
    proxy_timeout_s: Annotated[float, Field(gt=0)] = 60.0
    # The InfluxDB user the proxy reads as: it should hold only READ on the database (the
    # bootstrap makes it so when the admin credential is given). Unset: the writer's credentials.
    proxy_influx_username: str | None = None
    proxy_influx_password: SecretStr | None = None
    # Answers larger than this are refused (never buffered whole); at most 16 are read at once.
    proxy_max_response_bytes: Annotated[int, Field(ge=1024)] = 16 * 1024 * 1024
    # Upstream queries one client (API token, else address) may have running at once, and how
    # many more may wait for a slot (a Grafana server is one client for all its users).
    proxy_max_concurrent_per_client: Annotated[int, Field(ge=1, le=1024)] = 4
    proxy_max_waiting_per_client: Annotated[int, Field(ge=0, le=100_000)] = 256

    # --- who may use the HTTP API and the proxy (docs/SECURITY.md) ------------------------------
    # auto: API tokens required when the API (or the proxy's own port) listens beyond loopback;
    # required: always; off: never (refused at start beyond loopback).
    api_auth: Literal["auto", "required", "off"] = "auto"
    # Host header names accepted besides localhost, IP addresses and the hosts listened on
    # (comma-separated; "*" accepts any, only behind a reverse proxy that checks Host itself).
    api_allowed_hosts: str = ""
    # The token file; default MOBY_DATA_DIR/api-tokens.json. Several backends behind one balancer
    # can share one (read-only) file.
    api_tokens_file: Path | None = None

    # --- the backend's own metrics in InfluxDB (moby_internal, moby_sensor_status) ---------------
    # Seconds between reports; 0 turns them off (then /metrics is the only source).
    internal_metrics_interval_s: Annotated[float, Field(ge=0)] = 10.0

    # --- validation -------------------------------------------------------------------------
    max_age_s: Annotated[int, Field(ge=1)] = 7 * 86400
    max_future_s: Annotated[int, Field(ge=0)] = 600

    # --- ingest limits: what one publisher may make the backend and InfluxDB hold -------------
    # The measurements sensors may write (comma-separated in the environment). Everything else is
    # dead-lettered (cardinality_limit): a made-up sensor_type would be a new measurement, with
    # continuous queries of its own. Names starting with "moby_" are the backend's and refused.
    sensor_types: Annotated[tuple[str, ...], NoDecode] = DEFAULT_SENSOR_TYPES
    # Distinct value names (fields) per measurement; one reading may carry 100 values (the
    # contract), so 200 leaves room for a second sensor model with names of its own.
    max_fields_per_measurement: Annotated[int, Field(ge=1)] = 200
    # Sensors (and gateways) the backend keeps track of: per factory, factories, and in all.
    max_sensors_per_factory: Annotated[int, Field(ge=1)] = 10_000
    max_factories: Annotated[int, Field(ge=1)] = 1_000
    max_sensors: Annotated[int, Field(ge=1)] = 100_000

    # --- dead letters -----------------------------------------------------------------------
    dlq_max_items: Annotated[int, Field(ge=1)] = 100_000
    # ... and the bytes they hold (payload, detail, topic); the oldest are evicted past either.
    dlq_max_bytes: Annotated[int, Field(ge=1024 * 1024)] = 256 * MiB

    # --- logging ------------------------------------------------------------------------------
    log_level: Annotated[LogLevel, BeforeValidator(_lower)] = "info"
    log_format: Literal["console", "json"] = "console"

    @field_validator("mqtt_url")
    @classmethod
    def _mqtt_scheme(cls, value: str) -> str:
        if urlsplit(value).scheme not in ("mqtt", "mqtts", "tcp", "ssl"):
            raise ValueError("must be mqtt://host:port or mqtts://host:port")
        return value

    @model_validator(mode="after")
    def _default_client_id(self) -> Settings:
        if not self.mqtt_client_id:
            user = MqttEndpoint.parse(self.mqtt_url).username
            self.mqtt_client_id = user or f"moby-backend-{socket.gethostname()}"
        return self

    def client_id_conflict(self) -> str | None:
        """Why MOBY_MQTT_CLIENT_ID cannot be used with MOBY_MQTT_URL's user, or None.

        The broker binds client ids to usernames, so a different id would be silently replaced by
        the username: two backends configured with one user and two ids would in fact share one
        session and take it from each other on every reconnect. ``moby serve`` refuses to start.
        """
        user = MqttEndpoint.parse(self.mqtt_url).username
        if user is None or self.mqtt_client_id == user:
            return None
        return (
            f"MOBY_MQTT_CLIENT_ID={self.mqtt_client_id!r} differs from the user {user!r} of MOBY_MQTT_URL, "
            "but the broker makes the username the client id (docs/BROKER.md): unset "
            "MOBY_MQTT_CLIENT_ID (it defaults to the username) and give every backend a broker user "
            "of its own (moby broker add-user NAME --role backend)"
        )

    @field_validator("sensor_types", mode="before")
    @classmethod
    def _sensor_types(cls, value: object) -> tuple[str, ...]:
        items = value.split(",") if isinstance(value, str) else value
        if not isinstance(items, list | tuple):
            raise ValueError("MOBY_SENSOR_TYPES must be a comma-separated list such as 'vibration,noise'")
        names = tuple(dict.fromkeys(str(item).strip() for item in items if str(item).strip()))
        if not names:
            raise ValueError("MOBY_SENSOR_TYPES must name at least one sensor type")
        for name in names:
            if not _SENSOR_TYPE.match(name):
                raise ValueError(f"sensor type {name!r} does not match {_SENSOR_TYPE.pattern}")
            if name.startswith("moby_"):
                raise ValueError(f"sensor type {name!r}: names starting with 'moby_' are the backend's own")
        return names

    @field_validator("influx_url")
    @classmethod
    def _http_scheme(cls, value: str) -> str:
        if urlsplit(value).scheme not in ("http", "https"):
            raise ValueError("must be http://host:port or https://host:port")
        return value.rstrip("/")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        config_file = os.environ.get(CONFIG_VARIABLE)
        if config_file:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=config_file))
        return tuple(sources)

    @property
    def queue_path(self) -> Path:
        return self.data_dir / "queue.sqlite"

    def safe_summary(self) -> dict[str, object]:
        """What to log at start: no secrets."""
        return {
            "mqtt_url": redact_url(self.mqtt_url),
            "influx_url": redact_url(self.influx_url),
            "influx_db": self.influx_db,
            "data_dir": str(self.data_dir),
            "api": f"{self.api_host}:{self.api_port}",
            "client_id": self.mqtt_client_id,
            "share_group": self.mqtt_share_group or None,
        }


# -- names ----------------------------------------------------------------------------------------
def env_names(name: str) -> tuple[str, ...]:
    """The environment variable(s) that set a field, as pydantic-settings reads them."""
    info = Settings.model_fields[name]
    alias = info.validation_alias
    if isinstance(alias, str):
        return (alias.upper(),)
    if isinstance(alias, AliasChoices):
        return tuple(c.upper() for c in alias.choices if isinstance(c, str))
    return (f"{ENV_PREFIX}{info.alias or name}".upper(),)


def variables() -> dict[str, str]:
    """Every variable MOBY reads → the field it sets (or '' for the others)."""
    names = {var: name for name in Settings.model_fields for var in env_names(name)}
    return {**names, **dict.fromkeys(OTHER_VARIABLES, "")}


def unknown_variables(environ: Mapping[str, str]) -> list[str]:
    """A warning for each ``MOBY_*`` variable that no part of MOBY reads (a typo, most likely)."""
    known = variables()
    return [
        f"{key} is not a MOBY setting and is ignored{did_you_mean(key.upper(), known)}"
        for key in sorted(environ)
        if key.upper().startswith(ENV_PREFIX) and key.upper() not in known
    ]


@dataclass(frozen=True)
class Origins:
    """Where each setting came from, to name it as the user wrote it."""

    env: Mapping[str, str] = field(default_factory=dict)  # field → variable, as spelled
    file: Path | None = None
    file_keys: frozenset[str] = frozenset()

    def name(self, loc: Loc) -> str:
        field_name, rest = str(loc[0]), loc[1:]
        if field_name in self.env:
            return self.env[field_name] + "".join(f"[{p}]" for p in rest)
        if field_name in self.file_keys and self.file is not None:
            return f"{self.file}: {toml_key(loc)}"
        if field_name in Settings.model_fields:
            return env_names(field_name)[0] + "".join(f"[{p}]" for p in rest)
        return toml_key(loc)


def _origins(environ: Mapping[str, str], file: Path | None, file_keys: frozenset[str]) -> Origins:
    by_var = {var: name for var, name in variables().items() if name}
    env = {by_var[k.upper()]: k for k, v in environ.items() if k.upper() in by_var and v != ""}
    return Origins(env, file, file_keys)


# -- loading --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Loaded:
    settings: Settings
    origins: Origins
    warnings: tuple[str, ...]


def _read_config_file(environ: Mapping[str, str]) -> tuple[Path | None, dict[str, object]]:
    value = environ.get(CONFIG_VARIABLE, "")
    if not value:
        return None, {}
    path = Path(value)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError([f"{CONFIG_VARIABLE}={value!r}: no such file"]) from None
    except IsADirectoryError:
        raise ConfigError([f"{CONFIG_VARIABLE}={value!r}: is a folder, not a TOML file"]) from None
    except (OSError, UnicodeDecodeError) as exc:
        why = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise ConfigError([f"{CONFIG_VARIABLE}={value!r}: cannot read it ({why})"]) from None
    try:
        return path, tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([toml_problem(path, exc)]) from None


def _unknown_keys(path: Path, data: Mapping[str, object]) -> list[str]:
    fields = list(Settings.model_fields)
    out = []
    for key in data:
        if key in fields:
            continue
        what = f"table [{key}]" if isinstance(data[key], dict) else f"key {key}"
        hint = did_you_mean(key.lower().removeprefix(ENV_PREFIX.lower()), fields)
        out.append(f"{path}: unknown {what} is ignored{hint}")
    return out


_SETTINGS_ERROR_FIELD = re.compile(r'field "([^"]+)"')


def load_settings(environ: Mapping[str, str] | None = None) -> Loaded:
    """The settings, or a :class:`ConfigError` with one line per problem.

    ``environ`` defaults to ``os.environ``; pydantic-settings reads the process environment, so
    a different mapping is only used to name things (tests pass the same one).
    """
    environ = os.environ if environ is None else environ
    file, data = _read_config_file(environ)
    warnings = _unknown_keys(file, data) if file is not None else []
    origins = _origins(environ, file, frozenset(k for k in data if k in Settings.model_fields))
    try:
        settings = Settings()
    except ValidationError as exc:
        raise ConfigError(problem_lines(exc, Settings, origins.name), warnings) from exc
    except SettingsError as exc:  # a list or object variable that is not valid JSON
        match = _SETTINGS_ERROR_FIELD.search(str(exc))
        if match is None or match.group(1) not in Settings.model_fields:
            raise ConfigError([f"configuration: {exc}"], warnings) from exc
        name = match.group(1)
        var = origins.name((name,))
        value = environ.get(origins.env.get(name, ""), "")
        allowed = describe_allowed(field_schemas(Settings)[name])
        raise ConfigError(
            [f"{var}={show_value(value)}: not valid JSON; allowed: {allowed}"], warnings
        ) from exc
    return Loaded(settings, origins, tuple(warnings))


# -- the data folder --------------------------------------------------------------------------------
def folder_problem(path: Path) -> str | None:
    """Why MOBY could not keep state in this folder (created if missing), or None."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        return "exists and is not a folder"
    except OSError as exc:
        return f"cannot create it ({exc.strerror or exc})"
    if not path.is_dir():
        return "exists and is not a folder"
    try:  # a real write: as root, os.access says yes even on a read-only file system
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as exc:
        return f"cannot write in it ({exc.strerror or exc})"
    return None


def sqlite_problem(path: Path) -> str | None:
    """Why SQLite could not open (or create) this database file, or None."""
    if path.is_dir():
        return "is a folder, not a database file"
    try:
        connection = sqlite3.connect(path)
        try:
            connection.execute("PRAGMA schema_version").fetchone()  # reads the header
        finally:
            connection.close()
    except sqlite3.Error as exc:
        return f"SQLite cannot open it ({exc})"
    return None


def check_state_path(
    name: str, value: Path, folder: Path | None = None, database: Path | None = None
) -> None:
    """A :class:`ConfigError` naming the setting (``name=value``) when the folder where it keeps
    state (``value`` itself unless given) or the SQLite database in it cannot be used."""
    folder = value if folder is None else folder
    where = "" if folder == value else f"{folder}: "
    problem = folder_problem(folder)
    if problem is None and database is not None:
        where, problem = f"{database}: ", sqlite_problem(database)
    if problem is not None:
        raise ConfigError([f"{name}={str(value)!r}: {where}{problem}"])


def check_data_dir(loaded: Loaded) -> None:
    """The backend's data folder and its queue database can be used, or a ConfigError."""
    s = loaded.settings
    check_state_path(loaded.origins.name(("data_dir",)), s.data_dir, database=s.queue_path)


# -- the reference shown by `moby serve --help` ---------------------------------------------------
_SECTION = re.compile(r"^\s*# -+ (.+?) -+\s*$")
_FIELD = re.compile(r"^    ([a-z_][a-z0-9_]*)\s*:")


@dataclass(frozen=True)
class Variable:
    name: str
    default: str
    allowed: str
    meaning: str


def _sections() -> dict[str, str]:
    """field → the title of its ``# --- title ---`` section in this class's source."""
    try:
        lines = inspect.getsource(Settings).splitlines()
    except (OSError, TypeError):  # no source installed: one group
        return {}
    out: dict[str, str] = {}
    section = "settings"
    for line in lines:
        if m := _SECTION.match(line):
            section = m.group(1)
        elif m := _FIELD.match(line):
            out.setdefault(m.group(1), section)
    return out


def settings_reference() -> list[tuple[str, list[Variable]]]:
    """Every setting's variable, grouped as in :class:`Settings`, with its default and what it allows."""
    sections = _sections()
    schemas = field_schemas(Settings)
    groups: dict[str, list[Variable]] = {}
    for name, info in Settings.model_fields.items():
        variable = Variable(
            " / ".join(env_names(name)),
            show_default(default_of(Settings, name)),
            describe_allowed(schemas[name]),
            info.description or "",
        )
        groups.setdefault(sections.get(name, "settings"), []).append(variable)
    return list(groups.items())
