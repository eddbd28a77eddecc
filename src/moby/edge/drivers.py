"""Sensor drivers: what the edge agent reads sensors through, and simulated sensors behind it.

A driver for real hardware (an accelerometer on SPI, a Modbus thermometer) is one class with the
members of :class:`SensorDriver`. The simulated drivers draw from a seeded numpy ``Generator``,
so a given seed gives the same readings every run.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import ClassVar, Protocol

import numpy as np
import numpy.typing as npt

from moby.edge.features import STANDARD_GRAVITY, UNITS, MachineClass, vibration_features

Clock = Callable[[], float]


class SensorDriver(Protocol):
    """One physical sensor, as the edge agent sees it."""

    @property
    def sensor_type(self) -> str:
        """The contract's ``sensor_type`` (and the InfluxDB measurement), e.g. ``"vibration"``."""
        ...

    @property
    def units(self) -> Mapping[str, str]:
        """Value name → unit, for the status birth message."""
        ...

    def read(self) -> dict[str, float]:
        """Take one reading: contract value names → finite numbers. May block while it samples."""
        ...


@dataclass
class SimulatedVibration:
    """An accelerometer on the bearing housing of a rotating machine; one window per read.

    The fault settings are plain attributes: change them between reads to inject a fault into
    a running simulation.
    """

    sensor_type: ClassVar[str] = "vibration"
    units: ClassVar[Mapping[str, str]] = UNITS

    rpm: float = 1480.0  # a 4-pole induction motor on 50 Hz
    sample_rate_hz: float = 5000.0
    window_s: float = 1.0
    machine_class: MachineClass = MachineClass.CLASS_II
    # Imbalance: the 1x running-speed component, as its RMS velocity. Every rotor has some.
    imbalance_mm_s: float = 0.5
    # Misalignment: the 2x component, as its RMS velocity.
    misalignment_mm_s: float = 0.0
    # Bearing defect: one impact per rolling element passing the defect, each ringing the
    # housing's resonance; peak acceleration of an impact in g (0: no defect).
    bearing_impact_g: float = 0.0
    bearing_defect_order: float = 3.585  # defect frequency / shaft frequency: BPFO of a 6205 bearing
    resonance_hz: float = 1800.0
    noise_m_s2: float = 0.05  # broadband noise, RMS
    seed: int | None = None
    _rng: np.random.Generator = field(init=False, repr=False)
    _phases: npt.NDArray[np.float64] = field(init=False, repr=False)
    _samples_done: int = field(default=0, init=False, repr=False)

    def __post_init__(self) -> None:
        if not 0 < self.resonance_hz < self.sample_rate_hz / 2:
            raise ValueError("the resonance must lie below the Nyquist frequency")
        self._rng = np.random.default_rng(self.seed)
        self._phases = self._rng.uniform(0, 2 * np.pi, size=2)

    def read(self) -> dict[str, float]:
        accel = self.waveform()
        return vibration_features(accel, self.sample_rate_hz, machine_class=self.machine_class).as_values()

    def waveform(self) -> npt.NDArray[np.float64]:
        """The next window of raw acceleration in m/s², continuing where the last one ended."""
        fs = self.sample_rate_hz
        n = round(fs * self.window_s)
        t = (self._samples_done + np.arange(n)) / fs
        self._samples_done += n
        shaft_hz = self.rpm / 60
        accel = (
            _tone(t, shaft_hz, self.imbalance_mm_s, self._phases[0])
            + _tone(t, 2 * shaft_hz, self.misalignment_mm_s, self._phases[1])
            + self._rng.normal(0.0, self.noise_m_s2, n)
        )
        if self.bearing_impact_g > 0:
            accel += self._impacts(t, shaft_hz * self.bearing_defect_order)
        return accel

    def _impacts(self, t: npt.NDArray[np.float64], defect_hz: float) -> npt.NDArray[np.float64]:
        fs = self.sample_rate_hz
        period = 1 / defect_hz
        times = np.arange(math.ceil(t[0] / period), math.floor(t[-1] / period) + 1) * period
        # Rolling elements slip, so real impacts are not exactly periodic (1-2 % jitter).
        times += self._rng.normal(0.0, 0.01 * period, times.size)
        at = np.round((times - t[0]) * fs).astype(np.int64)
        impulses = np.zeros(t.size)
        np.add.at(impulses, at[(at >= 0) & (at < t.size)], 1.0)
        # Each impact rings the resonance down with 5 % of critical damping.
        decay_s = 1 / (0.05 * 2 * np.pi * self.resonance_hz)
        tau = np.arange(round(5 * decay_s * fs)) / fs
        ring = np.exp(-tau / decay_s) * np.sin(2 * np.pi * self.resonance_hz * tau)
        ring *= self.bearing_impact_g * STANDARD_GRAVITY / np.max(np.abs(ring))
        return np.convolve(impulses, ring)[: t.size]


def _tone(
    t: npt.NDArray[np.float64], freq_hz: float, velocity_rms_mm_s: float, phase: float
) -> npt.NDArray[np.float64]:
    """Acceleration of a sinusoidal vibration whose velocity has the given RMS."""
    amplitude = math.sqrt(2) * velocity_rms_mm_s / 1000 * 2 * math.pi * freq_hz
    return amplitude * np.sin(2 * np.pi * freq_hz * t + phase)


def _daily(now: float, utc_offset_h: float, peak_hour: float) -> float:
    """+1 at ``peak_hour`` local time, -1 twelve hours later."""
    local_hour = (now / 3600 + utc_offset_h) % 24
    return math.cos(2 * math.pi * (local_hour - peak_hour) / 24)


@dataclass
class _Drift:
    """A slow random wander of a given spread that returns to 0 (an Ornstein-Uhlenbeck process).

    Updated exactly for the time since the last step, so its statistics do not depend on how
    often the sensor is read.
    """

    spread: float
    correlation_s: float
    value: float = 0.0
    last: float | None = None

    def step(self, now: float, rng: np.random.Generator) -> float:
        dt = 0.0 if self.last is None else max(now - self.last, 0.0)
        self.last = now
        keep = math.exp(-dt / self.correlation_s)
        self.value = self.value * keep + self.spread * math.sqrt(1 - keep * keep) * rng.standard_normal()
        return self.value


@dataclass
class SimulatedTemperature:
    """A machine-surface or room thermometer: daily cycle, slow drift and noise, in °C."""

    sensor_type: ClassVar[str] = "temperature"
    units: ClassVar[Mapping[str, str]] = {"temperature": "degC"}

    mean_c: float = 40.0
    daily_amplitude_c: float = 5.0
    drift_c: float = 2.0
    drift_correlation_s: float = 3600.0
    noise_c: float = 0.05
    utc_offset_h: float = 9.0  # the factory's local time decides when the afternoon is
    peak_hour: float = 15.0
    seed: int | None = None
    clock: Clock = time.time
    _rng: np.random.Generator = field(init=False, repr=False)
    _drift: _Drift = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._rng = np.random.default_rng(self.seed)
        self._drift = _Drift(self.drift_c, self.drift_correlation_s)

    def read(self) -> dict[str, float]:
        now = self.clock()
        temperature = (
            self.mean_c
            + self.daily_amplitude_c * _daily(now, self.utc_offset_h, self.peak_hour)
            + self._drift.step(now, self._rng)
            + self.noise_c * self._rng.standard_normal()
        )
        return {"temperature": round(temperature, 3)}


@dataclass
class SimulatedHumidity:
    """A combined humidity/temperature sensor (SHT3x-like) in the hall: %RH and °C.

    Relative humidity falls as the air warms in the afternoon.
    """

    sensor_type: ClassVar[str] = "humidity"
    units: ClassVar[Mapping[str, str]] = {"humidity": "%RH", "temperature": "degC"}

    mean_rh: float = 50.0
    daily_amplitude_rh: float = 10.0
    mean_c: float = 24.0
    daily_amplitude_c: float = 3.0
    drift_rh: float = 5.0
    drift_correlation_s: float = 6 * 3600.0
    noise_rh: float = 0.3
    utc_offset_h: float = 9.0
    peak_hour: float = 15.0
    seed: int | None = None
    clock: Clock = time.time
    _rng: np.random.Generator = field(init=False, repr=False)
    _drift: _Drift = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._rng = np.random.default_rng(self.seed)
        self._drift = _Drift(self.drift_rh, self.drift_correlation_s)

    def read(self) -> dict[str, float]:
        now = self.clock()
        daily = _daily(now, self.utc_offset_h, self.peak_hour)
        humidity = (
            self.mean_rh
            - self.daily_amplitude_rh * daily
            + self._drift.step(now, self._rng)
            + self.noise_rh * self._rng.standard_normal()
        )
        temperature = self.mean_c + self.daily_amplitude_c * daily + 0.05 * self._rng.standard_normal()
        return {"humidity": round(min(max(humidity, 0.0), 100.0), 2), "temperature": round(temperature, 3)}


@dataclass
class SimulatedNoise:
    """A sound level meter by a machine: A-weighted levels in dB(A) over each read's interval.

    ``laeq`` is the energy average of the interval's levels, ``lamax`` the highest level with
    'fast' (125 ms) time weighting.
    """

    sensor_type: ClassVar[str] = "noise"
    units: ClassVar[Mapping[str, str]] = {"laeq": "dB(A)", "lamax": "dB(A)"}

    level_dba: float = 78.0
    fluctuation_db: float = 2.0
    interval_s: float = 1.0
    seed: int | None = None
    _rng: np.random.Generator = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._rng = np.random.default_rng(self.seed)

    def read(self) -> dict[str, float]:
        samples = max(1, round(self.interval_s / 0.125))
        fast = self.level_dba + self._rng.normal(0.0, self.fluctuation_db, samples)
        # Decibels average as energies, not as numbers.
        laeq = 10 * math.log10(float(np.mean(10 ** (fast / 10))))
        return {"laeq": round(laeq, 2), "lamax": round(float(np.max(fast)), 2)}
