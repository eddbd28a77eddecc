"""What one publisher may make the backend hold or write: sensor types, fields, sensors, reserved
names, repeated JSON keys, timestamps that are not RFC 3339, health reports of any size."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from moby.ingest.jsonkeys import may_repeat_keys, repeated_key
from moby.ingest.process import RESERVED, Accepted, Limit, Noted, Processor, Reason, Rejected
from moby.ingest.registry import HEALTH_EXTRA_CHARS, HEALTH_EXTRA_FIELDS, Registry, SensorRecord
from moby.metrics import Metrics
from tests.unit.test_process import (
    HEALTH_TOPIC,
    NOW_MS,
    STATUS_TOPIC,
    TOPIC,
    TS,
    batch,
    health,
    status,
    telemetry,
)


def make(registry: Registry | None = None, **kwargs: Any) -> Processor:
    return Processor(registry if registry is not None else Registry(), clock=lambda: NOW_MS / 1000, **kwargs)


def rejected(outcome: object, reason: Reason) -> Rejected:
    assert isinstance(outcome, Rejected), outcome
    assert outcome.reason is reason, outcome
    assert outcome.detail
    return outcome


# -- sensor types ---------------------------------------------------------------------------------
def test_many_made_up_sensor_types_are_refused_and_leave_nothing_behind() -> None:
    metrics = Metrics()
    proc = make(metrics=metrics)
    for i in range(500):
        out = rejected(proc.process(TOPIC, telemetry(sensor_type=f"made_up_{i}")), Reason.CARDINALITY)
    assert "MOBY_SENSOR_TYPES" in out.detail and "vibration" in out.detail
    assert proc.registry.all() == []
    assert metrics.cardinality_rejected.labels("sensor_type")._value.get() == 500
    for sensor_type in ("vibration", "noise", "temperature", "humidity"):
        assert isinstance(proc.process(TOPIC, telemetry(sensor_type=sensor_type)), Accepted)


def test_the_sensor_types_are_configured() -> None:
    proc = make(sensor_types=("pressure",))
    assert isinstance(proc.process(TOPIC, telemetry(sensor_type="pressure")), Accepted)
    rejected(proc.process(TOPIC, telemetry(sensor_type="vibration")), Reason.CARDINALITY)


@pytest.mark.parametrize(
    "sensor_type", ["moby_internal", "moby_sensor_status", "moby_internal_rejected", "moby_x"]
)
def test_the_backends_own_measurements_are_not_sensor_types(sensor_type: str) -> None:
    # Even when configured by mistake: the backend's metrics must not be fakeable.
    proc = make(sensor_types=("vibration", sensor_type))
    out = rejected(proc.process(TOPIC, telemetry(sensor_type=sensor_type)), Reason.SCHEMA)
    assert "moby_" in out.detail
    rejected(proc.process(STATUS_TOPIC, status(online=True, sensor_type=sensor_type)), Reason.SCHEMA)
    assert proc.registry.all() == []


# -- reserved value names -------------------------------------------------------------------------
@pytest.mark.parametrize("name", RESERVED)
def test_reserved_value_names(name: str) -> None:
    proc = make()
    out = rejected(proc.process(TOPIC, telemetry(values={"a": 1.0, name: 2.0})), Reason.SCHEMA)
    assert name in out.detail
    out = rejected(
        proc.process(
            TOPIC,
            batch(
                {"ts": TS, "seq": 1, "values": {"a": 1.0}}, {"ts": TS + 1, "seq": 2, "values": {name: 1.0}}
            ),
        ),
        Reason.SCHEMA,
    )
    assert "seq=2" in out.detail
    assert proc.registry.all() == []


def test_a_reserved_name_is_refused_after_other_names_are_known() -> None:
    proc = make()
    assert isinstance(proc.process(TOPIC, telemetry(values={"a": 1.0})), Accepted)
    rejected(proc.process(TOPIC, telemetry(values={"a": 1.0, "sensor_id": 1.0})), Reason.SCHEMA)
    assert proc.registry.fields_of("vibration") == {"a"}


# -- repeated JSON keys ---------------------------------------------------------------------------
def _raw(single: str = "") -> bytes:
    return (
        '{"schema": "moby.telemetry.v1", "sensor_type": "vibration", "ts": ' + str(TS) + ', "seq": 1, '
        '"values": {"a": 1.5}' + single + "}"
    ).encode()


REPEATS = {
    "sensor_id, last one right": _raw(', "sensor_id": "someone-else", "sensor_id": "s1"'),
    "two schemas": _raw().replace(
        b'"schema": "moby.telemetry.v1"', b'"schema": "x", "schema": "moby.telemetry.v1"'
    ),
    "a value twice": _raw().replace(b'{"a": 1.5}', b'{"a": 1.5, "a": 9.0}'),
    "a value twice, spaced": _raw().replace(b'{"a": 1.5}', b'{"a": 1.5, "a" : 9.0}'),
    "seq twice": _raw().replace(b'"seq": 1', b'"seq": 1, "seq": 2'),
    "values twice": _raw(', "values": {"b": 2.0}'),
    "inside an unknown field": _raw(', "extra": {"k": 1, "k": 2}'),
    "in a reading": (
        '{"schema": "moby.telemetry.v1", "sensor_type": "vibration", '
        '"readings": [{"ts": ' + str(TS) + ', "seq": 1, "seq": 2, "values": {"a": 1.0}}]}'
    ).encode(),
    "in a reading's values": (
        '{"schema": "moby.telemetry.v1", "sensor_type": "vibration", '
        '"readings": [{"ts": ' + str(TS) + ', "seq": 1, "values": {"a": 1.0, "a": 2.0}}]}'
    ).encode(),
    "with an RFC 3339 ts": _raw(', "sensor_id": "x", "sensor_id": "s1"').replace(
        b'"ts": %d' % TS, b'"ts": "2025-11-26T06:40:51.123Z"'
    ),
}


@pytest.mark.parametrize("payload", list(REPEATS.values()), ids=list(REPEATS))
def test_repeated_keys_are_refused(payload: bytes) -> None:
    proc = make()
    out = rejected(proc.process(TOPIC, payload), Reason.JSON)
    assert "twice" in out.detail
    assert proc.registry.all() == []


@pytest.mark.parametrize(
    ("topic", "payload"),
    [
        (STATUS_TOPIC, b'{"schema": "moby.status.v1", "online": true, "online": false}'),
        (STATUS_TOPIC, b'{"schema": "moby.status.v1", "online": true, "units": {"a": "x", "a": "y"}}'),
        (HEALTH_TOPIC, health(errors={"e": 1})[:-1] + b', "buffer_depth": 5}'),
        (HEALTH_TOPIC, health()[:-1] + b', "errors": {"e": 1, "e": 2}}'),
    ],
)
def test_repeated_keys_in_status_and_health_are_refused(topic: str, payload: bytes) -> None:
    rejected(make().process(topic, payload), Reason.JSON)


NOT_REPEATS = {
    "colons in strings": _raw(', "note": "a:b \\":\\" c"'),
    "RFC 3339 ts": _raw().replace(b'"ts": %d' % TS, b'"ts": "2025-11-26T06:40:51.123Z"'),
    "pretty-printed": json.dumps(json.loads(_raw()), indent=2).encode(),
    "spaced colons": json.dumps(json.loads(_raw()), separators=(" , ", " : ")).encode(),
    "same key in two objects": _raw(', "extra": {"values": 1, "a": {"a": 2}}'),
}


@pytest.mark.parametrize("payload", list(NOT_REPEATS.values()), ids=list(NOT_REPEATS))
def test_no_false_repeats(payload: bytes) -> None:
    assert isinstance(make().process(TOPIC, payload), Accepted)


_KEYS = st.sampled_from(["a", "b", "ts", "seq", "values", "schema", "sensor_type", "x:y", 'q"'])
_SPACE = st.sampled_from(["", " ", "\n", "\t "])


@st.composite
def json_objects(draw: st.DrawFn, depth: int = 0) -> str:
    """JSON object texts whose keys may repeat, with whitespace anywhere it is allowed."""
    members = []
    for key in draw(st.lists(_KEYS, max_size=5)):
        value = draw(
            st.one_of(
                st.integers(-5, 5).map(str),
                st.sampled_from(['"s"', '"a:b"', '"\\":"', "[]", "null"]),
                *([json_objects(depth + 1)] if depth < 2 else []),
            )
        )
        s1, s2, s3 = draw(_SPACE), draw(_SPACE), draw(_SPACE)
        members.append(f"{s1}{json.dumps(key)}{s2}:{s3}{value}")
    return "{" + ",".join(members) + draw(_SPACE) + "}"


def _distinct_keys(value: Any) -> int:
    if isinstance(value, dict):
        return len(value) + sum(_distinct_keys(v) for v in value.values())
    if isinstance(value, list):
        return sum(_distinct_keys(v) for v in value)
    return 0


def _has_repeats(text: str) -> bool:
    found = False

    def hook(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        nonlocal found
        found = found or len({k for k, _ in pairs}) != len(pairs)
        return dict(pairs)

    json.loads(text, object_pairs_hook=hook)
    return found


@settings(max_examples=500, deadline=None)
@given(json_objects())
def test_the_cheap_count_never_misses_a_repeat(text: str) -> None:
    payload = text.encode()
    repeats = _has_repeats(text)
    assert (repeated_key(payload) is not None) == repeats
    # Given the exact number of distinct keys (the best lower bound), the cheap test may only
    # say "maybe" when there is none, never "no" when there is one.
    if repeats:
        assert may_repeat_keys(payload, _distinct_keys(json.loads(text)))


# -- RFC 3339, exactly ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "ts",
    [
        "20251126T064051Z",  # ISO 8601 basic format
        "2025-W48-3T06:40:51+00:00",  # ISO week date
        "2025-330T06:40:51Z",  # ISO ordinal date
        "2025-11-26T06:40Z",  # no seconds
        "2025-11-26T06:40:51",  # no offset
        "2025-11-26T06:40:51+0000",  # offset without a colon
        "2025-11-26T06:40:51+00",  # offset without minutes
        "2025-11-26 06:40:51Z",  # a space for the T
        "2025-11-26T06:40:51.Z",  # a dot without digits
        "2025-11-26T06:40:51,5Z",  # a decimal comma
        "+2025-11-26T06:40:51Z",  # an expanded year
        "2025-11-26T24:00:00Z",  # hour 24
        "2025-11-26T06:40:60Z",  # a leap second that is not at 23:59 UTC
        "2025-02-29T06:40:51Z",  # no such day
        "2025-11-26T06:40:51+24:00",  # offset out of range
        "２０２５-11-26T06:40:51Z",  # other digits
        "2025-11-26T06:40:51Z\n",
    ],
)
def test_timestamps_that_are_not_rfc3339_are_refused(ts: str) -> None:
    rejected(make().process(TOPIC, telemetry(ts=ts)), Reason.SCHEMA)


@pytest.mark.parametrize(
    ("ts", "ms"),
    [
        ("2025-11-26T06:40:51.123Z", TS),
        ("2025-11-26t06:40:51.123z", TS),  # the RFC's ABNF is case-insensitive
        ("2025-11-26T15:40:51.123+09:00", TS),
        ("2025-11-25T20:40:51.123-10:00", TS),
        ("2025-11-26T06:40:51.1239999Z", TS),  # below 1 ms: truncated
        ("2025-11-26T06:40:51Z", TS - 123),
        ("2025-11-26T06:40:51.123-00:00", TS),  # "unknown local offset" is UTC
    ],
)
def test_rfc3339_timestamps(ts: str, ms: int) -> None:
    out = make().process(TOPIC, telemetry(ts=ts))
    assert isinstance(out, Accepted), out
    assert out.lines.endswith(b" %d\n" % ms)


def test_a_leap_second_is_the_next_second() -> None:
    from moby.schema.payloads import _rfc3339_to_ms

    assert _rfc3339_to_ms("2016-12-31T23:59:60Z") == _rfc3339_to_ms("2017-01-01T00:00:00Z")
    assert _rfc3339_to_ms("2017-01-01T08:59:60+09:00") == _rfc3339_to_ms("2017-01-01T00:00:00Z")


# -- budgets -----------------------------------------------------------------------------------------
def test_fields_per_measurement_are_budgeted_all_or_nothing() -> None:
    metrics = Metrics()
    proc = make(Registry(max_fields_per_measurement=5), metrics=metrics)
    assert isinstance(proc.process(TOPIC, telemetry(values={f"v{i}": 1.0 for i in range(4)})), Accepted)
    out = rejected(proc.process(TOPIC, telemetry(values={"v0": 1.0, "x": 1.0, "y": 1.0})), Reason.CARDINALITY)
    assert "MOBY_MAX_FIELDS_PER_MEASUREMENT" in out.detail and "'vibration'" in out.detail
    assert proc.registry.fields_of("vibration") == {"v0", "v1", "v2", "v3"}
    assert isinstance(proc.process(TOPIC, telemetry(values={"x": 1.0})), Accepted)  # the fifth
    rejected(
        proc.process(
            TOPIC,
            batch({"ts": TS, "seq": 1, "values": {"v0": 1.0}}, {"ts": TS, "seq": 2, "values": {"z": 1}}),
        ),
        Reason.CARDINALITY,
    )
    # Each measurement has a budget of its own.
    assert isinstance(proc.process(TOPIC, telemetry(sensor_type="noise", values={"z": 1.0})), Accepted)
    assert metrics.cardinality_rejected.labels("fields_per_measurement")._value.get() == 2
    assert proc.registry.take_dirty_fields() == [
        *(("vibration", f"v{i}") for i in range(4)),
        ("vibration", "x"),
        ("noise", "z"),
    ]


def test_a_rejected_reading_teaches_no_field() -> None:
    proc = make()
    rejected(proc.process(TOPIC, telemetry(ts=0, values={"new": 1.0})), Reason.TIME)
    rejected(proc.process(TOPIC, _raw().replace(b'{"a": 1.5}', b'{"a": 1.5, "a": 2.0}')), Reason.JSON)
    assert proc.registry.fields_of("vibration") == set()


def test_many_made_up_sensor_ids_stay_bounded() -> None:
    metrics = Metrics()
    proc = make(Registry(max_sensors_per_factory=100, max_factories=3, max_sensors=250), metrics=metrics)
    for i in range(2000):
        proc.process(f"moby/f1/s{i}/telemetry", telemetry())
    assert len(proc.registry) == 100
    out = rejected(proc.process("moby/f1/new/telemetry", telemetry()), Reason.CARDINALITY)
    assert "MOBY_MAX_SENSORS_PER_FACTORY" in out.detail
    # Known sensors carry on; other factories have budgets of their own.
    assert isinstance(proc.process("moby/f1/s5/telemetry", telemetry()), Accepted)
    for i in range(200):
        proc.process(f"moby/f2/s{i}/health", health())
        proc.process(f"moby/f3/s{i}/status", status(online=True))
    assert len(proc.registry) == 250  # the total bound
    out = rejected(proc.process("moby/f4/s1/telemetry", telemetry()), Reason.CARDINALITY)
    assert "MOBY_MAX_" in out.detail
    assert len(proc.registry) == 250
    assert len(proc._prefixes) <= 2 * proc.registry.max_sensors
    counted = {limit: metrics.cardinality_rejected.labels(limit.value)._value.get() for limit in Limit}
    assert counted[Limit.SENSORS_PER_FACTORY] == 1901 and counted[Limit.SENSORS] >= 1


def test_factories_are_budgeted() -> None:
    proc = make(Registry(max_factories=2))
    for factory in ("a", "b"):
        assert isinstance(proc.process(f"moby/{factory}/s1/telemetry", telemetry()), Accepted)
    out = rejected(proc.process("moby/c/s1/telemetry", telemetry()), Reason.CARDINALITY)
    assert "MOBY_MAX_FACTORIES" in out.detail
    assert isinstance(proc.process("moby/a/s2/telemetry", telemetry()), Accepted)


def test_saved_sensors_past_a_lowered_budget_are_kept() -> None:
    records = [SensorRecord("f1", f"s{i}") for i in range(5)]
    proc = make(Registry(records, max_sensors_per_factory=2))
    assert isinstance(proc.process("moby/f1/s4/telemetry", telemetry()), Accepted)
    rejected(proc.process("moby/f1/s9/telemetry", telemetry()), Reason.CARDINALITY)


# -- what is kept of health reports --------------------------------------------------------------------
def test_health_keeps_a_bounded_record() -> None:
    proc = make()
    extras = {f"x{i}": i for i in range(100)}
    payload = health(
        note="n" * 200_000, nested={"deep": list(range(1000))}, nothing=None, flag=True, **extras
    )
    assert isinstance(proc.process(HEALTH_TOPIC, payload), Noted)
    record = proc.registry.get("f1", "s1")
    assert record is not None and record.health is not None
    kept = record.health
    assert kept["note"] == "n" * HEALTH_EXTRA_CHARS
    assert "nested" not in kept and "nothing" not in kept
    assert len(set(kept) - {"ts", "uptime_s", "buffer_depth", "errors"}) == HEALTH_EXTRA_FIELDS
    assert len(json.dumps(kept)) < 2000


# -- online: from what arrives, not only from the retained status ----------------------------------------
def test_telemetry_or_health_after_an_old_offline_status_is_online() -> None:
    proc = make()
    proc.process(STATUS_TOPIC, status(online=False))  # an old retained Last Will
    record = proc.registry.get("f1", "s1")
    assert record is not None and not record.is_online(NOW_MS)
    proc.process(TOPIC, telemetry())
    assert record.is_online(NOW_MS) and record.online is False  # it still reports what status said
    proc.process(STATUS_TOPIC, status(online=False))  # a fresh death
    assert not record.is_online(NOW_MS)
    proc.process(HEALTH_TOPIC, health())
    assert record.is_online(NOW_MS)
    assert not record.is_online(NOW_MS + 301_000)  # silent past the inactivity timeout


def test_a_record_saved_offline_by_an_older_version_stays_offline() -> None:
    old = {"factory_id": "f1", "sensor_id": "s1", "online": False, "last_seen_ms": NOW_MS}
    assert not SensorRecord.from_dict(old).is_online(NOW_MS)
    assert SensorRecord.from_dict({**old, "online": True}).is_online(NOW_MS)


def test_gateways_are_apart() -> None:
    proc = make()
    proc.process("moby/f1/sim-gw-00/status", status(online=True, gateway=True, model="moby-simulate"))
    proc.process(TOPIC, telemetry())
    gateway = proc.registry.get("f1", "sim-gw-00")
    assert gateway is not None and gateway.gateway and "gateway" not in gateway.metadata
    assert proc.registry.sensor_count == 1
    rejected(proc.process(STATUS_TOPIC, status(online=True, gateway="yes")), Reason.SCHEMA)
