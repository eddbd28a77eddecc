"""The virtual sensors of ``moby simulate``: the edge drivers, a fault each, and their sampling.

Sensor ``i`` is a vibration, temperature, humidity or noise sensor (``i % 4``), named
``vib-0000``, ``tem-0001``, ``hum-0002``, ``noi-0003``, ... on line ``line-<i // 40 + 1>`` and
machine ``m-<i // 4 + 1>``. Every driver is seeded from ``seed`` and ``i``.

Vibration is the expensive one: the features of one window (an FFT and a dozen reductions) cost
~0.9 ms at the agent's 5 kHz × 1 s, so 500 vibration sensors would take half a core on their own.
The simulator samples at 4,096 Hz over 0.5 s (still five cycles of 10 Hz and the whole 10–1000 Hz
ISO band; ~0.45 ms) and computes a fresh window only every ``vib_refresh`` readings per sensor
(staggered across the fleet); in between, the last window's features are reported with their
magnitudes moved by a common ±2 % factor (so ratios such as crest factor stay consistent and the
ISO zone is recomputed). ``bench/edge.py`` measures the result.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass, field

import structlog

from moby.edge.buffer import NewReading, sensor_key
from moby.edge.drivers import (
    SensorDriver,
    SimulatedHumidity,
    SimulatedNoise,
    SimulatedTemperature,
    SimulatedVibration,
)
from moby.edge.faults import FaultPlan, SensorFault, assign
from moby.edge.features import ZONES, MachineClass, iso_zone
from moby.schema import Topic, TopicKind

log = structlog.get_logger(__name__)

SENSOR_TYPES = ("vibration", "temperature", "humidity", "noise")
_SCALED = ("rms_velocity", "rms_accel", "peak_accel")  # value-name prefixes of linear magnitudes


def sensor_id(index: int) -> str:
    return f"{SENSOR_TYPES[index % 4][:3]}-{index:04d}"


class CachedVibration:
    """A :class:`SimulatedVibration` whose features are recomputed every ``refresh`` reads."""

    sensor_type = SimulatedVibration.sensor_type
    units = SimulatedVibration.units

    def __init__(self, driver: SimulatedVibration, refresh: int, offset: int, seed: int) -> None:
        self.driver = driver
        self.refresh = max(1, refresh)
        self._reads = offset % self.refresh
        self._rng = random.Random(seed)
        self._last: dict[str, float] = {}

    def read(self) -> dict[str, float]:
        if self._reads % self.refresh == 0 or not self._last:
            self._last = self.driver.read()
            self._reads = 1
            return self._last
        self._reads += 1
        factor = 1.0 + 0.02 * self._rng.uniform(-1.0, 1.0)
        values = {k: v * factor if k.startswith(_SCALED) else v for k, v in self._last.items()}
        zone = iso_zone(values["rms_velocity"], self.driver.machine_class)
        values["iso_zone"] = float(ZONES.index(zone) + 1)
        return values


def make_driver(index: int, seed: int, vib_refresh: int) -> SensorDriver:
    kind = SENSOR_TYPES[index % 4]
    rng = random.Random(seed * 1_000_003 + index)
    driver_seed = rng.randrange(1 << 32)
    if kind == "vibration":
        vibration = SimulatedVibration(
            rpm=rng.choice((1480.0, 2960.0, 980.0)),
            sample_rate_hz=4096.0,
            window_s=0.5,
            resonance_hz=1500.0,
            machine_class=MachineClass.CLASS_II,
            imbalance_mm_s=rng.uniform(0.3, 2.5),
            misalignment_mm_s=rng.uniform(0.0, 1.5) if rng.random() < 0.2 else 0.0,
            bearing_impact_g=rng.uniform(0.5, 3.0) if rng.random() < 0.05 else 0.0,
            seed=driver_seed,
        )
        return CachedVibration(vibration, vib_refresh, index, driver_seed)
    if kind == "temperature":
        return SimulatedTemperature(mean_c=rng.uniform(30.0, 60.0), seed=driver_seed)
    if kind == "humidity":
        return SimulatedHumidity(mean_rh=rng.uniform(35.0, 60.0), seed=driver_seed)
    return SimulatedNoise(level_dba=rng.uniform(70.0, 90.0), seed=driver_seed)


@dataclass
class VirtualSensor:
    index: int
    factory_id: str
    sensor_id: str
    driver: SensorDriver
    fault: SensorFault
    key: str = field(init=False)
    topics: dict[TopicKind, str] = field(init=False)
    errors: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.key = sensor_key(self.factory_id, self.sensor_id)
        self.topics = {k: str(Topic(self.factory_id, self.sensor_id, k)) for k in TopicKind}

    @property
    def sensor_type(self) -> str:
        return self.driver.sensor_type

    @property
    def units(self) -> Mapping[str, str]:
        return self.driver.units

    @property
    def line_id(self) -> str:
        return f"line-{self.index // 40 + 1}"

    @property
    def machine_id(self) -> str:
        return f"m-{self.index // 4 + 1:04d}"

    @property
    def model(self) -> str:
        return f"SIM-{self.sensor_type[:3].upper()}-1"


def make_fleet(
    factory_id: str, count: int, plan: FaultPlan, *, seed: int, vib_refresh: int
) -> list[VirtualSensor]:
    faults = assign(count, plan, seed)
    return [
        VirtualSensor(
            i,
            factory_id,
            sensor_id(i),
            make_driver(i, seed, vib_refresh),
            SensorFault(faults[i], plan, seed * 7919 + i),
        )
        for i in range(count)
    ]


def sample(sensors: list[VirtualSensor], ts_ms: int) -> list[NewReading]:
    """One reading from each sensor (none from a sensor in dropout or whose driver failed)."""
    out: list[NewReading] = []
    for sensor in sensors:
        try:
            values = sensor.fault.apply(sensor.driver.read())
        except Exception as exc:  # one failing driver must not stop the fleet
            name = type(exc).__name__
            sensor.errors[name] = sensor.errors.get(name, 0) + 1
            log.warning("sensor read failed", sensor=sensor.sensor_id, error=str(exc))
            continue
        if values is not None:
            out.append(NewReading(sensor.key, ts_ms + sensor.fault.skew_ms, values))
    return out
