"""The durable queue between the MQTT subscriber and the InfluxDB writer, and the dead-letter store.

One SQLite database in WAL mode under the data dir holds five tables: ``queue`` (encoded
telemetry waiting for InfluxDB, one row per group commit), ``dead_letters`` (rejected input,
bounded by count and by bytes, oldest evicted), ``sensors`` (the registry), ``fields`` (the value
names each measurement has, for the field budget) and ``meta`` (counters that must survive
restarts). Every mutation runs on one dedicated thread through one connection, so SQLite never
sees two writers and the event loop never blocks on disk; the InfluxDB writer reads through a
second, read-only connection on its own thread (WAL lets readers run beside the writer), and
the HTTP API opens its own. Rows InfluxDB confirmed are deleted in the *next* group commit's
transaction rather than in one of their own: a delete needs no fsync of its own (replaying a
confirmed row after a crash writes the same points again, which is harmless).

The queue is bounded by the bytes it holds: :meth:`has_room` turns false past ``max_bytes`` and
the ingest side then stops acknowledging to the broker, which keeps the backlog instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import sqlite3
import time
from collections import deque
from collections.abc import Callable, Generator, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import orjson

T = TypeVar("T")

_QUEUE_TABLE = """
CREATE TABLE IF NOT EXISTS queue (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    lines BLOB NOT NULL,
    points INTEGER NOT NULL,
    first_ts_ms INTEGER NOT NULL,
    received_ms INTEGER NOT NULL
);
"""
_SCHEMA = (
    _QUEUE_TABLE
    + """
CREATE TABLE IF NOT EXISTS dead_letters (
    id INTEGER PRIMARY KEY,
    received_at REAL NOT NULL,
    topic TEXT NOT NULL,
    reason TEXT NOT NULL,
    detail TEXT NOT NULL,
    payload BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS sensors (
    factory_id TEXT NOT NULL,
    sensor_id TEXT NOT NULL,
    record TEXT NOT NULL,
    PRIMARY KEY (factory_id, sensor_id)
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS fields (
    measurement TEXT NOT NULL,
    name TEXT NOT NULL,
    PRIMARY KEY (measurement, name)
) WITHOUT ROWID;
"""
)
# Bytes a queue row costs beyond its lines (rowid, integers, SQLite record overhead).
ROW_OVERHEAD = 48
PAGE_SIZE = 64 * 1024
WAL_CHECKPOINT_BYTES = 8 * 1024 * 1024
# Dead-letter payloads are kept whole up to the contract's message limit.
MAX_DEAD_PAYLOAD = 256 * 1024
# Bytes a dead letter counts for beyond its payload, detail and topic.
DEAD_ROW_OVERHEAD = 64
_DEAD_SIZE = f"length(payload) + length(detail) + length(topic) + {DEAD_ROW_OVERHEAD}"


@dataclass(frozen=True, slots=True)
class Segment:
    """Line protocol of many messages, stored as one row.

    One row per group of messages (not per message) keeps SQLite's per-row cost, and the
    thread hand-offs that come with each row, off the hot path.
    """

    lines: bytes
    points: int
    first_ts_ms: int  # the oldest reading's own time
    received_ms: int  # when the oldest message of the segment reached the backend

    @property
    def size(self) -> int:
        return len(self.lines) + ROW_OVERHEAD


@dataclass(frozen=True, slots=True)
class StoredSegment(Segment):
    id: int = 0


@dataclass(frozen=True, slots=True)
class DeadLetter:
    topic: str
    reason: str
    detail: str
    payload: bytes
    received_at: float

    @property
    def size(self) -> int:
        """What it counts for against the store's byte bound (as :data:`_DEAD_SIZE` in SQL)."""
        payload = min(len(self.payload), MAX_DEAD_PAYLOAD)
        return payload + len(self.detail) + len(self.topic) + DEAD_ROW_OVERHEAD


def connect(path: Path, *, readonly: bool = False, sync: str = "full") -> sqlite3.Connection:
    if readonly:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False)
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        # Segments are blobs of ~0.5 MB: 64 KiB pages write them in 16x fewer system calls than
        # the default 4 KiB (only takes effect when the file is created; older files keep theirs).
        conn.execute(f"PRAGMA page_size={PAGE_SIZE}")
        conn.execute("PRAGMA journal_mode=WAL")
        # the default 1,000-page WAL would be 64 MiB at this page size
        conn.execute(f"PRAGMA wal_autocheckpoint={WAL_CHECKPOINT_BYTES // PAGE_SIZE}")
        conn.execute(f"PRAGMA synchronous={'FULL' if sync == 'full' else 'NORMAL'}")
        conn.executescript(_SCHEMA)
    conn.execute("PRAGMA busy_timeout=5000")
    return conn


class DurableQueue:
    def __init__(
        self,
        path: Path,
        *,
        max_bytes: int,
        dlq_max_items: int,
        dlq_max_bytes: int = 256 * 1024 * 1024,
        sync: str = "full",
        hot_max_bytes: int = 32 * 1024 * 1024,
    ) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.dlq_max_items = dlq_max_items
        self.dlq_max_bytes = dlq_max_bytes
        self._sync = sync
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="moby-queue")
        self._read_executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="moby-queue-read")
        self._conn: sqlite3.Connection | None = None
        self._reader: sqlite3.Connection | None = None
        self._deletes: list[tuple[int, int]] = []  # confirmed id ranges, deleted at next commit
        # Depth is counted from disk at open and then kept in memory by the event loop thread;
        # the dead-letter counters belong to the queue thread.
        self.depth_rows = 0
        self.depth_points = 0
        self.depth_bytes = 0
        self.dead_total = 0
        self.dead_bytes = 0
        self.dead_evicted = 0
        self._room = asyncio.Event()
        # Rows committed since open, in id order, not yet handed to the writer: every row with
        # id > _hot_floor that is still queued is here. Bounded by bytes (oldest dropped).
        self.hot_max_bytes = hot_max_bytes
        self._hot: deque[StoredSegment] = deque()
        self._hot_bytes = 0
        self._hot_floor = 2**63

    # -- plumbing ------------------------------------------------------------------------------
    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    @property
    def conn(self) -> sqlite3.Connection:
        assert self._conn is not None, "queue is not open"
        return self._conn

    async def open(self) -> None:
        await self._run(self._open)
        self._reader = await asyncio.get_running_loop().run_in_executor(
            self._read_executor, partial(connect, self.path, readonly=True)
        )
        self._update_room()

    def _open(self) -> None:
        self._conn = connect(self.path, sync=self._sync)
        self._migrate()
        rows, points, size = self.conn.execute(
            f"SELECT count(*), coalesce(sum(points), 0), "
            f"coalesce(sum(length(lines) + {ROW_OVERHEAD}), 0) FROM queue"
        ).fetchone()
        self.depth_rows, self.depth_points, self.depth_bytes = rows, points, size
        self.dead_total, self.dead_bytes = self.conn.execute(
            f"SELECT count(*), coalesce(sum({_DEAD_SIZE}), 0) FROM dead_letters"
        ).fetchone()
        row = self.conn.execute("SELECT value FROM meta WHERE key='dead_evicted'").fetchone()
        self.dead_evicted = row[0] if row else 0
        # Rows after the highest id ever used will all pass through _keep_hot.
        row = self.conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'queue'").fetchone()
        self._hot_floor = row[0] if row else 0

    def _migrate(self) -> None:
        """Bring a queue file from an older release to this schema (``PRAGMA user_version``)."""
        version = self.conn.execute("PRAGMA user_version").fetchone()[0]
        if version < 2:
            columns = {row[1] for row in self.conn.execute("PRAGMA table_info(queue)")}
            if "topic" in columns:  # 0.1 kept one row per message with its topic
                self.conn.execute("ALTER TABLE queue DROP COLUMN topic")
        if version < 3:
            # Ids must never be reused: the writer reads "id > last id handed out", so a plain
            # rowid, which restarts at 1 once the queue has emptied, hid new rows from it.
            (sql,) = self.conn.execute("SELECT sql FROM sqlite_master WHERE name = 'queue'").fetchone()
            if "AUTOINCREMENT" not in sql.upper():
                self.conn.executescript(
                    "BEGIN;"
                    "ALTER TABLE queue RENAME TO queue_old;"
                    + _QUEUE_TABLE
                    + "INSERT INTO queue (id, lines, points, first_ts_ms, received_ms) "
                    "SELECT id, lines, points, first_ts_ms, received_ms FROM queue_old;"
                    "DROP TABLE queue_old;"
                    "COMMIT;"
                )
            self.conn.execute("PRAGMA user_version = 3")

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None
        if self._conn is not None:
            await self._run(self._close, self._take_deletes())
        self._executor.shutdown(wait=True)
        self._read_executor.shutdown(wait=True)

    def _close(self, deletes: list[tuple[int, int]]) -> None:
        self._delete_ranges(deletes)
        self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        self.conn.close()
        self._conn = None

    # -- backpressure ------------------------------------------------------------------------
    def has_room(self) -> bool:
        return self.depth_bytes < self.max_bytes

    def _update_room(self) -> None:
        if self.has_room():
            self._room.set()
        else:
            self._room.clear()

    async def wait_for_room(self) -> None:
        await self._room.wait()

    # -- the ingest side: one transaction per group commit ----------------------------------
    async def commit(
        self,
        entries: Sequence[Segment],
        dead: Sequence[DeadLetter] = (),
        sensors: Sequence[tuple[str, str, dict[str, Any]]] = (),
        fields: Sequence[tuple[str, str]] = (),
    ) -> None:
        """One transaction: new segments, dead letters, sensor records, new value names, pending
        deletes."""
        ids = await self._run(self._commit, entries, dead, sensors, fields, self._take_deletes())
        self._keep_hot(entries, ids)
        self.depth_rows += len(entries)
        self.depth_points += sum(e.points for e in entries)
        self.depth_bytes += sum(e.size for e in entries)
        self._update_room()

    def _take_deletes(self) -> list[tuple[int, int]]:
        deletes, self._deletes = self._deletes, []
        return deletes

    def _commit(
        self,
        entries: Sequence[Segment],
        dead: Sequence[DeadLetter],
        sensors: Sequence[tuple[str, str, dict[str, Any]]],
        fields: Sequence[tuple[str, str]],
        deletes: Sequence[tuple[int, int]],
    ) -> list[int]:
        conn = self.conn
        ids: list[int] = []
        conn.execute("BEGIN")
        try:
            for e in entries:  # a few segments per commit: one execute each, for their ids
                cursor = conn.execute(
                    "INSERT INTO queue (lines, points, first_ts_ms, received_ms) VALUES (?, ?, ?, ?)",
                    (e.lines, e.points, e.first_ts_ms, e.received_ms),
                )
                assert cursor.lastrowid is not None
                ids.append(cursor.lastrowid)
            self._delete_ranges(deletes)
            evicted, evicted_bytes = self._insert_dead(dead) if dead else (0, 0)
            if sensors:
                conn.executemany(
                    "INSERT OR REPLACE INTO sensors (factory_id, sensor_id, record) VALUES (?, ?, ?)",
                    [(f, s, orjson.dumps(r).decode()) for f, s, r in sensors],
                )
            if fields:
                conn.executemany("INSERT OR IGNORE INTO fields (measurement, name) VALUES (?, ?)", fields)
            conn.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):  # a failed COMMIT may have rolled back already
                conn.execute("ROLLBACK")
            self._deletes.extend(deletes)  # retried with the next commit
            raise
        self.dead_total += len(dead) - evicted
        self.dead_bytes += sum(d.size for d in dead) - evicted_bytes
        self.dead_evicted += evicted
        return ids

    def _delete_ranges(self, deletes: Sequence[tuple[int, int]]) -> None:
        if deletes:
            self.conn.executemany("DELETE FROM queue WHERE id BETWEEN ? AND ?", deletes)

    def _insert_dead(self, dead: Sequence[DeadLetter]) -> tuple[int, int]:
        """Insert dead letters, then evict the oldest until both bounds hold: (evicted, their bytes)."""
        conn = self.conn
        conn.executemany(
            "INSERT INTO dead_letters (received_at, topic, reason, detail, payload) VALUES (?, ?, ?, ?, ?)",
            [(d.received_at, d.topic, d.reason, d.detail, d.payload[:MAX_DEAD_PAYLOAD]) for d in dead],
        )
        excess_items = self.dead_total + len(dead) - self.dlq_max_items
        excess_bytes = self.dead_bytes + sum(d.size for d in dead) - self.dlq_max_bytes
        if excess_items <= 0 and excess_bytes <= 0:
            return 0, 0
        evicted = freed = 0
        last_id = None
        # length() of a blob reads its size, not its pages: walking the oldest rows is cheap.
        for id_, size in conn.execute(f"SELECT id, {_DEAD_SIZE} FROM dead_letters ORDER BY id"):
            if evicted >= excess_items and freed >= excess_bytes:
                break
            evicted += 1
            freed += size
            last_id = id_
        conn.execute("DELETE FROM dead_letters WHERE id <= ?", (last_id,))
        conn.execute(
            "INSERT INTO meta (key, value) VALUES ('dead_evicted', ?) "
            "ON CONFLICT(key) DO UPDATE SET value = value + excluded.value",
            (evicted,),
        )
        return evicted, freed

    async def add_dead_letters(self, dead: Sequence[DeadLetter]) -> None:
        await self.commit((), dead)

    # -- the writer side ---------------------------------------------------------------------
    def _keep_hot(self, entries: Sequence[Segment], ids: Sequence[int]) -> None:
        """Keep just-committed rows in memory for the writer (bounded; the disk has them all)."""
        hot = self._hot
        for e, id_ in zip(entries, ids, strict=True):
            hot.append(StoredSegment(e.lines, e.points, e.first_ts_ms, e.received_ms, id_))
            self._hot_bytes += e.size
        while self._hot_bytes > self.hot_max_bytes and hot:
            dropped = hot.popleft()
            self._hot_bytes -= dropped.size
            self._hot_floor = dropped.id

    async def read(self, after_id: int, max_points: int) -> list[StoredSegment]:
        """Rows with id > after_id in order, up to max_points points (at least one row).

        The writer reads forward only. While it keeps up, the rows it asks for were committed
        moments ago and are still in memory: they are handed over from there, without a round
        trip through SQLite on the read thread (measured at 20-60 ms per read while ingest kept
        the interpreter busy). After a restart, or when the writer fell behind by more than
        ``hot_max_bytes`` (InfluxDB down), it reads from disk until it has caught up.
        """
        if after_id >= self._hot_floor:
            return self._read_hot(after_id, max_points)
        return await asyncio.get_running_loop().run_in_executor(
            self._read_executor, self._read, after_id, max_points
        )

    def _read_hot(self, after_id: int, max_points: int) -> list[StoredSegment]:
        hot = self._hot
        while hot and hot[0].id <= after_id:  # already read from disk
            self._hot_bytes -= hot.popleft().size
        rows: list[StoredSegment] = []
        points = 0
        while hot and not (rows and points + hot[0].points > max_points):
            row = hot.popleft()
            self._hot_bytes -= row.size
            rows.append(row)
            points += row.points
        if rows:
            self._hot_floor = rows[-1].id
        return rows

    def _read(self, after_id: int, max_points: int) -> list[StoredSegment]:
        assert self._reader is not None, "queue is not open"
        cursor = self._reader.execute(
            "SELECT id, lines, points, first_ts_ms, received_ms FROM queue WHERE id > ? ORDER BY id LIMIT ?",
            (after_id, max_points),
        )
        rows: list[StoredSegment] = []
        points = 0
        for id_, lines, n, first_ts_ms, received_ms in cursor:
            if rows and points + n > max_points:
                break
            rows.append(StoredSegment(lines, n, first_ts_ms, received_ms, id_))
            points += n
        cursor.close()
        return rows

    def remove(self, rows: Sequence[StoredSegment]) -> None:
        """Rows InfluxDB confirmed (or that went to the dead-letter store) leave the queue.

        They stop counting at once; the DELETE rides on the next commit (:meth:`flush` when idle).
        A batch is a contiguous id range read in order, so one range covers it.
        """
        if not rows:
            return
        self._deletes.append((rows[0].id, rows[-1].id))
        self.depth_rows -= len(rows)
        self.depth_points -= sum(r.points for r in rows)
        self.depth_bytes -= sum(r.size for r in rows)
        self._update_room()

    @property
    def has_pending_deletes(self) -> bool:
        return bool(self._deletes)

    async def flush(self) -> None:
        """Apply pending deletes now (the writer calls this when ingest is idle)."""
        if self._deletes:
            await self.commit(())

    # -- the registry ------------------------------------------------------------------------
    async def load_sensors(self) -> list[dict[str, Any]]:
        return await self._run(
            lambda: [orjson.loads(r[0]) for r in self.conn.execute("SELECT record FROM sensors")]
        )

    async def load_fields(self) -> list[tuple[str, str]]:
        """Every (measurement, value name) pair admitted so far."""
        return await self._run(
            lambda: [(m, n) for m, n in self.conn.execute("SELECT measurement, name FROM fields")]
        )


def _dead_item(received_at: float, topic: str, code: str, detail: str, payload: bytes) -> dict[str, Any]:
    return {
        "received_at": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(received_at))
        + f".{int(received_at * 1000) % 1000:03d}Z",
        "topic": topic,
        "reason": code,
        "detail": detail,
        "payload": payload.decode("utf-8", "backslashreplace"),
    }


class DeadLetterReader:
    """Read-only view of the dead-letter store for the HTTP API."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def latest(self, limit: int, reason: str | None = None) -> list[dict[str, Any]]:
        items = self.newest_first(reason=reason)
        try:
            return [orjson.loads(encoded) for _, encoded in itertools.islice(items, limit)]
        finally:
            items.close()

    def newest_first(
        self, *, before_id: int | None = None, reason: str | None = None
    ) -> Generator[tuple[int, bytes]]:
        """Dead letters older than ``before_id`` (all when None), newest first, as (id, JSON of the
        item), read lazily: a caller pages through a store of any size in bounded memory.

        Blocking (SQLite): call ``next`` from a worker thread, one thread at a time; ``close()``
        it when done early.
        """
        conn = connect(self.path, readonly=True)
        try:
            sql = "SELECT id, received_at, topic, reason, detail, payload FROM dead_letters WHERE id < ?"
            args: tuple[Any, ...] = (before_id if before_id is not None else 2**63 - 1,)
            if reason:
                sql += " AND reason = ?"
                args += (reason,)
            for id_, received_at, topic, code, detail, payload in conn.execute(
                f"{sql} ORDER BY id DESC", args
            ):
                yield id_, orjson.dumps(_dead_item(received_at, topic, code, detail, payload))
        finally:
            conn.close()


def take_bytes(items: Iterator[tuple[int, bytes]], budget: int) -> list[tuple[int, bytes]]:
    """Items from ``items`` until about ``budget`` bytes (at least one, unless it is exhausted)."""
    taken: list[tuple[int, bytes]] = []
    size = 0
    for item in items:
        taken.append(item)
        size += len(item[1])
        if size >= budget:
            break
    return taken
