"""moby.ingest.process.Processor: validation of every message and the line protocol it produces."""

from __future__ import annotations

import json
from typing import Any

import pytest

from moby.ingest.process import Accepted, Noted, Processor, Reason, Rejected
from moby.ingest.registry import Registry
from moby.schema import MAX_PAYLOAD_BYTES, TopicKind

NOW_MS = 1764139300000  # the fixed clock: 2025-11-26T06:41:40Z
TS = 1764139251123
DAY_MS = 86400 * 1000
TOPIC = "moby/f1/s1/telemetry"
STATUS_TOPIC = "moby/f1/s1/status"
HEALTH_TOPIC = "moby/f1/s1/health"


def make(**kwargs: Any) -> Processor:
    return Processor(Registry(), clock=lambda: NOW_MS / 1000, **kwargs)


@pytest.fixture
def proc() -> Processor:
    return make()


def dumps(obj: Any) -> bytes:
    return json.dumps(obj).encode()


def telemetry(**overrides: Any) -> bytes:
    msg: dict[str, Any] = {
        "schema": "moby.telemetry.v1",
        "sensor_type": "vibration",
        "ts": TS,
        "seq": 42,
        "values": {"rms_velocity": 2.31, "peak_accel": 0.82, "temperature": 41.5},
    }
    msg.update(overrides)
    return dumps(msg)


def batch(*readings: dict[str, Any], **overrides: Any) -> bytes:
    msg: dict[str, Any] = {"schema": "moby.telemetry.v1", "sensor_type": "vibration", "readings": readings}
    msg.update(overrides)
    return dumps(msg)


def status(**fields: Any) -> bytes:
    return dumps({"schema": "moby.status.v1", **fields})


def health(**overrides: Any) -> bytes:
    return dumps({"schema": "moby.health.v1", "ts": TS, "uptime_s": 5.0, "buffer_depth": 0, **overrides})


def accepted(outcome: object) -> Accepted:
    assert isinstance(outcome, Accepted), outcome
    return outcome


def reason(outcome: object) -> Reason:
    assert isinstance(outcome, Rejected), outcome
    assert outcome.detail
    return outcome.reason


# -- accepted telemetry: the exact line protocol ------------------------------------------------
def test_single_reading_line(proc: Processor) -> None:
    out = accepted(proc.process(TOPIC, telemetry()))
    assert out.lines == (
        b"vibration,factory_id=f1,sensor_id=s1 "
        b"rms_velocity=2.31,peak_accel=0.82,temperature=41.5,seq=42i 1764139251123\n"
    )
    assert out.points == 1
    assert out.first_ts_ms == TS


def test_values_are_always_floats(proc: Processor) -> None:
    out = accepted(proc.process(TOPIC, telemetry(values={"a": 2, "b": 0, "c": -7, "d": 1e16})))
    assert (
        out.lines
        == b"vibration,factory_id=f1,sensor_id=s1 a=2.0,b=0.0,c=-7.0,d=1e+16,seq=42i 1764139251123\n"
    )


@pytest.mark.parametrize(
    ("quality", "suffix"),
    [(None, b""), ("good", b""), ("uncertain", b',quality="uncertain"'), ("bad", b',quality="bad"')],
)
def test_quality_is_written_only_when_not_good(proc: Processor, quality: str | None, suffix: bytes) -> None:
    payload = (
        telemetry(values={"t": 20.5}) if quality is None else telemetry(values={"t": 20.5}, quality=quality)
    )
    out = accepted(proc.process(TOPIC, payload))
    assert out.lines == b"vibration,factory_id=f1,sensor_id=s1 t=20.5,seq=42i" + suffix + b" 1764139251123\n"


def test_rfc3339_ts_becomes_ms(proc: Processor) -> None:
    out = accepted(proc.process(TOPIC, telemetry(ts="2025-11-26T15:40:51.123+09:00", values={"a": 1.5})))
    assert out.lines.endswith(b"a=1.5,seq=42i 1764139251123\n")


def test_ids_with_dots_dashes_underscores(proc: Processor) -> None:
    out = accepted(
        proc.process("moby/F-1.x/S_2.b-c/telemetry", telemetry(sensor_type="noise", values={"db": 71}))
    )
    assert out.lines == b"noise,factory_id=F-1.x,sensor_id=S_2.b-c db=71.0,seq=42i 1764139251123\n"


def test_matching_identity_echoes_are_fine(proc: Processor) -> None:
    accepted(proc.process(TOPIC, telemetry(sensor_id="s1", factory_id="f1")))


def test_batch_is_one_line_per_reading(proc: Processor) -> None:
    out = accepted(
        proc.process(
            TOPIC,
            batch(
                {"ts": TS + 1000, "seq": 43, "values": {"rms_velocity": 2.35}},
                {"ts": TS, "seq": 42, "values": {"rms_velocity": 2.31}, "quality": "bad"},
                {"ts": "2025-11-26T06:40:53.123Z", "seq": 44, "values": {"rms_velocity": 3}},
            ),
        )
    )
    assert out.lines == (
        b"vibration,factory_id=f1,sensor_id=s1 rms_velocity=2.35,seq=43i 1764139252123\n"
        b'vibration,factory_id=f1,sensor_id=s1 rms_velocity=2.31,seq=42i,quality="bad" 1764139251123\n'
        b"vibration,factory_id=f1,sensor_id=s1 rms_velocity=3.0,seq=44i 1764139253123\n"
    )
    assert out.points == 3
    assert out.first_ts_ms == TS


def test_batch_readings_may_name_their_values_in_any_order(proc: Processor) -> None:
    out = accepted(
        proc.process(
            TOPIC,
            batch(
                {"ts": TS, "seq": 1, "values": {"a": 1.5, "b": 2}},
                {"ts": TS + 1, "seq": 2, "values": {"b": 3.25, "a": -1e-7}},
                {"ts": TS + 2, "seq": 3, "values": {"c": 0.0}, "quality": "uncertain"},
            ),
        )
    )
    assert out.lines == (
        b"vibration,factory_id=f1,sensor_id=s1 a=1.5,b=2.0,seq=1i 1764139251123\n"
        b"vibration,factory_id=f1,sensor_id=s1 b=3.25,a=-1e-7,seq=2i 1764139251124\n"
        b'vibration,factory_id=f1,sensor_id=s1 c=0.0,seq=3i,quality="uncertain" 1764139251125\n'
    )


@pytest.mark.parametrize("name", ["seq", "quality"])
def test_a_reserved_name_in_a_later_reading_rejects_the_batch(proc: Processor, name: str) -> None:
    out = proc.process(
        TOPIC,
        batch(
            {"ts": TS, "seq": 1, "values": {"a": 1.0}},
            {"ts": TS + 1, "seq": 2, "values": {"a": 1.0, name: 2.0}},
        ),
    )
    assert reason(out) is Reason.SCHEMA
    assert isinstance(out, Rejected) and "seq=2" in out.detail


def test_names_that_merely_contain_a_reserved_word_are_fine(proc: Processor) -> None:
    out = accepted(
        proc.process(TOPIC, batch({"ts": TS, "seq": 1, "values": {"seq_gap": 1.0, "qualityx": 2.0}}))
    )
    assert out.lines.endswith(b" seq_gap=1.0,qualityx=2.0,seq=1i 1764139251123\n")


def test_big_batch(proc: Processor) -> None:
    readings = [{"ts": TS + i, "seq": i, "values": {"v": float(i)}} for i in range(1000)]
    out = accepted(proc.process(TOPIC, batch(*readings)))
    lines = out.lines.decode().splitlines()
    assert len(lines) == out.points == 1000
    assert lines[999] == f"vibration,factory_id=f1,sensor_id=s1 v=999.0,seq=999i {TS + 999}"


def test_telemetry_registers_the_sensor(proc: Processor) -> None:
    accepted(
        proc.process(
            TOPIC, batch({"ts": TS, "seq": 1, "values": {"a": 1}}, {"ts": TS, "seq": 2, "values": {"a": 1}})
        )
    )
    record = proc.registry.get("f1", "s1")
    assert record is not None
    assert (record.sensor_type, record.readings, record.last_seen_ms, record.online) == (
        "vibration",
        2,
        NOW_MS,
        True,
    )


# -- status births enrich telemetry ---------------------------------------------------------------
BIRTH = status(online=True, ts=TS, sensor_type="vibration", model="VX-1", line_id="L1", machine_id="M-7")
ENRICHED = b"vibration,factory_id=f1,line_id=L1,machine_id=M-7,sensor_id=s1 a=1.0,seq=42i 1764139251123\n"
PLAIN = b"vibration,factory_id=f1,sensor_id=s1 a=1.0,seq=42i 1764139251123\n"


def test_birth_adds_line_and_machine_tags(proc: Processor) -> None:
    assert proc.process(STATUS_TOPIC, BIRTH) == Noted(TopicKind.STATUS)
    assert accepted(proc.process(TOPIC, telemetry(values={"a": 1}))).lines == ENRICHED
    # An offline status (the Last Will) keeps the metadata.
    assert proc.process(STATUS_TOPIC, status(online=False)) == Noted(TopicKind.STATUS)
    assert accepted(proc.process(TOPIC, telemetry(values={"a": 1}))).lines == ENRICHED
    record = proc.registry.get("f1", "s1")
    assert record is not None and record.online is False
    assert record.metadata["model"] == "VX-1"


def test_birth_after_telemetry_changes_the_tags(proc: Processor) -> None:
    assert accepted(proc.process(TOPIC, telemetry(values={"a": 1}))).lines == PLAIN
    proc.process(STATUS_TOPIC, BIRTH)
    assert accepted(proc.process(TOPIC, telemetry(values={"a": 1}))).lines == ENRICHED
    proc.process(STATUS_TOPIC, status(online=True, line_id="L2"))
    assert accepted(proc.process(TOPIC, telemetry(values={"a": 1}))).lines == (
        b"vibration,factory_id=f1,line_id=L2,sensor_id=s1 a=1.0,seq=42i 1764139251123\n"
    )


def test_birth_only_enriches_its_own_sensor(proc: Processor) -> None:
    proc.process(STATUS_TOPIC, BIRTH)
    out = accepted(proc.process("moby/f1/s2/telemetry", telemetry(values={"a": 1})))
    assert out.lines == b"vibration,factory_id=f1,sensor_id=s2 a=1.0,seq=42i 1764139251123\n"
    out = accepted(proc.process("moby/f2/s1/telemetry", telemetry(values={"a": 1})))
    assert out.lines == b"vibration,factory_id=f2,sensor_id=s1 a=1.0,seq=42i 1764139251123\n"


def test_empty_status_clears_nothing(proc: Processor) -> None:
    proc.process(STATUS_TOPIC, BIRTH)
    assert proc.process(STATUS_TOPIC, b"") == Noted(TopicKind.STATUS)
    assert accepted(proc.process(TOPIC, telemetry(values={"a": 1}))).lines == ENRICHED


def test_health_is_noted(proc: Processor) -> None:
    assert proc.process(HEALTH_TOPIC, health(battery_pct=55.5)) == Noted(TopicKind.HEALTH)
    record = proc.registry.get("f1", "s1")
    assert record is not None and record.health is not None
    assert record.health["battery_pct"] == 55.5


# -- time window ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("ts", "ok"),
    [
        (NOW_MS - 7 * DAY_MS, True),
        (NOW_MS - 7 * DAY_MS - 1, False),
        (NOW_MS - 30 * DAY_MS, False),
        (0, False),
        (NOW_MS + 600_000, True),
        (NOW_MS + 600_001, False),
        (NOW_MS + DAY_MS, False),
        (2**53 - 1, False),
        ("2025-11-19T06:41:39.999Z", False),
        ("2025-11-26T06:51:40.000Z", True),
        ("2025-11-26T15:51:40.001+09:00", False),
    ],
)
def test_time_window(proc: Processor, ts: int | str, ok: bool) -> None:
    outcome = proc.process(TOPIC, telemetry(ts=ts))
    if ok:
        accepted(outcome)
    else:
        assert reason(outcome) is Reason.TIME


def test_one_reading_out_of_range_rejects_the_batch(proc: Processor) -> None:
    outcome = proc.process(
        TOPIC,
        batch(
            {"ts": TS, "seq": 1, "values": {"a": 1}}, {"ts": NOW_MS + DAY_MS, "seq": 2, "values": {"a": 1}}
        ),
    )
    assert reason(outcome) is Reason.TIME
    assert proc.registry.get("f1", "s1") is None


def test_configured_time_window() -> None:
    proc = make(max_age_s=3600, max_future_s=5)
    accepted(proc.process(TOPIC, telemetry(ts=NOW_MS - 3_600_000)))
    assert reason(proc.process(TOPIC, telemetry(ts=NOW_MS - 3_600_001))) is Reason.TIME
    assert reason(proc.process(TOPIC, telemetry(ts=TS - DAY_MS))) is Reason.TIME
    accepted(proc.process(TOPIC, telemetry(ts=NOW_MS + 5000)))
    assert reason(proc.process(TOPIC, telemetry(ts=NOW_MS + 5001))) is Reason.TIME
    longer = make(max_age_s=30 * 86400)
    accepted(longer.process(TOPIC, telemetry(ts=NOW_MS - 29 * DAY_MS)))


# -- the malformed corpus -------------------------------------------------------------------------
_GOOD = telemetry()

CORPUS: list[tuple[str, str, bytes, Reason]] = [
    # not JSON
    ("empty", TOPIC, b"", Reason.JSON),
    ("truncated", TOPIC, _GOOD[:-1], Reason.JSON),
    ("garbage", TOPIC, b"hello", Reason.JSON),
    ("trailing junk", TOPIC, _GOOD + b"x", Reason.JSON),
    ("two objects", TOPIC, _GOOD + _GOOD, Reason.JSON),
    ("single quotes", TOPIC, _GOOD.replace(b'"', b"'"), Reason.JSON),
    ("not utf-8", TOPIC, b"\xff\xfe" + _GOOD, Reason.JSON),
    ("latin-1 in a string", TOPIC, telemetry(sensor_type="x").replace(b'"x"', b'"\xe9"'), Reason.JSON),
    ("utf-16", TOPIC, _GOOD.decode().encode("utf-16"), Reason.JSON),
    # JSON, but not the contract
    ("array", TOPIC, b"[" + _GOOD + b"]", Reason.SCHEMA),
    ("string", TOPIC, b'"moby.telemetry.v1"', Reason.SCHEMA),
    ("number", TOPIC, b"42", Reason.SCHEMA),
    ("null", TOPIC, b"null", Reason.SCHEMA),
    ("empty object", TOPIC, b"{}", Reason.SCHEMA),
    ("wrong schema", TOPIC, telemetry(schema="moby.telemetry.v2"), Reason.SCHEMA),
    ("health schema on telemetry", TOPIC, health(), Reason.SCHEMA),
    ("string value", TOPIC, telemetry(values={"a": "2.5"}), Reason.SCHEMA),
    ("bool value", TOPIC, telemetry(values={"a": True}), Reason.SCHEMA),
    ("null value", TOPIC, telemetry(values={"a": None}), Reason.SCHEMA),
    ("string seq", TOPIC, telemetry(seq="42"), Reason.SCHEMA),
    ("float seq", TOPIC, telemetry(seq=42.0), Reason.SCHEMA),
    ("negative seq", TOPIC, telemetry(seq=-1), Reason.SCHEMA),
    ("seq 2^63", TOPIC, telemetry(seq=2**63), Reason.SCHEMA),
    ("string ts", TOPIC, telemetry(ts=str(TS)), Reason.SCHEMA),
    ("float ts", TOPIC, telemetry(ts=TS + 0.5), Reason.SCHEMA),
    ("naive ts", TOPIC, telemetry(ts="2025-11-26T06:40:51.123"), Reason.SCHEMA),
    ("NaN", TOPIC, _GOOD.replace(b"2.31", b"NaN"), Reason.SCHEMA),
    ("Infinity", TOPIC, _GOOD.replace(b"2.31", b"Infinity"), Reason.SCHEMA),
    ("-Infinity", TOPIC, _GOOD.replace(b"2.31", b"-Infinity"), Reason.SCHEMA),
    ("overflowing float", TOPIC, _GOOD.replace(b"2.31", b"1e999"), Reason.SCHEMA),
    ("no values", TOPIC, telemetry(values={}), Reason.SCHEMA),
    ("101 values", TOPIC, telemetry(values={f"v{i}": 1 for i in range(101)}), Reason.SCHEMA),
    ("empty batch", TOPIC, batch(), Reason.SCHEMA),
    (
        "readings and values",
        TOPIC,
        batch({"ts": TS, "seq": 1, "values": {"a": 1}}, values={"a": 1}),
        Reason.SCHEMA,
    ),
    ("reserved seq", TOPIC, telemetry(values={"seq": 1}), Reason.SCHEMA),
    ("reserved quality", TOPIC, telemetry(values={"quality": 1}), Reason.SCHEMA),
    ("bad quality", TOPIC, telemetry(quality="meh"), Reason.SCHEMA),
    # names that could inject into line protocol or queries
    ("value name with space", TOPIC, telemetry(values={"a b": 1}), Reason.SCHEMA),
    ("value name with comma", TOPIC, telemetry(values={"a,b=1": 1}), Reason.SCHEMA),
    ("value name with newline", TOPIC, telemetry(values={"a\nx": 1}), Reason.SCHEMA),
    ("value name trailing newline", TOPIC, telemetry(values={"a\n": 1}), Reason.SCHEMA),
    ("value name quote", TOPIC, telemetry(values={'a"': 1}), Reason.SCHEMA),
    ("sensor_type injection", TOPIC, telemetry(sensor_type="vibration,factory_id=evil"), Reason.SCHEMA),
    ("sensor_type newline", TOPIC, telemetry(sensor_type="vibration\nevil f=1"), Reason.SCHEMA),
    ("sensor_type trailing newline", TOPIC, telemetry(sensor_type="vibration\n"), Reason.SCHEMA),
    ("sensor_type sql", TOPIC, telemetry(sensor_type="x' OR 1=1"), Reason.SCHEMA),
    ("bad sensor_id echo", TOPIC, telemetry(sensor_id="s1 OR 1=1"), Reason.SCHEMA),
    # identity
    ("sensor_id mismatch", TOPIC, telemetry(sensor_id="s2"), Reason.IDENTITY),
    ("factory_id mismatch", TOPIC, telemetry(factory_id="f2"), Reason.IDENTITY),
    (
        "identity in a batch",
        TOPIC,
        batch({"ts": TS, "seq": 1, "values": {"a": 1}}, sensor_id="S1"),
        Reason.IDENTITY,
    ),
    # topics
    ("topic space", "moby/f1/s 1/telemetry", _GOOD, Reason.TOPIC),
    ("topic comma", "moby/f1/s1,x=y/telemetry", _GOOD, Reason.TOPIC),
    ("topic equals", "moby/f=1/s1/telemetry", _GOOD, Reason.TOPIC),
    ("topic double quote", 'moby/f1/s"1/telemetry', _GOOD, Reason.TOPIC),
    ("topic single quote", "moby/f1/s'1/telemetry", _GOOD, Reason.TOPIC),
    ("topic newline", "moby/f1/s1\nx f=1 1/telemetry", _GOOD, Reason.TOPIC),
    ("topic leading newline", "moby/f1/\ns1/telemetry", _GOOD, Reason.TOPIC),
    ("topic carriage return", "moby/f1/s1\r/telemetry", _GOOD, Reason.TOPIC),
    ("topic dot-dot", "moby/../s1/telemetry", _GOOD, Reason.TOPIC),
    ("topic traversal", "moby/f1/../../telemetry", _GOOD, Reason.TOPIC),
    ("topic sql", "moby/f1/x' OR 1=1/telemetry", _GOOD, Reason.TOPIC),
    ("topic influxql", 'moby/f1/x"; DROP DATABASE "moby/telemetry', _GOOD, Reason.TOPIC),
    ("topic plus", "moby/+/s1/telemetry", _GOOD, Reason.TOPIC),
    ("topic hash", "moby/f1/#", _GOOD, Reason.TOPIC),
    ("topic hash segment", "moby/f1/#/telemetry", _GOOD, Reason.TOPIC),
    ("topic 65 chars", f"moby/f1/{'s' * 65}/telemetry", _GOOD, Reason.TOPIC),
    ("topic 65-char factory", f"moby/{'f' * 65}/s1/telemetry", _GOOD, Reason.TOPIC),
    ("topic empty id", "moby//s1/telemetry", _GOOD, Reason.TOPIC),
    ("topic unicode", "moby/f1/sé/telemetry", _GOOD, Reason.TOPIC),
    ("topic nul", "moby/f1/s\x001/telemetry", _GOOD, Reason.TOPIC),
    ("topic too deep", "moby/f1/s1/x/telemetry", _GOOD, Reason.TOPIC),
    ("topic unknown kind", "moby/f1/s1/data", _GOOD, Reason.TOPIC),
    ("topic other root", "other/f1/s1/telemetry", _GOOD, Reason.TOPIC),
    ("cmd is not ingested", "moby/f1/s1/cmd", _GOOD, Reason.TOPIC),
    # size: the limit is checked before parsing, for every kind
    ("oversized telemetry", TOPIC, _GOOD + b" " * (MAX_PAYLOAD_BYTES - len(_GOOD) + 1), Reason.TOO_LARGE),
    ("oversized status", STATUS_TOPIC, b"{" * (MAX_PAYLOAD_BYTES + 1), Reason.TOO_LARGE),
    ("oversized health", HEALTH_TOPIC, b"x" * (MAX_PAYLOAD_BYTES * 4), Reason.TOO_LARGE),
    # health and status
    ("status not json", STATUS_TOPIC, b"online", Reason.JSON),
    (
        "status not utf-8",
        STATUS_TOPIC,
        b'{"schema":"moby.status.v1","online":true,"model":"\xff"}',
        Reason.JSON,
    ),
    ("status no online", STATUS_TOPIC, status(), Reason.SCHEMA),
    ("status wrong schema", STATUS_TOPIC, dumps({"schema": "moby.health.v1", "online": True}), Reason.SCHEMA),
    ("status bad line_id", STATUS_TOPIC, status(online=True, line_id="L1,x=y"), Reason.SCHEMA),
    ("status bad machine_id", STATUS_TOPIC, status(online=True, machine_id="m\n"), Reason.SCHEMA),
    ("status bad sensor_type", STATUS_TOPIC, status(online=True, sensor_type="Vib"), Reason.SCHEMA),
    ("status naive ts", STATUS_TOPIC, status(online=True, ts="2025-11-26T06:40:51"), Reason.SCHEMA),
    ("status array", STATUS_TOPIC, b"[]", Reason.SCHEMA),
    ("health empty", HEALTH_TOPIC, b"", Reason.JSON),
    ("health not json", HEALTH_TOPIC, b"{bad", Reason.JSON),
    ("health missing fields", HEALTH_TOPIC, dumps({"schema": "moby.health.v1"}), Reason.SCHEMA),
    ("health negative buffer", HEALTH_TOPIC, health(buffer_depth=-1), Reason.SCHEMA),
    ("health battery 101", HEALTH_TOPIC, health(battery_pct=101), Reason.SCHEMA),
    ("health NaN uptime", HEALTH_TOPIC, health().replace(b"5.0", b"NaN"), Reason.SCHEMA),
    ("health bool buffer", HEALTH_TOPIC, health(buffer_depth=True), Reason.SCHEMA),
    ("telemetry on health", HEALTH_TOPIC, _GOOD, Reason.SCHEMA),
    ("health bad topic", "moby/f 1/s1/health", health(), Reason.TOPIC),
    ("status bad topic", "moby/f1/s1/status/x", status(online=True), Reason.TOPIC),
]


@pytest.mark.parametrize(
    ("topic", "payload", "expected"), [c[1:] for c in CORPUS], ids=[c[0] for c in CORPUS]
)
def test_malformed_corpus_is_rejected(proc: Processor, topic: str, payload: bytes, expected: Reason) -> None:
    assert reason(proc.process(topic, payload)) is expected
    # A rejected message leaves no trace in the registry.
    assert proc.registry.all() == []


def test_the_corpus_payloads_are_otherwise_valid(proc: Processor) -> None:
    """The good baselines the corpus is made from are accepted (so each entry tests one thing)."""
    accepted(proc.process(TOPIC, _GOOD))
    accepted(proc.process(TOPIC, _GOOD + b" " * (MAX_PAYLOAD_BYTES - len(_GOOD))))  # exactly 256 KiB
    assert proc.process(HEALTH_TOPIC, health()) == Noted(TopicKind.HEALTH)
    assert proc.process(STATUS_TOPIC, status(online=True)) == Noted(TopicKind.STATUS)


def test_rejections_do_not_poison_later_messages(proc: Processor) -> None:
    for _, topic, payload, _ in CORPUS:
        proc.process(topic, payload)
    assert accepted(proc.process(TOPIC, telemetry(values={"a": 1}))).lines == PLAIN


@pytest.mark.parametrize("topic", ["moby/f1/s1\n/telemetry", "moby/f1\n/s1/telemetry"])
def test_trailing_newline_in_a_topic_id_is_rejected_not_raised(proc: Processor, topic: str) -> None:
    # Mosquitto refuses such topics, other brokers may not; process() must never raise.
    assert reason(proc.process(topic, _GOOD)) is Reason.TOPIC
