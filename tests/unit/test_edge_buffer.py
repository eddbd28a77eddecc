"""moby.edge.buffer: the edge agent's on-device store-and-forward buffer."""

from __future__ import annotations

import math
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import textwrap
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import numpy as np
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from moby.edge.buffer import (
    BATCH_BODY_BUDGET,
    ROW_OVERHEAD,
    BufferedReading,
    BufferInUseError,
    DropPolicy,
    EdgeBuffer,
    NewReading,
    batch_payload,
    sensor_key,
    single_payload,
    split_sensor_key,
)
from moby.schema import MAX_PAYLOAD_BYTES, TELEMETRY, Quality

TS = 1764139251123
KiB = 1024
MiB = 1024 * KiB
REPO = Path(__file__).resolve().parents[2]


def open_buffer(
    path: Path,
    *,
    max_bytes: int = MiB,
    max_age_s: float = 3600,
    policy: DropPolicy = DropPolicy.DROP_OLDEST,
    sync: Literal["full", "normal"] = "normal",
) -> EdgeBuffer:
    return EdgeBuffer(path, max_bytes=max_bytes, max_age_s=max_age_s, policy=policy, sync=sync)


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "edge" / "buffer.sqlite"


@pytest.fixture
def buf(path: Path) -> Iterator[EdgeBuffer]:
    b = open_buffer(path)
    yield b
    b.close()


def rows(path: Path) -> list[tuple[int, str, int, int, bytes]]:
    """What is on disk, read with a connection of our own (the buffer must be closed)."""
    conn = sqlite3.connect(path)
    try:
        return conn.execute("SELECT id, sensor_key, seq, ts_ms, body FROM readings ORDER BY id").fetchall()
    finally:
        conn.close()


def on_disk_size(path: Path) -> int:
    return sum(len(body) + len(key) + ROW_OVERHEAD for _, key, _, _, body in rows(path))


def seqs_by_sensor(path: Path) -> dict[str, list[int]]:
    out: dict[str, list[int]] = defaultdict(list)
    for _, key, seq, _, _ in rows(path):
        out[key].append(seq)
    return dict(out)


# -- keys and readings ---------------------------------------------------------------------------
def test_sensor_key_helpers() -> None:
    assert sensor_key("plant-1", "vib_01") == "plant-1/vib_01"
    assert split_sensor_key("plant-1/vib_01") == ("plant-1", "vib_01")
    for bad in ("plant-1", "plant 1/x", "/x", "a/b/c", "a/"):
        with pytest.raises(ValueError):
            split_sensor_key(bad)
    with pytest.raises(ValueError):
        sensor_key("a/b", "c")


def test_append_stores_the_reading_as_compact_json(buf: EdgeBuffer) -> None:
    assert buf.append("f1/s1", TS, {"rms_velocity": 2.31, "count": 7}) == 0
    assert buf.append("f1/s1", TS + 1, {"rms_velocity": 2.4}, Quality.UNCERTAIN) == 1
    assert buf.append("f1/s1", TS + 2, {"rms_velocity": 2.5}, "good") == 2
    first, second, third = buf.pending("f1/s1")
    assert first.body == b'{"ts":1764139251123,"seq":0,"values":{"rms_velocity":2.31,"count":7}}'
    assert second.reading() == {
        "ts": TS + 1,
        "seq": 1,
        "values": {"rms_velocity": 2.4},
        "quality": "uncertain",
    }
    assert "quality" not in third.reading()  # good is the contract's default
    assert (first.sensor_key, first.seq, first.ts_ms) == ("f1/s1", 0, TS)


@pytest.mark.parametrize(
    ("key", "ts", "values", "quality"),
    [
        ("f1/s1", TS, {"v": math.nan}, None),
        ("f1/s1", TS, {"v": math.inf}, None),
        ("f1/s1", TS, {"v": True}, None),
        ("f1/s1", TS, {"v": "2.5"}, None),
        ("f1/s1", TS, {}, None),
        ("f1/s1", TS, {f"v{i}": 1.0 for i in range(101)}, None),
        ("f1/s1", TS, {"Bad": 1.0}, None),
        ("f1/s1", TS, {"seq": 1.0}, None),  # the backend keeps seq and quality as fields of their own
        ("f1/s1", TS, {"v": 1.0}, "excellent"),
        ("f1/s1", -1, {"v": 1.0}, None),
        ("f1/s1", 2**53, {"v": 1.0}, None),
        ("f1", TS, {"v": 1.0}, None),
        ("f1/s 1", TS, {"v": 1.0}, None),
    ],
)
def test_a_bad_reading_is_refused_whole_and_takes_no_seq(
    buf: EdgeBuffer, key: str, ts: int, values: dict[str, Any], quality: str | None
) -> None:
    good = NewReading("f1/s1", TS, {"v": 1.0})
    with pytest.raises(ValueError):
        buf.append_many([good, NewReading(key, ts, values, quality)])
    with pytest.raises((ValueError, TypeError)):
        buf.append_many([NewReading("f1/s1", float(TS), {"v": 1.0})])  # type: ignore[arg-type]
    assert buf.depth() == 0
    assert buf.next_seq("f1/s1") == 0
    assert buf.append_many([good]) == [0]


def test_numpy_numbers_are_stored_as_json_numbers(buf: EdgeBuffer) -> None:
    buf.append("f1/s1", np.int64(TS), {"a": np.float64(1.5), "b": np.float32(0.25), "c": np.int32(3)})  # type: ignore[arg-type, dict-item]
    assert buf.pending("f1/s1")[0].reading()["values"] == {"a": 1.5, "b": 0.25, "c": 3.0}
    with pytest.raises(ValueError):
        buf.append("f1/s1", TS, {"a": np.float64("nan")})


# -- seq -----------------------------------------------------------------------------------------
def test_seq_is_contiguous_per_sensor_and_survives_restarts(path: Path) -> None:
    sensors = [sensor_key("f1", f"s{i}") for i in range(3)]
    got: dict[str, list[int | None]] = defaultdict(list)
    for restart in range(4):
        with open_buffer(path) as b:
            for i in range(5):
                for key in sensors:
                    got[key].append(b.append(key, TS + restart * 100 + i, {"v": float(i)}))
            if restart == 1:  # everything acknowledged: no row is left to remember the seq by
                for key in sensors:
                    assert b.ack(r.id for r in b.pending(key)) == 10
                assert b.depth() == 0
            if restart == 2:  # only sensor 0 fully acknowledged
                b.ack(r.id for r in b.pending(sensors[0]))
    for key in sensors:
        assert got[key] == list(range(20))
    assert seqs_by_sensor(path) == {
        sensors[0]: list(range(15, 20)),
        **{k: list(range(10, 20)) for k in sensors[1:]},
    }


def test_seq_survives_restart_after_its_newest_readings_were_dropped_or_expired(path: Path) -> None:
    with open_buffer(path, max_bytes=2 * KiB) as b:
        for i in range(20):
            b.append("f1/old", TS + i, {"v": 1.0})
        for i in range(100):  # pushes every reading of f1/old out
            b.append("f1/new", TS + 100 + i, {"v": 1.0})
        assert b.depth("f1/old") == 0
        assert b.counters()["dropped_full"] > 20
    with open_buffer(path, max_bytes=2 * KiB, max_age_s=1) as b:
        assert b.next_seq("f1/old") == 20
        assert b.next_seq("f1/new") == 100
        b.append("f1/aged", TS, {"v": 1.0})
        assert b.expire(TS + 60_000) == b.counters()["dropped_age"] > 0
    with open_buffer(path, max_bytes=2 * KiB) as b:
        assert b.depth() == 0
        assert [b.next_seq(k) for k in ("f1/old", "f1/new", "f1/aged")] == [20, 100, 1]


CHILD = textwrap.dedent(
    """
    import sys
    from moby.edge.buffer import EdgeBuffer, NewReading

    b = EdgeBuffer(sys.argv[1], max_bytes=1 << 30, max_age_s=1e9, sync="full")
    keys = [f"f1/s{k}" for k in range(4)]
    i = 0
    while True:
        if i % 3:
            seqs = b.append_many([NewReading(k, 1764139251123 + i, {"v": float(i)}) for k in keys])
            done = list(zip(keys, seqs))
        else:
            done = [(keys[i % 4], b.append(keys[i % 4], 1764139251123 + i, {"v": float(i)}))]
        sys.stdout.write(" ".join(f"{k}={s}" for k, s in done) + "\\n")
        sys.stdout.flush()
        i += 1
    """
)


def test_sigkill_mid_append_loses_no_committed_reading_and_repeats_no_seq(path: Path) -> None:
    reported: dict[str, list[int]] = defaultdict(list)
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    for _ in range(2):  # killed, restarted on the same file, killed again
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD, str(path)], stdout=subprocess.PIPE, text=True, env=env
        )
        assert child.stdout is not None
        lines = []
        for line in child.stdout:
            lines.append(line)
            if len(lines) == 60:
                child.send_signal(signal.SIGKILL)  # somewhere in the next append, most likely
                break
        lines.extend(child.stdout.read().splitlines(keepends=True))
        assert child.wait(timeout=10) == -signal.SIGKILL
        for line in lines:
            if line.endswith("\n"):  # a line cut short by the kill proves nothing
                for item in line.split():
                    key, seq = item.split("=")
                    reported[key].append(int(seq))
    stored = seqs_by_sensor(path)
    for key, seqs in reported.items():
        assert seqs == sorted(set(seqs)), f"{key}: a seq was handed out twice"
        assert set(seqs) <= set(stored[key]), f"{key}: a committed reading was lost"
        assert stored[key] == list(range(len(stored[key]))), f"{key}: gap in what was stored"
    with open_buffer(path, sync="full") as b:
        for key, seqs in stored.items():
            assert b.append(key, TS, {"v": 0.0}) == seqs[-1] + 1


def test_a_second_opener_is_locked_out(path: Path) -> None:
    with open_buffer(path) as b:
        b.append("f1/s1", TS, {"v": 1.0})
        with pytest.raises(BufferInUseError):
            open_buffer(path)
    with open_buffer(path) as b:  # released on close
        assert b.next_seq("f1/s1") == 1


# -- bounds --------------------------------------------------------------------------------------
def test_the_byte_bound_holds_and_the_file_stops_growing(path: Path) -> None:
    max_bytes = 256 * KiB
    keys = [f"f1/s{i:03d}" for i in range(200)]
    file_sizes = []
    acked = 0
    with open_buffer(path, max_bytes=max_bytes) as b:
        conn = b.conn
        for n in range(60):  # ~5.5 MiB of readings through a 256 KiB buffer
            b.append_many(
                [
                    NewReading(keys[i % 200], TS + n * 500 + i, {"rms": i / 7, "peak": n / 3})
                    for i in range(500)
                ]
            )
            assert b.size_bytes() <= max_bytes
            if n % 10 == 0:  # and some acknowledged in between: holes for the next rows to reuse
                acked += b.ack(r.id for r in b.pending(keys[n], 20))
            (pages,) = conn.execute("PRAGMA page_count").fetchone()
            (page_size,) = conn.execute("PRAGMA page_size").fetchone()
            file_sizes.append(pages * page_size)
        assert max(file_sizes) <= 2 * max_bytes + 64 * KiB
        assert file_sizes[-1] <= max(file_sizes[:20]) * 1.25  # freed pages are reused
        wal = path.with_name(path.name + "-wal")
        assert wal.stat().st_size <= 8 * MiB
        size, depth, dropped = b.size_bytes(), b.depth(), b.counters()["dropped_full"]
        assert size > max_bytes - 2 * KiB  # it fills up to the bound, not far below it
    assert on_disk_size(path) == size  # the books match the disk ...
    with open_buffer(path, max_bytes=max_bytes) as b:  # ... and are recomputed from it at open
        assert (b.size_bytes(), b.depth(), b.counters()["dropped_full"]) == (size, depth, dropped)
    assert depth + dropped + acked == 60 * 500


def test_drop_oldest_drops_the_oldest_of_any_sensor_and_counts(path: Path) -> None:
    with open_buffer(path, max_bytes=4 * KiB) as b:
        n = 0
        while b.counters()["dropped_full"] == 0:
            b.append(f"f1/s{n % 2}", TS + n, {"v": float(n)})
            n += 1
        dropped = b.counters()["dropped_full"]
        assert b.oldest(1)[0].ts_ms == TS + dropped  # the first `dropped` readings are gone
        assert b.depth() == n - dropped
        assert b.size_bytes() <= 4 * KiB
        assert b.append("f1/s2", TS + n, {"v": 1.0}) == 0  # the newest is always kept
    with open_buffer(path, max_bytes=4 * KiB) as b:
        assert b.counters()["dropped_full"] > dropped


def test_drop_oldest_with_a_call_larger_than_the_buffer_keeps_its_newest(path: Path) -> None:
    with open_buffer(path, max_bytes=2 * KiB) as b:
        seqs = b.append_many([NewReading("f1/s1", TS + i, {"v": 1.0}) for i in range(100)])
        assert seqs == list(range(100))
        kept = b.pending("f1/s1")
        assert [r.seq for r in kept] == list(range(100 - len(kept), 100))
        assert b.counters()["dropped_full"] == 100 - len(kept)


def test_refuse_newest_refuses_without_a_seq_and_counts(path: Path) -> None:
    with open_buffer(path, max_bytes=4 * KiB, policy=DropPolicy.REFUSE_NEWEST) as b:
        seqs = [b.append("f1/s1", TS + i, {"v": float(i)}) for i in range(60)]
        stored = [s for s in seqs if s is not None]
        assert stored == list(range(len(stored)))  # no gap: a refusal consumes no seq
        assert seqs[len(stored) :] == [None] * (60 - len(stored))
        assert b.counters()["refused_full"] == 60 - len(stored)
        assert b.size_bytes() <= 4 * KiB
        assert b.pending("f1/s1")[0].seq == 0  # the oldest are kept
        assert b.append_many([NewReading("f1/s1", TS, {"v": 1.0})] * 3) == [None] * 3
        b.ack(r.id for r in b.pending("f1/s1", 5))
        assert b.append("f1/s1", TS + 99, {"v": 1.0}) == len(stored)  # room again, next seq
        refused = b.counters()["refused_full"]
    with open_buffer(path, max_bytes=4 * KiB, policy=DropPolicy.REFUSE_NEWEST) as b:
        assert b.counters()["refused_full"] == refused == 60 - len(stored) + 3  # persisted at close


def test_a_full_disk_refuses_the_call_and_counts(buf: EdgeBuffer) -> None:
    buf.append("f1/s1", TS, {"v": 1.0})
    (pages,) = buf.conn.execute("PRAGMA page_count").fetchone()
    buf.conn.execute(f"PRAGMA max_page_count={pages}")  # a disk with no page left
    big = [NewReading("f1/s1", TS + i, {f"v{j}": float(j) for j in range(50)}) for i in range(200)]
    assert buf.append_many(big) == [None] * 200
    assert buf.counters()["refused_disk"] == 200
    assert (buf.depth(), buf.next_seq("f1/s1")) == (1, 1)
    buf.conn.execute("PRAGMA max_page_count=1073741823")
    assert buf.append("f1/s1", TS, {"v": 1.0}) == 1


def test_expire_drops_readings_past_max_age_and_counts(path: Path) -> None:
    with open_buffer(path, max_age_s=60) as b:
        for i in range(10):
            b.append(f"f1/s{i % 2}", TS + i * 10_000, {"v": 1.0})  # one every 10 s
        now = TS + 90_000 + 60_000
        assert b.expire(now, limit=2) == 2
        assert b.expire(now) == 7  # older than 60 s: all but the one taken at TS + 90 s
        assert b.expire(now) == 0
        assert b.depth() == 1 and b.oldest()[0].ts_ms == TS + 90_000
        (last,) = b.oldest()
        assert b.size_bytes() == len(last.body) + len(last.sensor_key) + ROW_OVERHEAD
        assert b.counters()["dropped_age"] == 9
    with open_buffer(path, max_age_s=60) as b:
        assert b.counters() == {"dropped_full": 0, "dropped_age": 9, "refused_full": 0, "refused_disk": 0}


# -- forwarding ----------------------------------------------------------------------------------
def test_pending_is_oldest_first_per_sensor_and_ack_deletes_only_the_given_rows(buf: EdgeBuffer) -> None:
    for i in range(30):
        buf.append(f"f1/s{i % 3}", TS + i, {"v": float(i)})
    assert sorted(buf.sensors_with_backlog()) == ["f1/s0", "f1/s1", "f1/s2"]
    s1 = buf.pending("f1/s1")
    assert [r.seq for r in s1] == list(range(10))
    assert [r.ts_ms for r in s1] == [TS + 1 + 3 * i for i in range(10)]
    assert [r.seq for r in buf.pending("f1/s1", 3, after_id=s1[4].id)] == [5, 6, 7]  # past the in-flight ones
    assert [r.seq for r in buf.oldest(4)] == [0, 0, 0, 1]
    before = buf.size_bytes()
    assert buf.ack([s1[0].id, s1[1].id, s1[5].id]) == 3
    assert buf.ack([s1[0].id, 10_000]) == 0  # already gone / never there: the books don't move
    assert buf.size_bytes() == before - sum(
        len(r.body) + len(r.sensor_key) + ROW_OVERHEAD for r in s1[:2]
    ) - (len(s1[5].body) + len(s1[5].sensor_key) + ROW_OVERHEAD)
    assert [r.seq for r in buf.pending("f1/s1")] == [2, 3, 4, 6, 7, 8, 9]
    assert buf.depth() == 27 and buf.depth("f1/s1") == 7 and buf.depth("f1/s0") == 10
    buf.ack(r.id for r in buf.pending("f1/s1"))
    assert "f1/s1" not in buf.sensors_with_backlog()
    assert buf.depth("f1/s1") == 0


def test_ids_are_never_reused_so_a_late_puback_cannot_delete_a_new_reading(buf: EdgeBuffer) -> None:
    assert buf.last_id() == 0
    buf.append("f1/s1", TS, {"v": 1.0})
    (in_flight,) = buf.pending("f1/s1")
    assert buf.last_id() == buf.last_id("f1/s1") == in_flight.id
    buf.expire(TS + 10 * 3600_000)  # the buffer is empty again
    assert buf.last_id() == 0
    buf.append("f1/s1", TS + 1, {"v": 2.0})
    buf.append("f1/s2", TS + 1, {"v": 2.0})
    assert buf.ack([in_flight.id]) == 0
    assert buf.depth() == 2
    assert in_flight.id < buf.last_id("f1/s1") < buf.last_id() == buf.last_id("f1/s2")


def test_pending_cuts_a_batch_to_fit_one_message(buf: EdgeBuffer) -> None:
    wide = {f"value_{j}": 1234.5678 + j for j in range(100)}
    buf.append_many([NewReading("f1/s1", TS + i, wide) for i in range(300)])
    batch = buf.pending("f1/s1")
    assert 0 < len(batch) < 300
    assert sum(len(r.body) for r in batch) <= BATCH_BODY_BUDGET
    payload = batch_payload("vibration", batch)
    assert MAX_PAYLOAD_BYTES - 4 * KiB < len(payload) <= MAX_PAYLOAD_BYTES
    assert len(TELEMETRY.validate_json(payload).iter_readings()) == len(batch)
    assert len(buf.pending("f1/s1", max_bytes=1)) == 1  # always at least one


def test_payloads_validate_against_the_contract(buf: EdgeBuffer) -> None:
    sent = [
        NewReading("f1/s1", TS + i, {"rms_velocity": 2.31 + i, "count": i}, Quality.BAD if i == 3 else None)
        for i in range(1000)
    ]
    buf.append_many(sent)
    batch = buf.pending("f1/s1")
    assert len(batch) == 1000
    msg = TELEMETRY.validate_json(batch_payload("vibration", batch))
    assert msg.sensor_type == "vibration"
    views = msg.iter_readings()
    assert [(v.ts, v.seq, v.values, v.quality) for v in views] == [
        (r.ts_ms, i, {"rms_velocity": 2.31 + i, "count": i}, r.quality or Quality.GOOD)
        for i, r in enumerate(sent)
    ]
    for reading in (batch[0], batch[3]):
        one = TELEMETRY.validate_json(single_payload("temperature", reading))
        assert one.readings is None and one.sensor_type == "temperature"
        assert one.iter_readings()[0] == views[reading.seq]
    assert orjson.loads(single_payload("noise", batch[0])) == {
        "schema": "moby.telemetry.v1",
        "sensor_type": "noise",
        **batch[0].reading(),
    }


def test_payload_builders_refuse_what_the_contract_refuses(buf: EdgeBuffer) -> None:
    buf.append_many([NewReading(f"f1/s{i % 2}", TS + i, {"v": 1.0}) for i in range(1002)])
    s0 = buf.pending("f1/s0")
    with pytest.raises(ValueError):
        batch_payload("vibration", [])
    with pytest.raises(ValueError):
        batch_payload("Vibration", s0)
    with pytest.raises(ValueError):
        single_payload("vib ration", s0[0])
    with pytest.raises(ValueError):
        batch_payload("vibration", [s0[0], buf.pending("f1/s1")[0]])  # one sensor per message
    many = [BufferedReading(i, "f1/s0", i, TS, s0[0].body) for i in range(1001)]
    with pytest.raises(ValueError):
        batch_payload("vibration", many)


# -- everything at once --------------------------------------------------------------------------
op = st.one_of(
    st.tuples(st.just("append"), st.integers(0, 2), st.integers(1, 8)),
    st.tuples(st.just("many"), st.lists(st.tuples(st.integers(0, 2), st.integers(1, 8)), max_size=12)),
    st.tuples(st.just("ack"), st.integers(0, 2), st.integers(0, 6)),
    st.tuples(st.just("expire"), st.integers(0, 200)),
    st.tuples(st.just("reopen")),
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=st.lists(op, max_size=30), policy=st.sampled_from(DropPolicy), max_bytes=st.integers(300, 3000))
def test_any_sequence_of_operations_keeps_the_books(
    ops: list[tuple[Any, ...]], policy: DropPolicy, max_bytes: int
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "b.sqlite"
        b = open_buffer(path, max_bytes=max_bytes, max_age_s=100, policy=policy)
        issued: dict[str, list[int]] = defaultdict(list)
        clock = 0
        stored = acked = refused = 0

        def add(items: list[tuple[int, int]]) -> None:
            nonlocal clock, stored, refused
            new = []
            for sensor, width in items:
                clock += 1
                new.append(
                    NewReading(f"f1/s{sensor}", TS + clock * 1000, {f"v{j}": j / 3 for j in range(width)})
                )
            for reading, seq in zip(new, b.append_many(new), strict=True):
                if seq is None:
                    refused += 1
                else:
                    issued[reading.sensor_key].append(seq)
                    stored += 1
            if policy is DropPolicy.DROP_OLDEST:
                assert b.size_bytes() <= max_bytes

        try:
            for kind, *args in ops:
                if kind == "append":
                    add([(args[0], args[1])])
                elif kind == "many":
                    add(args[0])
                elif kind == "ack":
                    acked += b.ack(r.id for r in b.pending(f"f1/s{args[0]}", args[1]))
                elif kind == "expire":
                    b.expire(TS + (clock - args[0]) * 1000 + 100_000)
                else:
                    b.close()
                    b = open_buffer(path, max_bytes=max_bytes, max_age_s=100, policy=policy)
                assert b.size_bytes() <= max_bytes or policy is DropPolicy.REFUSE_NEWEST
                counters = b.counters()
                assert stored == b.depth() + acked + counters["dropped_full"] + counters["dropped_age"]
                assert refused == counters["refused_full"]
            for key, seqs in issued.items():
                assert seqs == list(range(len(seqs))), key  # contiguous, never repeated, across reopens
            size, depth = b.size_bytes(), b.depth()
            per_sensor = {k: b.depth(k) for k in b.sensors_with_backlog()}
        finally:
            b.close()
        assert on_disk_size(path) == size
        assert len(rows(path)) == depth
        on_disk = seqs_by_sensor(path)
        assert {k: len(v) for k, v in on_disk.items()} == per_sensor
        for key, seqs in on_disk.items():
            assert seqs == sorted(seqs) and set(seqs) <= set(issued[key])


# -- speed (printed, not asserted) ---------------------------------------------------------------
def test_append_many_throughput(path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    keys = [f"factory-01/sensor-{i:04d}" for i in range(1000)]
    values = {"rms_velocity": 2.31, "peak_accel": 0.82, "crest_factor": 3.1, "kurtosis": 2.9}
    batches = [[NewReading(k, TS + n * 1000, values) for k in keys] for n in range(20)]
    with open_buffer(path, max_bytes=64 * MiB, sync="full") as b:
        b.append_many(batches[0])
        start = time.perf_counter()
        for batch in batches[1:]:
            b.append_many(batch)
        elapsed = time.perf_counter() - start
    with capsys.disabled():
        print(
            f"\nEdgeBuffer.append_many, 1,000 sensors a call, sync=full: {19_000 / elapsed:,.0f} readings/s"
        )


def test_oldest_of_some_sensors_up_to_a_boundary_in_storage_order(buf: EdgeBuffer) -> None:
    for i in range(30):
        buf.append(f"f1/s{i % 3}", TS + i, {"v": float(i)})
    every = buf.oldest(100)
    boundary = every[20].id
    rows = buf.oldest(100, until_id=boundary, sensor_keys={"f1/s0", "f1/s2"})
    assert [(r.sensor_key, r.seq) for r in rows] == [
        (f"f1/s{i % 3}", i // 3) for i in range(21) if i % 3 != 1
    ]
    assert [r.id for r in rows] == sorted(r.id for r in rows)
    later = buf.oldest(3, after_id=rows[5].id, until_id=boundary, sensor_keys=["f1/s2"])
    assert [(r.sensor_key, r.seq) for r in later] == [("f1/s2", 3), ("f1/s2", 4), ("f1/s2", 5)]
    assert buf.oldest(10, sensor_keys=[]) == []
