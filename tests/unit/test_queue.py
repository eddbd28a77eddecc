"""moby.ingest.queue: the durable SQLite queue and the bounded dead-letter store."""

from __future__ import annotations

import asyncio
import sqlite3
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from moby.ingest.queue import (
    ROW_OVERHEAD,
    DeadLetter,
    DeadLetterReader,
    DurableQueue,
    Segment,
    StoredSegment,
    take_bytes,
)

MiB = 1024 * 1024


def seg(n: int, points: int = 1, ts: int = 1000) -> Segment:
    lines = b"".join(f"m,sensor_id=s{n} v={i}.0,seq={i}i {ts + i}\n".encode() for i in range(points))
    return Segment(lines, points, ts, 5000 + n)


def dead(i: int, reason: str = "invalid_json", payload: bytes | None = None) -> DeadLetter:
    return DeadLetter(
        topic=f"moby/f1/s{i}/telemetry",
        reason=reason,
        detail=f"detail {i}",
        payload=payload if payload is not None else f"payload {i}".encode(),
        received_at=1764139251.0 + i,
    )


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "data" / "queue.sqlite"


async def open_queue(path: Path, *, max_bytes: int = MiB, dlq_max_items: int = 100) -> DurableQueue:
    q = DurableQueue(path, max_bytes=max_bytes, dlq_max_items=dlq_max_items, sync="normal")
    await q.open()
    return q


@pytest.fixture
async def queue(path: Path) -> AsyncIterator[DurableQueue]:
    q = await open_queue(path)
    yield q
    await q.close()


def depth(q: DurableQueue) -> tuple[int, int, int]:
    return q.depth_rows, q.depth_points, q.depth_bytes


# -- the queue ---------------------------------------------------------------------------------
async def test_commit_read_remove_round_trip(queue: DurableQueue) -> None:
    segments = [seg(1, 3), seg(2, 1), seg(3, 5)]
    assert depth(queue) == (0, 0, 0)
    await queue.commit(segments)
    size = sum(len(s.lines) + ROW_OVERHEAD for s in segments)
    assert depth(queue) == (3, 9, size)

    rows = await queue.read(0, 100)
    assert [(r.lines, r.points, r.first_ts_ms, r.received_ms) for r in rows] == [
        (s.lines, s.points, s.first_ts_ms, s.received_ms) for s in segments
    ]
    assert [r.id for r in rows] == sorted(r.id for r in rows)
    assert len({r.id for r in rows}) == 3

    # Removed rows stop counting at once; their DELETE rides on the next commit (or flush).
    queue.remove(rows[:2])
    assert depth(queue) == (1, 5, len(segments[2].lines) + ROW_OVERHEAD)
    assert queue.has_pending_deletes
    await queue.flush()
    assert not queue.has_pending_deletes
    rest = await queue.read(0, 100)
    assert [r.lines for r in rest] == [segments[2].lines]
    queue.remove(rest)
    assert depth(queue) == (0, 0, 0)
    await queue.commit([seg(4)])  # the pending delete goes with this commit
    assert not queue.has_pending_deletes
    assert [r.lines for r in await queue.read(0, 100)] == [seg(4).lines]
    assert depth(queue) == (1, 1, seg(4).size)


async def test_read_after_id(queue: DurableQueue) -> None:
    await queue.commit([seg(i) for i in range(5)])
    rows = await queue.read(0, 100)
    later = await queue.read(rows[1].id, 100)
    assert [r.id for r in later] == [r.id for r in rows[2:]]
    assert await queue.read(rows[-1].id, 100) == []


async def test_depth_survives_close_and_reopen(path: Path) -> None:
    q = await open_queue(path)
    await q.commit([seg(1, 2), seg(2, 3), seg(3, 4)])
    rows = await q.read(0, 2)  # only the first segment fits in 2 points
    assert [r.points for r in rows] == [2]
    q.remove(rows)
    before = depth(q)
    assert before[:2] == (2, 7)
    await q.close()  # applies the pending delete

    q2 = await open_queue(path)
    try:
        assert depth(q2) == before
        rows = await q2.read(0, 100)
        assert [r.points for r in rows] == [3, 4]
        assert rows[0].lines == seg(2, 3).lines
    finally:
        await q2.close()


async def test_read_respects_max_points(queue: DurableQueue) -> None:
    await queue.commit([seg(i, points=p) for i, p in enumerate([4, 4, 4, 1, 10])])
    assert [r.points for r in await queue.read(0, 8)] == [4, 4]
    assert [r.points for r in await queue.read(0, 9)] == [4, 4]
    assert [r.points for r in await queue.read(0, 12)] == [4, 4, 4]
    assert [r.points for r in await queue.read(0, 13)] == [4, 4, 4, 1]
    assert [r.points for r in await queue.read(0, 1000)] == [4, 4, 4, 1, 10]


async def test_read_returns_at_least_one_segment(queue: DurableQueue) -> None:
    await queue.commit([seg(1, points=50), seg(2, points=1)])
    rows = await queue.read(0, 10)
    assert [r.points for r in rows] == [50]
    rows = await queue.read(0, 1)
    assert [r.points for r in rows] == [50]
    assert [r.points for r in await queue.read(rows[0].id, 1)] == [1]


async def test_has_room_flips_at_max_bytes(path: Path) -> None:
    s = seg(1, points=10)
    q = await open_queue(path, max_bytes=3 * s.size)
    try:
        assert q.has_room()
        await q.commit([s, s])
        assert q.depth_bytes == 2 * s.size
        assert q.has_room()
        await q.commit([s])
        assert q.depth_bytes == 3 * s.size == q.max_bytes
        assert not q.has_room()
        rows = await q.read(0, 10)
        q.remove(rows)
        assert q.has_room()
        await q.wait_for_room()  # returns at once when there is room
    finally:
        await q.close()

    # A queue reopened over its bound knows it is full.
    q = await open_queue(path, max_bytes=s.size)
    try:
        assert q.depth_bytes == 2 * s.size
        assert not q.has_room()
    finally:
        await q.close()


async def test_a_failed_commit_changes_nothing(queue: DurableQueue, path: Path) -> None:
    await queue.commit([seg(1), seg(2)])
    [first] = await queue.read(0, 1)
    queue.remove([first])
    before = depth(queue), queue.dead_total
    with pytest.raises(TypeError):  # the sensor record cannot be serialised: the transaction rolls back
        await queue.commit([seg(3), seg(4)], [dead(1)], [("f1", "s1", {"bad": object()})])
    assert (depth(queue), queue.dead_total) == before
    assert [r.lines for r in await queue.read(0, 100)] == [seg(1).lines, seg(2).lines]
    assert DeadLetterReader(path).latest(10) == []
    # The queue still works, and the delete that rolled back goes with the next commit.
    assert queue.has_pending_deletes
    await queue.commit([seg(5)])
    assert [r.lines for r in await queue.read(0, 100)] == [seg(2).lines, seg(5).lines]
    assert depth(queue)[:2] == (2, 2)


async def test_sensors_are_stored(queue: DurableQueue) -> None:
    await queue.commit((), (), [("f1", "s1", {"factory_id": "f1", "sensor_id": "s1", "readings": 3})])
    await queue.commit((), (), [("f1", "s1", {"factory_id": "f1", "sensor_id": "s1", "readings": 5})])
    assert await queue.load_sensors() == [{"factory_id": "f1", "sensor_id": "s1", "readings": 5}]


# -- dead letters ----------------------------------------------------------------------------
async def test_dead_letters_are_bounded_oldest_evicted(path: Path) -> None:
    q = await open_queue(path, dlq_max_items=5)
    reader = DeadLetterReader(path)
    try:
        await q.add_dead_letters([dead(i) for i in range(3)])
        assert (q.dead_total, q.dead_evicted) == (3, 0)
        await q.add_dead_letters([dead(i) for i in range(3, 7)])
        assert (q.dead_total, q.dead_evicted) == (5, 2)
        assert [d["detail"] for d in reader.latest(100)] == [f"detail {i}" for i in (6, 5, 4, 3, 2)]
        # More at once than the bound holds: only the newest stay.
        await q.commit([seg(1)], [dead(i) for i in range(10, 18)])
        assert (q.dead_total, q.dead_evicted) == (5, 10)
        assert [d["detail"] for d in reader.latest(100)] == [f"detail {i}" for i in (17, 16, 15, 14, 13)]
        assert q.depth_rows == 1
    finally:
        await q.close()

    q = await open_queue(path, dlq_max_items=5)
    try:
        assert (q.dead_total, q.dead_evicted) == (5, 10)
        await q.add_dead_letters([dead(20)])
        assert (q.dead_total, q.dead_evicted) == (5, 11)
    finally:
        await q.close()
    q = await open_queue(path, dlq_max_items=5)
    try:
        assert (q.dead_total, q.dead_evicted) == (5, 11)
    finally:
        await q.close()


async def test_latest_is_newest_first_and_filters_by_reason(queue: DurableQueue, path: Path) -> None:
    reasons = ["invalid_json", "invalid_schema", "too_large", "invalid_schema", "invalid_topic"]
    await queue.add_dead_letters([dead(i, r) for i, r in enumerate(reasons)])
    reader = DeadLetterReader(path)
    items = reader.latest(10)
    assert [i["reason"] for i in items] == list(reversed(reasons))
    assert set(items[0]) == {"received_at", "topic", "reason", "detail", "payload"}
    assert items[0] == {
        "received_at": "2025-11-26T06:40:55.000Z",
        "topic": "moby/f1/s4/telemetry",
        "reason": "invalid_topic",
        "detail": "detail 4",
        "payload": "payload 4",
    }
    assert [i["detail"] for i in reader.latest(2)] == ["detail 4", "detail 3"]
    assert [i["detail"] for i in reader.latest(10, "invalid_schema")] == ["detail 3", "detail 1"]
    assert [i["detail"] for i in reader.latest(1, "invalid_schema")] == ["detail 3"]
    assert reader.latest(10, "write_rejected") == []


async def test_latest_decodes_invalid_utf8_with_backslash_escapes(queue: DurableQueue, path: Path) -> None:
    await queue.add_dead_letters(
        [dead(1, payload=b'{"a": "\xff\xfe"}'), dead(2, payload="é✓".encode()), dead(3, payload=b"")]
    )
    items = DeadLetterReader(path).latest(10)
    assert [i["payload"] for i in items] == ["", "é✓", '{"a": "\\xff\\xfe"}']


async def test_huge_dead_payloads_are_truncated_to_the_contract_limit(
    queue: DurableQueue, path: Path
) -> None:
    await queue.add_dead_letters([dead(1, "too_large", payload=b"x" * (1024 * 1024))])
    [item] = DeadLetterReader(path).latest(1)
    assert len(item["payload"]) == 256 * 1024


async def test_reader_sees_commits_while_the_queue_is_open(queue: DurableQueue, path: Path) -> None:
    reader = DeadLetterReader(path)
    assert reader.latest(10) == []
    await queue.add_dead_letters([dead(1)])
    assert len(reader.latest(10)) == 1


async def test_a_queue_file_from_the_previous_release_still_works(path: Path) -> None:
    path.parent.mkdir(parents=True)
    conn = sqlite3.connect(path)
    conn.executescript(
        "CREATE TABLE queue (id INTEGER PRIMARY KEY, topic TEXT NOT NULL, lines BLOB NOT NULL, "
        "points INTEGER NOT NULL, first_ts_ms INTEGER NOT NULL, received_ms INTEGER NOT NULL);"
        "INSERT INTO queue (topic, lines, points, first_ts_ms, received_ms) "
        "VALUES ('moby/f1/s1/telemetry', 'm f=1.0 1\n', 1, 1, 1);"
    )
    conn.close()
    q = await open_queue(path)
    try:
        assert q.depth_points == 1
        await q.commit([seg(1)])
        assert [r.points for r in await q.read(0, 100)] == [1, 1]
    finally:
        await q.close()


async def test_ids_are_never_reused_after_the_queue_empties(queue: DurableQueue) -> None:
    """The writer reads "id > the last id it handed out"; a reused id would hide a new row."""
    await queue.commit([seg(1), seg(2)])
    rows = await queue.read(0, 10)
    cursor = rows[-1].id
    queue.remove(rows)
    await queue.flush()  # the queue is now empty on disk
    await queue.commit([seg(3)])
    assert [r.lines for r in await queue.read(cursor, 10)] == [seg(3).lines]


async def test_fresh_rows_are_handed_to_the_writer_from_memory(
    queue: DurableQueue, path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    await queue.commit([seg(1, 2), seg(2, 3)])

    def no_disk(*args: object) -> None:
        raise AssertionError("read from disk")

    monkeypatch.setattr(queue, "_read", no_disk)
    rows = await queue.read(0, 100)
    monkeypatch.undo()
    # ... and they are exactly what is on disk
    other = DurableQueue(path, max_bytes=MiB, dlq_max_items=10)
    await other.open()
    try:
        assert await other.read(0, 100) == rows
    finally:
        await other.close()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    steps=st.lists(st.tuples(st.integers(0, 3), st.integers(1, 12)), min_size=1, max_size=25),
    hot_segments=st.integers(0, 4),
)
def test_the_writer_sees_every_row_once_in_order_whatever_the_memory_bound(
    tmp_path: Path, steps: list[tuple[int, int]], hot_segments: int
) -> None:
    """Commits and reads interleaved, with a memory bound of a few rows: the reader, moving
    forward from its cursor as the writer does, gets every committed row once, in order."""

    async def run() -> None:
        path = tmp_path / f"q-{uuid.uuid4().hex}.sqlite"
        size = len(seg(0, 2).lines) + ROW_OVERHEAD
        q = DurableQueue(
            path, max_bytes=MiB, dlq_max_items=10, sync="normal", hot_max_bytes=hot_segments * size
        )
        await q.open()
        committed: list[bytes] = []
        seen: list[StoredSegment] = []
        try:
            for n, (commits, max_points) in enumerate(steps):
                batch = [seg(100 * n + i, 2) for i in range(commits)]
                await q.commit(batch)
                committed += [b.lines for b in batch]
                rows = await q.read(seen[-1].id if seen else 0, max_points)
                seen += rows
                q.remove(rows)
            while rows := await q.read(seen[-1].id if seen else 0, 5):
                seen += rows
        finally:
            await q.close()
        assert [r.lines for r in seen] == committed
        assert [r.id for r in seen] == sorted({r.id for r in seen})

    asyncio.run(run())


async def test_a_rowid_queue_from_an_older_release_is_migrated(path: Path) -> None:
    path.parent.mkdir(parents=True)
    conn = sqlite3.connect(path)
    conn.executescript(
        "CREATE TABLE queue (id INTEGER PRIMARY KEY, lines BLOB NOT NULL, points INTEGER NOT NULL,"
        " first_ts_ms INTEGER NOT NULL, received_ms INTEGER NOT NULL);"
        "INSERT INTO queue VALUES (7, x'6c0a', 1, 1, 1);"
        "PRAGMA user_version = 2;"
    )
    conn.close()
    q = await open_queue(path)
    try:
        [row] = await q.read(0, 10)
        assert (row.id, row.lines) == (7, b"l\n")
        q.remove([row])
        await q.flush()
        await q.commit([seg(8)])
        assert (await q.read(7, 10))[0].id > 7
    finally:
        await q.close()


# -- dead letters bounded by bytes, read a page at a time ------------------------------------------
async def test_dead_letters_are_bounded_by_bytes_oldest_evicted_and_counted(path: Path) -> None:
    big = b"x" * 250_000
    q = DurableQueue(path, max_bytes=MiB, dlq_max_items=100_000, dlq_max_bytes=MiB, sync="normal")
    await q.open()
    try:
        await q.add_dead_letters([dead(i, payload=big) for i in range(3)])
        assert (q.dead_total, q.dead_evicted) == (3, 0)
        await q.add_dead_letters([dead(i, payload=big) for i in range(3, 10)])
        # 4 of 250 KB fit in 1 MiB with their topic and detail; the 6 oldest went.
        assert (q.dead_total, q.dead_evicted) == (4, 6)
        assert q.dead_bytes <= MiB
        assert [d["detail"] for d in DeadLetterReader(path).latest(100)] == [
            f"detail {i}" for i in (9, 8, 7, 6)
        ]
        await q.add_dead_letters([dead(20)])  # a small one fits beside them
        assert (q.dead_total, q.dead_evicted) == (5, 6)
        held = q.dead_bytes
    finally:
        await q.close()
    q = DurableQueue(path, max_bytes=MiB, dlq_max_items=100_000, dlq_max_bytes=MiB, sync="normal")
    await q.open()
    try:  # counted again from the file at start, as the store counts them
        assert (q.dead_total, q.dead_bytes, q.dead_evicted) == (5, held, 6)
    finally:
        await q.close()


async def test_dead_letters_are_read_newest_first_a_chunk_at_a_time(queue: DurableQueue, path: Path) -> None:
    await queue.add_dead_letters([dead(i, payload=b"p" * 1000) for i in range(10)])
    items = DeadLetterReader(path).newest_first()
    first = take_bytes(items, 2500)
    assert [orjson.loads(e)["detail"] for _, e in first] == ["detail 9", "detail 8", "detail 7"]
    rest = take_bytes(items, 10**9)
    assert len(rest) == 7 and take_bytes(items, 1) == []
    older = DeadLetterReader(path).newest_first(before_id=first[-1][0], reason="invalid_json")
    assert [orjson.loads(e)["detail"] for _, e in take_bytes(older, 1)] == ["detail 6"]
    older.close()


async def test_new_value_names_are_kept(path: Path) -> None:
    q = await open_queue(path)
    try:
        await q.commit((), fields=[("vibration", "a"), ("vibration", "b"), ("noise", "a")])
        await q.commit((), fields=[("vibration", "a")])
    finally:
        await q.close()
    q = await open_queue(path)
    try:
        assert sorted(await q.load_fields()) == [("noise", "a"), ("vibration", "a"), ("vibration", "b")]
    finally:
        await q.close()
