"""The simulator's pieces: who gets which fault, what each fault does, bad messages, message cuts."""

from __future__ import annotations

import math

import pytest

from moby.edge.buffer import BufferedReading
from moby.edge.drivers import SimulatedVibration
from moby.edge.faults import (
    MALFORMED_KINDS,
    OUT_OF_RANGE_VALUE,
    Fault,
    FaultPlan,
    SensorFault,
    assign,
    how_many,
    malformed_payload,
)
from moby.edge.features import ZONES, iso_zone
from moby.edge.fleet import CachedVibration, make_fleet, sample, sensor_id
from moby.edge.gateway import chunks
from moby.ingest.process import Processor, Rejected
from moby.ingest.registry import Registry
from moby.schema import MAX_READINGS


def test_fractions_and_counts() -> None:
    assert how_many(0.1, 2000) == 200
    assert how_many(3, 2000) == 3
    assert how_many(0, 2000) == 0


def test_assignment_is_disjoint_and_repeatable() -> None:
    plan = FaultPlan(flatline=0.1, spike=5, out_of_range=0.05, dropout=2, skew_s=30, skew=0.2)
    faults = assign(100, plan, seed=7)
    assert faults == assign(100, plan, seed=7)
    assert faults != assign(100, plan, seed=8)
    counts = {f: faults.count(f) for f in Fault}
    assert counts == {
        Fault.FLATLINE: 10,
        Fault.SPIKE: 5,
        Fault.OUT_OF_RANGE: 5,
        Fault.DROPOUT: 2,
        Fault.SKEW: 20,
    }
    assert faults.count(None) == 58
    assert assign(10, FaultPlan(skew=0.5), seed=1) == [None] * 10  # a skew of 0 s is no fault


def test_too_many_faults_or_bad_switches_are_refused() -> None:
    with pytest.raises(ValueError, match="more faulty sensors"):
        assign(10, FaultPlan(flatline=6, dropout=5), seed=1)
    with pytest.raises(ValueError):
        FaultPlan(cut_every_s=10, cut_for_s=10)
    with pytest.raises(ValueError):
        FaultPlan(spike_prob=2)


def test_what_each_fault_does() -> None:
    plan = FaultPlan(spike_prob=0.5, dropout_prob=0.5, skew_s=-90)
    reading = {"temperature": 40.0}

    flat = SensorFault(Fault.FLATLINE, plan, 1)
    assert [flat.apply({"temperature": t}) for t in (40.0, 41.0, 42.0)] == [{"temperature": 40.0}] * 3

    spike = SensorFault(Fault.SPIKE, plan, 1)
    out = [spike.apply(reading) for _ in range(400)]
    assert all(o in ({"temperature": 40.0}, {"temperature": 400.0}) for o in out)
    assert 150 < out.count({"temperature": 400.0}) < 250

    assert SensorFault(Fault.OUT_OF_RANGE, plan, 1).apply({"a": 1.0, "b": 2.0}) == {
        "a": OUT_OF_RANGE_VALUE,
        "b": OUT_OF_RANGE_VALUE,
    }
    dropout = SensorFault(Fault.DROPOUT, plan, 1)
    assert 150 < sum(dropout.apply(reading) is None for _ in range(400)) < 250

    skew = SensorFault(Fault.SKEW, plan, 1)
    assert skew.apply(reading) == reading and skew.skew_ms == -90_000
    assert SensorFault(None, plan, 1).skew_ms == 0


def test_a_dropout_takes_no_seq() -> None:
    plan = FaultPlan(dropout=1, dropout_prob=1.0)
    fleet = make_fleet("f", 4, plan, seed=1, vib_refresh=10)
    readings = sample(fleet, 1_000)
    assert len(readings) == 3
    assert {r.sensor_key for r in readings} == {s.key for s in fleet if s.fault.fault is None}


@pytest.mark.parametrize("kind", MALFORMED_KINDS)
def test_the_backend_dead_letters_each_malformed_kind_with_its_reason(kind: str) -> None:
    processor = Processor(Registry())
    outcome = processor.process(
        "moby/f1/tem-0001/telemetry", malformed_payload(kind, "temperature", "tem-0001")
    )
    assert isinstance(outcome, Rejected)
    assert outcome.reason.value == kind


def test_fleet_naming_and_types() -> None:
    fleet = make_fleet("f1", 8, FaultPlan(), seed=1, vib_refresh=10)
    assert [s.sensor_id for s in fleet] == [sensor_id(i) for i in range(8)]
    assert [s.sensor_type for s in fleet[:4]] == ["vibration", "temperature", "humidity", "noise"]
    assert fleet[5].machine_id == "m-0002" and fleet[5].line_id == "line-1"
    values = fleet[0].driver.read()
    assert "peak_accel_g" in values and "peak_accel" not in values  # the features' names everywhere


def test_cached_vibration_refreshes_every_n_reads_and_keeps_the_zone_consistent() -> None:
    driver = SimulatedVibration(sample_rate_hz=4096.0, window_s=0.5, resonance_hz=1500.0, seed=3)
    calls = 0
    real_read = driver.read

    def counting_read() -> dict[str, float]:
        nonlocal calls
        calls += 1
        return real_read()

    driver.read = counting_read  # type: ignore[method-assign]
    cached = CachedVibration(driver, refresh=5, offset=0, seed=1)
    reads = [cached.read() for _ in range(20)]
    assert calls == 4
    first = reads[0]
    for values in reads[1:5]:
        factor = values["rms_velocity"] / first["rms_velocity"]
        assert 0.98 <= factor <= 1.02
        assert math.isclose(values["peak_accel_g"] / first["peak_accel_g"], factor)
        assert values["crest_factor"] == first["crest_factor"]
        assert values["iso_zone"] == ZONES.index(iso_zone(values["rms_velocity"], driver.machine_class)) + 1


def test_chunks_fit_one_message_each() -> None:
    rows = [BufferedReading(i, "f/s", i, i, b'{"ts":1,"seq":1,"values":{"x":1.0}}') for i in range(2500)]
    runs = list(chunks(rows))
    assert [len(r) for r in runs] == [MAX_READINGS, MAX_READINGS, 500]
    assert [r.id for run in runs for r in run] == list(range(2500))
    big = [BufferedReading(i, "f/s", i, i, b"x" * 100_000) for i in range(5)]
    assert [len(r) for r in chunks(big)] == [2, 2, 1]
