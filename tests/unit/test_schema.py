"""The contract's payload models and topic grammar (src/moby/schema/)."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from moby.schema import (
    HEALTH,
    ID_PATTERN,
    ID_RE,
    STATUS,
    TELEMETRY,
    Quality,
    Telemetry,
    Topic,
    TopicError,
    TopicKind,
    parse_topic,
    subscription,
)
from moby.schema.jsonschema import SCHEMAS, render

DOCS_SCHEMA = Path(__file__).resolve().parents[2] / "docs" / "schema"
TS = 1764139251123  # 2025-11-26T06:40:51.123Z


def single(**overrides: Any) -> dict[str, Any]:
    msg: dict[str, Any] = {
        "schema": "moby.telemetry.v1",
        "sensor_type": "vibration",
        "ts": TS,
        "seq": 42,
        "values": {"rms_velocity": 2.31, "peak_accel": 0.82, "temperature": 41.5},
    }
    msg.update(overrides)
    return {k: v for k, v in msg.items() if v is not ...}


def batch(*readings: dict[str, Any], **overrides: Any) -> dict[str, Any]:
    msg: dict[str, Any] = {
        "schema": "moby.telemetry.v1",
        "sensor_type": "vibration",
        "readings": list(readings)
        or [
            {"ts": TS, "seq": 42, "values": {"rms_velocity": 2.31}},
            {"ts": TS + 1000, "seq": 43, "values": {"rms_velocity": 2.35}},
        ],
    }
    msg.update(overrides)
    return msg


def parse(payload: dict[str, Any] | bytes) -> Telemetry:
    raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()  # ints > 2^64 too
    return TELEMETRY.validate_json(raw)


def rejected(payload: dict[str, Any] | bytes) -> ValidationError:
    with pytest.raises(ValidationError) as info:
        parse(payload)
    return info.value


# -- valid telemetry ----------------------------------------------------------------------------
def test_single_reading_from_the_contract() -> None:
    msg = parse(single())
    assert msg.readings is None
    assert msg.sensor_type == "vibration"
    [reading] = msg.iter_readings()
    assert reading.ts == TS
    assert reading.seq == 42
    assert reading.values == {"rms_velocity": 2.31, "peak_accel": 0.82, "temperature": 41.5}
    assert reading.quality is Quality.GOOD


def test_batch_from_the_contract() -> None:
    msg = parse(batch())
    assert msg.readings is not None
    assert [(r.ts, r.seq, r.values) for r in msg.iter_readings()] == [
        (TS, 42, {"rms_velocity": 2.31}),
        (TS + 1000, 43, {"rms_velocity": 2.35}),
    ]


@pytest.mark.parametrize(
    "ts",
    [
        "2025-11-26T06:40:51.123Z",
        "2025-11-26T06:40:51.123+00:00",
        "2025-11-26T15:40:51.123+09:00",
        "2025-11-25T22:40:51.123-08:00",
    ],
)
def test_rfc3339_timestamps_become_epoch_ms(ts: str) -> None:
    assert parse(single(ts=ts)).iter_readings()[0].ts == TS
    assert parse(batch({"ts": ts, "seq": 1, "values": {"a": 1}})).iter_readings()[0].ts == TS


EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@given(
    st.datetimes(min_value=datetime(1970, 1, 2), max_value=datetime(9999, 1, 1)),
    st.integers(min_value=-12 * 60, max_value=14 * 60),
)
def test_rfc3339_with_any_offset_is_the_same_instant(moment: datetime, offset_min: int) -> None:
    # Whole seconds: the offset arithmetic is what is checked here (milliseconds: see below).
    moment = moment.replace(microsecond=0, tzinfo=UTC)
    local = moment.astimezone(timezone(timedelta(minutes=offset_min)))
    text = local.isoformat().replace("+00:00", "Z")
    assert parse(single(ts=text)).iter_readings()[0].ts == (moment - EPOCH) // timedelta(milliseconds=1)


@pytest.mark.parametrize(
    ("text", "ms"),
    [
        ("1970-01-01T00:00:00.001Z", 1),
        ("2025-11-26T06:40:51.999Z", 1764139251999),
        ("2025-11-26T06:40:51.123999Z", 1764139251123),  # sub-millisecond digits are cut, not rounded
        ("2025-11-26T06:40:51.001+14:00", 1764088851001),
        ("2025-11-26T06:40:51.100-12:00", 1764182451100),
    ],
)
def test_rfc3339_milliseconds(text: str, ms: int) -> None:
    assert parse(single(ts=text)).iter_readings()[0].ts == ms


@pytest.mark.parametrize(
    ("text", "ms"),
    [("2038-02-01T00:00:00.002Z", 2148595200002), ("2106-11-21T10:18:41.117Z", 4319777921117)],
)
def test_rfc3339_milliseconds_are_exact(text: str, ms: int) -> None:
    # Found by hypothesis: float seconds * 1000 used to land 1 ms short. Valid for the model
    # (ts < 2^53 ms); health and status timestamps have no time window, so they are stored as is.
    assert parse(single(ts=text)).iter_readings()[0].ts == ms


def test_ints_are_accepted_as_values_and_kept_as_numbers() -> None:
    reading = parse(single(values={"a": 2, "b": -0.5, "c": 1e300})).iter_readings()[0]
    assert reading.values == {"a": 2.0, "b": -0.5, "c": 1e300}


def test_quality_and_identity_echoes() -> None:
    msg = parse(single(quality="bad", factory_id="f1", sensor_id="s-1.a_b"))
    assert msg.iter_readings()[0].quality is Quality.BAD
    assert (msg.factory_id, msg.sensor_id) == ("f1", "s-1.a_b")


def test_unknown_top_level_fields_are_ignored() -> None:
    assert parse(single(added_in_v1_1={"x": 1})).iter_readings()[0].seq == 42


def test_limits_are_inclusive() -> None:
    values = {f"v{i}": float(i) for i in range(100)}
    assert len(parse(single(values=values)).iter_readings()[0].values) == 100
    readings = [{"ts": TS + i, "seq": i, "values": {"a": 1}} for i in range(1000)]
    assert len(parse(batch(*readings)).iter_readings()) == 1000
    assert parse(single(seq=2**63 - 1)).iter_readings()[0].seq == 2**63 - 1
    assert parse(single(seq=0)).iter_readings()[0].seq == 0
    assert parse(single(sensor_type="a" + "b" * 31)).sensor_type == "a" + "b" * 31


# -- rejected telemetry -------------------------------------------------------------------------
_BASE = b'{"schema":"moby.telemetry.v1","sensor_type":"vibration","ts":1764139251123,"seq":1,'


@pytest.mark.parametrize("literal", [b"NaN", b"Infinity", b"-Infinity", b"1e400", b"-1e400"])
def test_non_finite_numbers_are_rejected(literal: bytes) -> None:
    rejected(_BASE + b'"values":{"a":' + literal + b"}}")
    reading = b'{"ts":1764139251123,"seq":1,"values":{"a":' + literal + b"}}"
    rejected(b'{"schema":"moby.telemetry.v1","sensor_type":"vibration","readings":[' + reading + b"]}")


@pytest.mark.parametrize("value", [True, False, "2.5", "1", None, [1.0], {"x": 1.0}])
def test_values_must_be_numbers(value: Any) -> None:
    rejected(single(values={"a": value}))


@pytest.mark.parametrize("count", [0, 101])
def test_value_count_bounds(count: int) -> None:
    rejected(single(values={f"v{i}": 1.0 for i in range(count)}))


@pytest.mark.parametrize("count", [0, 1001])
def test_reading_count_bounds(count: int) -> None:
    readings = [{"ts": TS + i, "seq": i, "values": {"a": 1}} for i in range(count)]
    rejected(batch(*readings) if readings else {**batch(), "readings": []})


@pytest.mark.parametrize(
    "name",
    ["A", "1a", "_a", "a-b", "a.b", "a b", "a\n", "", "é", "a" * 65, "rms Velocity", "a,b", "a=b"],
)
def test_bad_value_names(name: str) -> None:
    rejected(single(values={name: 1.0}))


@pytest.mark.parametrize("name", ["seq", "quality"])
def test_reserved_value_names_are_left_to_the_processor(name: str) -> None:
    # The pipeline writes `seq` and `quality` itself; moby.ingest.process refuses values that
    # take those names (see tests/unit/test_process.py), the model only checks the shape.
    assert name in parse(single(values={"a": 1.0, name: 2.0})).iter_readings()[0].values


@pytest.mark.parametrize("sensor_type", ["Vibration", "1x", "_x", "x-y", "x y", "a" * 33, "", "x\n", None, 5])
def test_bad_sensor_type(sensor_type: Any) -> None:
    rejected(single(sensor_type=sensor_type))


@pytest.mark.parametrize(
    "ts",
    [
        "2025-11-26T06:40:51.123",  # no time zone
        "2025-11-26T06:40:51",
        "2025-11-26",
        "yesterday",
        "",
        "2025-11-26T06:40:51Z" + " " * 60,  # too long
        1.5e12,  # a float, not an integer
        True,
        "1764139251123",  # a string number
        -1,
        2**53,
        None,
    ],
)
def test_bad_timestamps(ts: Any) -> None:
    rejected(single(ts=ts))
    rejected(batch({"ts": ts, "seq": 1, "values": {"a": 1}}))


@pytest.mark.parametrize("seq", [-1, 2**63, 2**64, 1.0, "1", True, None])
def test_bad_seq(seq: Any) -> None:
    rejected(single(seq=seq))
    rejected(batch({"ts": TS, "seq": seq, "values": {"a": 1}}))


@pytest.mark.parametrize("extra", [{"values": {"a": 1.0}}, {"ts": TS}, {"seq": 1}])
def test_batch_cannot_carry_single_fields_too(extra: dict[str, Any]) -> None:
    error = rejected({**batch(), **extra})
    assert "readings" in str(error)


@pytest.mark.parametrize(
    "schema", ["moby.telemetry.v2", "moby.health.v1", "moby.status.v1", "MOBY.TELEMETRY.V1", "", None]
)
def test_wrong_schema_string(schema: Any) -> None:
    rejected(single(schema=schema))
    rejected(batch(schema=schema))


def test_missing_fields() -> None:
    for key in ("schema", "sensor_type", "ts", "seq", "values"):
        rejected(single(**{key: ...}))


@pytest.mark.parametrize("quality", ["GOOD", "ok", "", 1, None])
def test_bad_quality(quality: Any) -> None:
    rejected(single(quality=quality))


@pytest.mark.parametrize("key", ["sensor_id", "factory_id"])
@pytest.mark.parametrize("value", ["a b", "", "-a", "a" * 65, "x/y", "+", "#", 5])
def test_identity_echoes_must_be_ids(key: str, value: Any) -> None:
    rejected(single(**{key: value}))


@pytest.mark.parametrize("payload", [b"[]", b"[{}]", b'"x"', b"1", b"null", b"{}", b"", b"{", b"\xff"])
def test_not_an_object(payload: bytes) -> None:
    rejected(payload)


# -- health and status --------------------------------------------------------------------------
def test_health_and_status_examples() -> None:
    health = HEALTH.validate_json(
        orjson.dumps(
            {
                "schema": "moby.health.v1",
                "ts": "2025-11-26T06:40:51.123Z",
                "uptime_s": 12.5,
                "buffer_depth": 0,
                "battery_pct": 80,
                "rssi_dbm": -70,
                "errors": {"i2c": 2},
                "firmware": "1.2.3",
            }
        )
    )
    assert health.ts == TS and health.errors == {"i2c": 2}
    status = STATUS.validate_json(
        orjson.dumps(
            {
                "schema": "moby.status.v1",
                "online": True,
                "ts": TS,
                "sensor_type": "vibration",
                "model": "VX-1",
                "firmware": "1.2.3",
                "line_id": "L1",
                "machine_id": "M-7",
                "units": {"rms_velocity": "mm/s"},
            }
        )
    )
    assert (status.line_id, status.machine_id, status.units) == ("L1", "M-7", {"rms_velocity": "mm/s"})
    will = STATUS.validate_json(b'{"schema": "moby.status.v1", "online": false}')
    assert will.online is False and will.line_id is None


@pytest.mark.parametrize(
    "change",
    [
        {"buffer_depth": -1},
        {"buffer_depth": 1.5},
        {"uptime_s": -1},
        {"uptime_s": "NaN"},
        {"battery_pct": 101},
        {"rssi_dbm": 51},
        {"errors": {"x": -1}},
        {"ts": "2025-11-26T06:40:51"},
        {"schema": "moby.status.v1"},
    ],
)
def test_bad_health(change: dict[str, Any]) -> None:
    base = {"schema": "moby.health.v1", "ts": TS, "uptime_s": 1.0, "buffer_depth": 0}
    HEALTH.validate_python(base)
    with pytest.raises(ValidationError):
        HEALTH.validate_json(orjson.dumps({**base, **change}))


@pytest.mark.parametrize(
    "change",
    [{"online": None}, {"line_id": "a b"}, {"machine_id": "a\n"}, {"units": {"Bad": "x"}}, {"schema": "x"}],
)
def test_bad_status(change: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        STATUS.validate_json(orjson.dumps({"schema": "moby.status.v1", "online": True, **change}))


@pytest.mark.parametrize("online", ["yes", "false", 1])
def test_status_online_must_be_a_json_bool(online: Any) -> None:
    with pytest.raises(ValidationError):
        STATUS.validate_json(orjson.dumps({"schema": "moby.status.v1", "online": online}))


# -- topics -------------------------------------------------------------------------------------
ids = st.from_regex(ID_RE, fullmatch=True)


@given(ids, ids, st.sampled_from(list(TopicKind)))
def test_topics_round_trip(factory_id: str, sensor_id: str, kind: TopicKind) -> None:
    topic = Topic.build(factory_id, sensor_id, kind)
    text = str(topic)
    assert text == f"moby/{factory_id}/{sensor_id}/{kind.value}"
    assert parse_topic(text) == topic


@given(st.text(max_size=70).filter(lambda s: "/" not in s and not re.fullmatch(ID_PATTERN[1:-1], s)))
def test_non_ids_are_rejected(bad: str) -> None:
    for topic in (f"moby/{bad}/s1/telemetry", f"moby/f1/{bad}/telemetry"):
        with pytest.raises(TopicError):
            parse_topic(topic)
    with pytest.raises(TopicError):
        Topic.build(bad, "s1", TopicKind.TELEMETRY)


@pytest.mark.parametrize(
    "topic",
    [
        "moby/f1/s1/telemetry",
        "moby/F-1.a_b/0/status",
        "moby/f1/s1/health",
        "moby/f1/s1/cmd",
        f"moby/{'a' * 64}/{'Z' * 64}/telemetry",
    ],
)
def test_valid_topics(topic: str) -> None:
    assert str(parse_topic(topic)) == topic


@pytest.mark.parametrize(
    "topic",
    [
        "moby/f1/s1",
        "moby/f1/s1/telemetry/extra",
        "moby/f1/s1/telemetry/",
        "/moby/f1/s1/telemetry",
        "MOBY/f1/s1/telemetry",
        "other/f1/s1/telemetry",
        "moby/f1/s1/TELEMETRY",
        "moby/f1/s1/data",
        "moby//s1/telemetry",
        "moby/f1//telemetry",
        "moby/+/s1/telemetry",
        "moby/f1/#",
        "moby/f1/+/telemetry",
        f"moby/{'a' * 65}/s1/telemetry",
        "moby/f1/-s1/telemetry",
        "moby/f1/.s1/telemetry",
        "moby/f1/../telemetry",
        "moby/f1/s 1/telemetry",
        "moby/f1/s,1/telemetry",
        "moby/f1/s=1/telemetry",
        "moby/f1/s'1/telemetry",
        'moby/f1/s"1/telemetry',
        "moby/f1/s\n1/telemetry",
        "moby/f1/sé/telemetry",
        "",
    ],
)
def test_invalid_topics(topic: str) -> None:
    with pytest.raises(TopicError):
        parse_topic(topic)


@pytest.mark.parametrize("topic", ["moby/f1/s1\n/telemetry", "moby/f1\n/s1/status", "moby/f1/s1/status\n"])
def test_ids_with_a_trailing_newline_are_rejected(topic: str) -> None:
    # re.match with "$" would accept "s1\n": the whole ID must match.
    with pytest.raises(TopicError):
        parse_topic(topic)
    with pytest.raises(TopicError):
        Topic.build("f1\n", "s1", TopicKind.TELEMETRY)


def test_kinds_and_subscriptions() -> None:
    assert [k.qos for k in TopicKind] == [1, 0, 1, 2]
    assert subscription(TopicKind.TELEMETRY) == "moby/+/+/telemetry"
    assert subscription(TopicKind.STATUS, "g") == "$share/g/moby/+/+/status"


# -- JSON Schema files --------------------------------------------------------------------------
def test_published_json_schemas_are_fresh() -> None:
    on_disk = {p.name for p in DOCS_SCHEMA.glob("*.schema.json")}
    expected = {f"{name}.schema.json" for name in SCHEMAS}
    assert on_disk == expected, f"docs/schema/ holds {sorted(on_disk)}; run `make schema`"
    for name in SCHEMAS:
        path = DOCS_SCHEMA / f"{name}.schema.json"
        assert path.read_text() == render(name), f"{path} is stale: run `make schema` and commit the result"


def test_json_schemas_describe_the_contract() -> None:
    telemetry = json.loads(render("moby.telemetry.v1"))
    assert telemetry["$schema"].endswith("2020-12/schema")
    text = json.dumps(telemetry)
    for needle in ("readings", "values", "sensor_type", "seq", "date-time", "epoch milliseconds"):
        assert needle in text
