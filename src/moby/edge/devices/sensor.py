"""The settings every sensor of an ``agent.toml`` has, whatever its driver.

A ``[[sensors]]`` table is one sensor: one MQTT link with its own Last Will, one stream of
readings with its own ``seq``. Its ``driver`` key (``simulated`` when left out) says which of
the driver models validates the rest of the table (:mod:`moby.edge.devices.config`).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from moby.edge.features import MachineClass
from moby.schema import ID_PATTERN
from moby.schema.payloads import MAX_VALUES, SENSOR_TYPE_PATTERN, VALUE_NAME_PATTERN

Id = Annotated[str, Field(pattern=ID_PATTERN)]
# The backend stores these as tags or fields of their own: a sensor may not name a value so.
RESERVED_VALUE_NAMES = frozenset(
    {"factory_id", "sensor_id", "line_id", "machine_id", "time", "seq", "quality", "qc", "qc_failed"}
)


def _not_reserved(name: str) -> str:
    if name in RESERVED_VALUE_NAMES:
        raise ValueError(f"{name!r} is reserved by the backend ({', '.join(sorted(RESERVED_VALUE_NAMES))})")
    return name


ValueName = Annotated[str, Field(pattern=VALUE_NAME_PATTERN), AfterValidator(_not_reserved)]
Unit = Annotated[str, Field(max_length=32)]
# A values table: value name → unit ("" when it has none), at most the contract's 100 values.
ValuesTable = Annotated[dict[ValueName, Unit], Field(min_length=1, max_length=MAX_VALUES)]


def _finite(value: float) -> float:
    if not math.isfinite(value):
        raise ValueError("must be a finite number")
    return value


Finite = Annotated[float, AfterValidator(_finite)]
Seconds = Annotated[float, Field(gt=0, le=3600)]


class SensorBase(BaseModel):
    model_config = ConfigDict(extra="forbid")

    sensor_id: Id
    interval_s: Annotated[float, Field(gt=0)] = 1.0
    firmware: str = "1.0.0"
    line_id: Id | None = None
    machine_id: Id | None = None
    # This sensor's own client certificate (``moby broker add-sensor`` bundle), when the agent
    # speaks for several sensors: the broker takes each link's identity from its certificate.
    cert_file: Path | None = None
    key_file: Path | None = None


class SimulatedSensor(SensorBase):
    """A simulated sensor (the default driver): vibration, temperature, humidity or noise."""

    driver: Literal["simulated"] = "simulated"
    type: Literal["vibration", "temperature", "humidity", "noise"]
    model: str = "SIM-1"
    machine_class: MachineClass = MachineClass.CLASS_II  # vibration only
    rpm: float = 1480.0  # vibration only
    seed: int | None = None


class DeviceSensor(SensorBase):
    """A sensor on real hardware: any sensor type of the contract (the backend's list decides)."""

    type: Annotated[str, Field(pattern=SENSOR_TYPE_PATTERN)]
    model: str = "unspecified"
