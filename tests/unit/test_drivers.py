"""Simulated drivers: faults show up where a vibration analyst would look, and readings are contract-valid."""

from __future__ import annotations

import json
import math
import time
from datetime import UTC, datetime

import numpy as np
import pytest

from moby.edge.drivers import (
    SensorDriver,
    SimulatedHumidity,
    SimulatedNoise,
    SimulatedTemperature,
    SimulatedVibration,
    _Drift,
)
from moby.edge.features import vibration_features
from moby.schema import TELEMETRY, TELEMETRY_SCHEMA

RPM = 1500.0  # 25 Hz: the 1x and 2x components fall on whole bins of a 1 s window
SHAFT_HZ = RPM / 60


def amplitude_at(accel: np.ndarray, fs: float, freq_hz: float) -> float:
    """Amplitude (m/s²) of the spectral line at ``freq_hz``; the window holds whole cycles of it."""
    spectrum = np.abs(np.fft.rfft(accel)) * 2 / accel.size
    return float(spectrum[round(freq_hz * accel.size / fs)])


def test_imbalance_raises_the_1x_component_and_rms_velocity() -> None:
    healthy = SimulatedVibration(rpm=RPM, seed=3)
    unbalanced = SimulatedVibration(rpm=RPM, seed=3, imbalance_mm_s=5.0)
    a0, a1 = healthy.waveform(), unbalanced.waveform()
    assert amplitude_at(a1, 5000.0, SHAFT_HZ) > 8 * amplitude_at(a0, 5000.0, SHAFT_HZ)

    v0, v1 = healthy.read(), unbalanced.read()
    assert v0["rms_velocity"] == pytest.approx(0.5, rel=0.1)
    assert v1["rms_velocity"] == pytest.approx(5.0, rel=0.05)
    assert v1["dominant_freq_hz"] == SHAFT_HZ
    assert (v0["iso_zone"], v1["iso_zone"]) == (1.0, 3.0)  # class II: A → C


def test_misalignment_raises_the_2x_component() -> None:
    v = SimulatedVibration(rpm=RPM, seed=3, misalignment_mm_s=4.0).read()
    assert v["dominant_freq_hz"] == 2 * SHAFT_HZ
    assert v["rms_velocity"] == pytest.approx(math.hypot(0.5, 4.0), rel=0.05)


def test_bearing_defect_raises_kurtosis_and_crest_factor() -> None:
    healthy = SimulatedVibration(rpm=RPM, seed=5).read()
    worn = SimulatedVibration(rpm=RPM, seed=5, bearing_impact_g=0.5).read()
    assert healthy["kurtosis"] < 3.5 < 6.0 < worn["kurtosis"]
    assert worn["crest_factor"] > 1.3 * healthy["crest_factor"]
    assert worn["rms_accel_hf_m_s2"] > 10 * healthy["rms_accel_hf_m_s2"]
    # An early bearing defect hardly moves the ISO severity: why kurtosis and HF energy matter.
    assert worn["rms_velocity"] == pytest.approx(healthy["rms_velocity"], rel=0.2)


def test_impacts_repeat_at_the_defect_frequency() -> None:
    sim = SimulatedVibration(rpm=RPM, seed=1, bearing_impact_g=1.0, imbalance_mm_s=0.0, noise_m_s2=0.0)
    envelope = np.abs(sim.waveform())
    spectrum = np.abs(np.fft.rfft(envelope - envelope.mean()))
    defect_hz = SHAFT_HZ * sim.bearing_defect_order
    assert abs(float(np.argmax(spectrum[5:200])) + 5 - defect_hz) <= 1.0


def test_fault_can_be_injected_into_a_running_sensor() -> None:
    sim = SimulatedVibration(seed=9)
    before = sim.read()
    sim.imbalance_mm_s = 8.0
    assert sim.read()["rms_velocity"] > 10 * before["rms_velocity"]


def test_same_seed_same_readings() -> None:
    assert SimulatedVibration(seed=11).read() == SimulatedVibration(seed=11).read()
    assert SimulatedVibration(seed=11).read() != SimulatedVibration(seed=12).read()
    clock = iter([1e9, 1e9 + 1]).__next__
    clock2 = iter([1e9, 1e9 + 1]).__next__
    a, b = SimulatedTemperature(seed=2, clock=clock), SimulatedTemperature(seed=2, clock=clock2)
    assert [a.read(), a.read()] == [b.read(), b.read()]


def test_windows_are_continuous() -> None:
    sim = SimulatedVibration(seed=1, noise_m_s2=0.0, window_s=0.5)
    joined = np.concatenate([sim.waveform(), sim.waveform()])
    whole = SimulatedVibration(seed=1, noise_m_s2=0.0, window_s=1.0).waveform()
    np.testing.assert_allclose(joined, whole, atol=1e-12)
    assert vibration_features(joined, 5000.0).rms_velocity == pytest.approx(0.5, rel=0.02)


def test_resonance_must_be_sampled() -> None:
    with pytest.raises(ValueError):
        SimulatedVibration(sample_rate_hz=2500.0, resonance_hz=1800.0)


def local_epoch(hour: int) -> float:
    """Epoch seconds of ``hour``:00 in UTC+9 on an arbitrary day."""
    return datetime(2025, 11, 26, hour, tzinfo=UTC).timestamp() - 9 * 3600


def test_temperature_follows_the_day() -> None:
    def at(hour: int) -> float:
        sensor = SimulatedTemperature(seed=1, drift_c=0.0, noise_c=0.0, clock=lambda: local_epoch(hour))
        return sensor.read()["temperature"]

    assert at(15) == pytest.approx(45.0)  # mean 40 + daily amplitude 5 at the afternoon peak
    assert at(3) == pytest.approx(35.0)
    assert at(9) == pytest.approx(40.0)


def test_humidity_falls_when_the_air_warms() -> None:
    def at(hour: int) -> dict[str, float]:
        return SimulatedHumidity(seed=1, clock=lambda: local_epoch(hour)).read()

    afternoon, night = at(15), at(3)
    assert afternoon["temperature"] > night["temperature"]
    assert afternoon["humidity"] < night["humidity"]
    wet = SimulatedHumidity(seed=1, mean_rh=99.0, clock=lambda: local_epoch(3)).read()
    assert wet["humidity"] == 100.0  # clipped to the physical range


def test_drift_wanders_with_its_spread_whatever_the_read_rate() -> None:
    rng = np.random.default_rng(0)
    for step_s in (1.0, 600.0):
        drift = _Drift(spread=2.0, correlation_s=60.0)
        samples = [drift.step(i * step_s, rng) for i in range(20_000)]
        assert float(np.std(samples[1000:])) == pytest.approx(2.0, rel=0.15)


def test_sound_level_is_an_energy_average() -> None:
    steady = SimulatedNoise(seed=1, fluctuation_db=0.0).read()
    assert steady == {"laeq": 78.0, "lamax": 78.0}
    v = SimulatedNoise(seed=1).read()
    assert v["lamax"] >= v["laeq"] >= 78.0 - 2.0  # loud moments dominate an energy average


DRIVERS: list[SensorDriver] = [
    SimulatedVibration(seed=1, bearing_impact_g=1.0, imbalance_mm_s=3.0),
    SimulatedTemperature(seed=1),
    SimulatedHumidity(seed=1),
    SimulatedNoise(seed=1),
]


@pytest.mark.parametrize("driver", DRIVERS, ids=lambda d: d.sensor_type)
def test_readings_are_contract_valid(driver: SensorDriver) -> None:
    now = int(time.time() * 1000)
    values = [driver.read() for _ in range(3)]
    for v in values:
        assert set(v) <= set(driver.units)  # every value has a unit for the birth message
        assert all(type(x) is float for x in v.values())
    readings = [{"ts": now + i * 1000, "seq": i, "values": v} for i, v in enumerate(values)]
    single = {"schema": TELEMETRY_SCHEMA, "sensor_type": driver.sensor_type, **readings[0]}
    batch = {"schema": TELEMETRY_SCHEMA, "sensor_type": driver.sensor_type, "readings": readings}
    for payload, sent in ((single, readings[:1]), (batch, readings)):
        # through JSON, as it goes over MQTT; allow_nan=False fails on a NaN or infinity
        message = TELEMETRY.validate_python(json.loads(json.dumps(payload, allow_nan=False)))
        assert [r.values for r in message.iter_readings()] == [r["values"] for r in sent]
