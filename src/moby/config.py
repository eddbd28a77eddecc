"""Configuration of ``moby serve`` from ``MOBY_*`` environment variables (and an optional file).

The first six variables are the public contract; the rest are tuning knobs with defaults that
suit one backend process on a small machine. A TOML file named by ``MOBY_CONFIG`` may hold the
same settings (lower-case names without the prefix); environment variables win over it.
"""

from __future__ import annotations

import os
import re
import socket
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit, urlunsplit

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

GiB = 1024**3
MiB = 1024**2
# The sensor types the contract names; MOBY_SENSOR_TYPES replaces the list.
DEFAULT_SENSOR_TYPES = ("vibration", "noise", "temperature", "humidity")
_SENSOR_TYPE = re.compile(r"^[a-z][a-z0-9_]{0,31}$")


def redact_url(url: str) -> str:
    """The URL with any password replaced, safe to log."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = f"{parts.username}:***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MOBY_", extra="ignore")

    # --- the contract ---------------------------------------------------------------------
    mqtt_url: str = "mqtt://127.0.0.1:1883"
    influx_url: str = "http://127.0.0.1:8086"
    influx_db: Annotated[str, Field(pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$")] = "moby"
    data_dir: Path = Path("./var")
    api_host: str = "127.0.0.1"
    api_port: int = 8000

    # --- MQTT -----------------------------------------------------------------------------
    mqtt_client_id: str = Field(default_factory=lambda: f"moby-backend-{socket.gethostname()}")
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
    mqtt_ca_file: Path | None = None
    mqtt_cert_file: Path | None = None
    mqtt_key_file: Path | None = None
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
    log_level: str = "info"
    log_format: Literal["console", "json"] = "console"

    @field_validator("mqtt_url")
    @classmethod
    def _mqtt_scheme(cls, value: str) -> str:
        if urlsplit(value).scheme not in ("mqtt", "mqtts", "tcp", "ssl"):
            raise ValueError("MOBY_MQTT_URL must be mqtt://host:port or mqtts://host:port")
        return value

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
            raise ValueError("MOBY_INFLUX_URL must be http(s)://host:port")
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
        config_file = os.environ.get("MOBY_CONFIG")
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
