"""Vibration features against hand-computed values: pure sines, noise, and the ISO zone table."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from moby.edge.features import (
    STANDARD_GRAVITY,
    UNITS,
    ZONE_LIMITS_MM_S,
    MachineClass,
    VibrationFeatures,
    iso_zone,
    vibration_features,
)

FS = 5000.0
VALUE_NAME = re.compile(r"^[a-z][a-z0-9_]{0,63}$")


def sine(
    amplitude: float, freq_hz: float, seconds: float = 1.0, fs: float = FS, phase: float = 0.3
) -> np.ndarray:
    t = np.arange(round(seconds * fs)) / fs
    return amplitude * np.sin(2 * np.pi * freq_hz * t + phase)


def velocity_rms_mm_s(accel_amplitude: float, freq_hz: float) -> float:
    """a = A sin(ωt) integrates to v = -(A/ω) cos(ωt), whose RMS is A/ω/√2."""
    return accel_amplitude / (2 * math.pi * freq_hz) / math.sqrt(2) * 1000


@pytest.mark.parametrize("freq_hz", [12.5, 25.0, 50.0, 159.2, 400.0, 987.3])
@pytest.mark.parametrize("seconds", [1.0, 1.2345])  # 1.2345 s: no frequency fits whole cycles
def test_rms_velocity_of_a_sine_in_band(freq_hz: float, seconds: float) -> None:
    f = vibration_features(sine(3.0, freq_hz, seconds), FS)
    assert f.rms_velocity == pytest.approx(velocity_rms_mm_s(3.0, freq_hz), rel=0.02)
    assert f.dominant_freq_hz == pytest.approx(freq_hz, abs=FS / round(seconds * FS))


@pytest.mark.parametrize("freq_hz", [3.0, 1500.0, 2400.0])
def test_a_sine_outside_the_band_adds_nothing(freq_hz: float) -> None:
    f = vibration_features(sine(3.0, freq_hz), FS)
    assert f.rms_velocity < 1e-4 * velocity_rms_mm_s(3.0, freq_hz)
    assert f.rms_velocity < 1e-3


def test_gravity_offset_is_not_vibration() -> None:
    wave = sine(2.0, 50.0)
    with_gravity = vibration_features(wave + STANDARD_GRAVITY, FS).as_values()
    assert with_gravity == pytest.approx(vibration_features(wave, FS).as_values(), rel=1e-9)


def test_sine_shape_features() -> None:
    f = vibration_features(sine(STANDARD_GRAVITY, 80.0), FS)
    assert f.peak_accel_g == pytest.approx(1.0, rel=1e-3)
    assert f.peak_accel_m_s2 == pytest.approx(STANDARD_GRAVITY, rel=1e-3)
    assert f.rms_accel_m_s2 == pytest.approx(STANDARD_GRAVITY / math.sqrt(2), rel=1e-3)
    assert f.crest_factor == pytest.approx(math.sqrt(2), rel=0.01)
    assert f.kurtosis == pytest.approx(1.5, abs=0.02)


def test_gaussian_noise_has_kurtosis_3() -> None:
    f = vibration_features(np.random.default_rng(42).normal(0.0, 1.0, 20_000), FS)
    assert f.kurtosis == pytest.approx(3.0, abs=0.15)
    assert f.rms_accel_m_s2 == pytest.approx(1.0, rel=0.02)


def test_bands_split_the_velocity() -> None:
    wave = sine(1.0, 50.0) + sine(4.0, 300.0) + sine(6.0, 700.0) + sine(5.0, 2000.0)
    f = vibration_features(wave, FS)
    assert f.rms_velocity_10_100hz == pytest.approx(velocity_rms_mm_s(1.0, 50.0), rel=0.01)
    assert f.rms_velocity_100_500hz == pytest.approx(velocity_rms_mm_s(4.0, 300.0), rel=0.01)
    assert f.rms_velocity_500_1000hz == pytest.approx(velocity_rms_mm_s(6.0, 700.0), rel=0.01)
    bands = [f.rms_velocity_10_100hz, f.rms_velocity_100_500hz, f.rms_velocity_500_1000hz]
    assert f.rms_velocity == pytest.approx(math.hypot(*[b for b in bands if b is not None]), rel=1e-6)
    assert f.rms_accel_hf_m_s2 == pytest.approx(5.0 / math.sqrt(2), rel=0.01)  # 1 kHz to Nyquist


def test_dominant_frequency_is_the_strongest_velocity() -> None:
    # The 400 Hz tone has more acceleration but much less velocity than the 50 Hz one.
    f = vibration_features(sine(2.0, 50.0) + sine(6.0, 400.0), FS)
    assert f.dominant_freq_hz == 50.0


def test_hand_computed_class_ii_example() -> None:
    # Velocity RMS 4.5 mm/s at 50 Hz: velocity amplitude 4.5·√2 = 6.364 mm/s, acceleration
    # amplitude 2π·50 Hz·6.364 mm/s = 1.9993 m/s². Class II: B/C at 2.8, C/D at 7.1 → zone C.
    f = vibration_features(sine(1.9993, 50.0), FS, machine_class=MachineClass.CLASS_II)
    assert f.rms_velocity == pytest.approx(4.5, rel=0.005)
    assert f.iso_zone == "C"
    assert f.as_values()["iso_zone"] == 3.0
    assert vibration_features(sine(1.9993, 50.0), FS, machine_class=MachineClass.CLASS_IV).iso_zone == "B"


def test_zone_table_is_iso_10816_1() -> None:
    assert ZONE_LIMITS_MM_S[MachineClass.CLASS_I] == (0.71, 1.8, 4.5)
    assert ZONE_LIMITS_MM_S[MachineClass.CLASS_II] == (1.12, 2.8, 7.1)
    assert ZONE_LIMITS_MM_S[MachineClass.CLASS_III] == (1.8, 4.5, 11.2)
    assert ZONE_LIMITS_MM_S[MachineClass.CLASS_IV] == (2.8, 7.1, 18.0)
    assert set(ZONE_LIMITS_MM_S) == set(MachineClass)


@pytest.mark.parametrize("machine_class", list(MachineClass))
def test_zone_boundaries(machine_class: MachineClass) -> None:
    limits = ZONE_LIMITS_MM_S[machine_class]
    assert iso_zone(0.0, machine_class) == "A"
    for below, above, limit in zip("ABC", "BCD", limits, strict=True):
        assert iso_zone(limit * 0.99, machine_class) == below
        assert iso_zone(limit, machine_class) == below  # a boundary belongs to the better zone
        assert iso_zone(limit * 1.01, machine_class) == above
    assert iso_zone(1000.0, machine_class) == "D"


@pytest.mark.parametrize("bad", [-0.1, math.nan, math.inf])
def test_zone_refuses_impossible_velocities(bad: float) -> None:
    with pytest.raises(ValueError):
        iso_zone(bad, MachineClass.CLASS_I)


@given(
    st.sampled_from(list(MachineClass)),
    st.floats(0, 1e6, allow_nan=False),
    st.floats(0, 1e6, allow_nan=False),
)
def test_zone_is_monotonic(machine_class: MachineClass, a: float, b: float) -> None:
    low, high = sorted((a, b))
    assert iso_zone(low, machine_class) <= iso_zone(high, machine_class)


def test_values_are_contract_values() -> None:
    f = vibration_features(sine(2.0, 50.0) + np.random.default_rng(1).normal(0, 0.1, 5000), FS)
    values = f.as_values()
    assert set(values) == set(UNITS)
    assert all(VALUE_NAME.match(name) for name in values)
    assert not {"seq", "quality"} & set(values)
    assert all(type(v) is float and math.isfinite(v) for v in values.values())
    assert values["rms_velocity"] == f.rms_velocity


def test_flat_signal_has_no_shape() -> None:
    f = vibration_features(np.full(5000, 9.81), FS)
    assert f.rms_velocity == 0.0 and f.peak_accel_g == 0.0
    assert f.crest_factor is None and f.kurtosis is None and f.dominant_freq_hz is None
    assert f.iso_zone == "A"
    assert {"crest_factor", "kurtosis", "dominant_freq_hz"}.isdisjoint(f.as_values())


def test_bands_above_nyquist_are_left_out() -> None:
    f = vibration_features(sine(1.0, 50.0, fs=400.0), 400.0, band_hz=(10.0, 200.0))
    assert f.rms_velocity_500_1000hz is None and f.rms_accel_hf_m_s2 is None
    assert f.rms_velocity_100_500hz is not None  # cut at 200 Hz
    assert "rms_velocity_500_1000hz" not in f.as_values()


@pytest.mark.parametrize(
    ("accel", "fs", "band"),
    [
        (np.zeros(5000), 1500.0, (10.0, 1000.0)),  # the band reaches above Nyquist
        (np.zeros(2000), FS, (10.0, 1000.0)),  # 0.4 s is under five cycles of 10 Hz
        (np.zeros(5000), FS, (100.0, 10.0)),
        (np.zeros((2, 5000)), FS, (10.0, 1000.0)),
        (np.r_[np.zeros(4999), np.nan], FS, (10.0, 1000.0)),
        (np.r_[np.zeros(4999), np.inf], FS, (10.0, 1000.0)),
        (np.zeros(5000), 0.0, (10.0, 1000.0)),
        (np.r_[np.full(4999, 1.7e308), -1.7e308], FS, (10.0, 1000.0)),  # peak 3.4e308 overflows
    ],
)
def test_refuses_what_it_cannot_measure(accel: np.ndarray, fs: float, band: tuple[float, float]) -> None:
    with pytest.raises(ValueError):
        vibration_features(accel, fs, band_hz=band)


FINITE = st.floats(-1e300, 1e300, allow_nan=False, allow_infinity=False)


@settings(max_examples=150, deadline=None)
@given(arrays(np.float64, st.integers(100, 300), elements=FINITE))
def test_features_are_finite_for_any_finite_window(accel: np.ndarray) -> None:
    values = vibration_features(accel, 200.0, band_hz=(10.0, 100.0)).as_values()
    assert all(VALUE_NAME.match(name) and math.isfinite(v) for name, v in values.items())
    assert 1.0 <= values["iso_zone"] <= 4.0


@settings(max_examples=50, deadline=None)
@given(
    arrays(np.float64, 200, elements=st.floats(-1e3, 1e3, allow_nan=False)),
    st.integers(-20, 20),
)
def test_features_scale_with_the_signal(accel: np.ndarray, exponent: int) -> None:
    k = 2.0**exponent  # a power of two scales every float exactly
    base = vibration_features(accel, 200.0, band_hz=(10.0, 100.0))
    scaled = vibration_features(accel * k, 200.0, band_hz=(10.0, 100.0))
    assert scaled.rms_velocity == pytest.approx(k * base.rms_velocity, rel=1e-9, abs=1e-300)
    assert scaled.peak_accel_m_s2 == pytest.approx(k * base.peak_accel_m_s2, rel=1e-9, abs=1e-300)
    if base.kurtosis is None:  # a flat window stays flat
        assert scaled.kurtosis is None and scaled.crest_factor is None
    else:
        assert scaled.kurtosis == pytest.approx(base.kurtosis, rel=1e-9)
        assert scaled.crest_factor == pytest.approx(base.crest_factor, rel=1e-9)


def test_features_are_frozen() -> None:
    f = vibration_features(sine(1.0, 50.0), FS)
    assert isinstance(f, VibrationFeatures)
    with pytest.raises(AttributeError):
        f.rms_velocity = 0.0  # type: ignore[misc]
