"""The edge agent's store-and-forward buffer: every reading is on disk before it is published.

One SQLite file (WAL, ``synchronous=FULL`` by default) holds three tables: ``readings`` (each
reading as the compact JSON object it is published as), ``sequences`` (sensors' next ``seq``)
and ``counters`` (what was dropped or refused). A sensor's next ``seq`` is the larger of its
``sequences`` row and its newest stored reading's ``seq`` + 1: an append writes only the reading
(whose row carries the ``seq``, in the same transaction), and the transaction that deletes a
sensor's newest reading (ack, drop, expiry) writes ``sequences``. So after a restart or a power cut
a sensor continues exactly after its last committed reading, a ``seq`` is never handed out twice,
and only a reset of the file sends it back down (the contract reads that as "the store was reset").
A sensor's first ``seq`` is 0.

Timestamps. A sensor's readings get strictly increasing ``ts``: one whose clock reading is not
after the sensor's previous one (two samples in the same millisecond when a late sampler
catches up, a clock slewed back) is stored at the previous ``ts`` + 1 ms. In InfluxDB a point
*is* its series and timestamp, so two readings of one sensor in the same millisecond would be
one point: the later one's values, ``seq`` included, would silently replace the earlier one's,
a reading acknowledged and deleted here but missing downstream. (Across a restart only the
readings still buffered are known; a restart takes far longer than a millisecond.)

The agent's loop: :meth:`EdgeBuffer.append` (or :meth:`~EdgeBuffer.append_many`) a reading and
publish it only after the call returned (it is committed then); :meth:`~EdgeBuffer.pending` gives
a sensor's backlog oldest-first, already cut to fit one batch message (:func:`batch_payload`);
:meth:`~EdgeBuffer.ack` the row ids once the broker's PUBACK came back; call
:meth:`~EdgeBuffer.expire` now and then. Pacing the replay so that live data is not starved is
the agent's job: the buffer only keeps the order and the books.

Bounds. ``max_bytes`` bounds the readings' bytes as :meth:`~EdgeBuffer.size_bytes` counts them
(body + sensor key + :data:`ROW_OVERHEAD` a row); the file on disk follows it within a small
factor (free pages are reused, never grown past the high-water mark) plus the WAL, which is
truncated back to :data:`WAL_LIMIT` after checkpoints. When a reading would not fit:

- ``drop_oldest`` stores it and deletes the oldest readings of any sensor until the total fits,
  counted in ``dropped_full``. They already had their ``seq``: the backend sees the gap.
- ``refuse_newest`` does not store it and gives it **no** ``seq`` (:meth:`append` returns
  ``None``), counted in ``refused_full``. Refused readings never leave a gap, so a gap in ``seq``
  always means a reading lost *after* it was buffered (dropped here, or lost in transit).

``max_age_s`` is applied by :meth:`~EdgeBuffer.expire` to the readings' own ``ts``, counted in
``dropped_age``. A disk that fills up before ``max_bytes`` is reached refuses the readings of that
call (``None``), counted in ``refused_disk``.

Thread safety and cost: one connection behind one lock; every call is one short transaction.
Appends are fsynced (``sync="full"``); acks and expiry are not (``synchronous=NORMAL`` for that
transaction: the next fsync makes them durable, and a power cut in between only re-sends readings
the backend already has, which is harmless). Batch the appends of a tick with :meth:`append_many`:
one fsync per call, not per reading (one ``append`` costs a whole fsync, ~2-5 ms). The file is
opened in SQLite's exclusive locking mode: a second process opening the same buffer fails
(:class:`BufferInUseError`) rather than handing out the same ``seq`` twice.
"""

from __future__ import annotations

import math
import numbers
import operator
import re
import sqlite3
import threading
import time
from collections import ChainMap, Counter
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Literal, NamedTuple

import orjson

from moby.schema import ID_RE, MAX_PAYLOAD_BYTES, MAX_READINGS, MAX_VALUES, TELEMETRY_SCHEMA, Quality
from moby.schema.payloads import SENSOR_TYPE_PATTERN, VALUE_NAME_PATTERN

SCHEMA_VERSION: Final = 1
_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS readings (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    sensor_key TEXT NOT NULL,
    seq INTEGER NOT NULL,
    ts_ms INTEGER NOT NULL,
    body BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS readings_by_sensor ON readings (sensor_key);
CREATE INDEX IF NOT EXISTS readings_by_ts ON readings (ts_ms);
CREATE TABLE IF NOT EXISTS sequences (sensor_key TEXT PRIMARY KEY, next_seq INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
"""
# What a row costs beyond its body and key: rowid, seq, ts, record headers, the two index entries.
ROW_OVERHEAD: Final = 64  # sensor keys are ASCII (IDs are), so len(key) is its bytes
WAL_LIMIT: Final = 4 * 1024 * 1024
LOCK_WAIT_S: Final = 0.5  # how long an open waits for another process to let go of the file
COUNTERS: Final = ("dropped_full", "dropped_age", "refused_full", "refused_disk")
# Bodies that :func:`batch_payload` can wrap in one message: the envelope and the commas between
# up to 1,000 readings take < 1.2 KiB of the contract's 256 KiB.
BATCH_BODY_BUDGET: Final = MAX_PAYLOAD_BYTES - 2048

_VALUE_NAME_RE: Final = re.compile(VALUE_NAME_PATTERN)
_SENSOR_TYPE_RE: Final = re.compile(SENSOR_TYPE_PATTERN)
_RESERVED_NAMES: Final = frozenset({"seq", "quality"})  # the backend stores these as fields of their own
_MAX_TS: Final = 2**53
_MAX_INT: Final = 2**63  # what JSON encoders carry as an integer
Row = tuple[str, int, int]  # a deleted row: sensor_key, seq, body length
_good_names: set[str] = set()  # value names already checked (a fleet uses a handful)


class DropPolicy(StrEnum):
    DROP_OLDEST = "drop_oldest"
    REFUSE_NEWEST = "refuse_newest"


class BufferInUseError(RuntimeError):
    """Another process has this buffer file open."""


class NewReading(NamedTuple):
    """A reading to buffer; :meth:`EdgeBuffer.append_many` takes a sequence of these."""

    sensor_key: str
    ts_ms: int
    values: Mapping[str, float]
    quality: Quality | str | None = None


@dataclass(frozen=True, slots=True)
class BufferedReading:
    """A stored reading: ``body`` is its compact JSON, exactly as it goes into a message."""

    id: int
    sensor_key: str
    seq: int
    ts_ms: int
    body: bytes

    def reading(self) -> dict[str, Any]:
        decoded: dict[str, Any] = orjson.loads(self.body)
        return decoded


def sensor_key(factory_id: str, sensor_id: str) -> str:
    """``"factory_id/sensor_id"``, checking both IDs against the contract."""
    for name, value in (("factory_id", factory_id), ("sensor_id", sensor_id)):
        if not ID_RE.fullmatch(value):
            raise ValueError(f"{name} {value!r} is not a valid ID")
    return f"{factory_id}/{sensor_id}"


def split_sensor_key(key: str) -> tuple[str, str]:
    """``(factory_id, sensor_id)`` of a sensor key."""
    factory_id, _, sensor_id = key.partition("/")
    sensor_key(factory_id, sensor_id)
    return factory_id, sensor_id


# A body is ``_BODY % (ts, seq, values as JSON, tail)``: the values are encoded before the lock
# is taken, and formatting beats encoding a dict per reading (~0.5 µs against ~3 µs in a batch).
_BODY: Final = b'{"ts":%d,"seq":%d,"values":%b%b'
_TAILS: Final[dict[Quality | None, bytes]] = {
    None: b"}",
    **{q: b',"quality":"%b"}' % q.value.encode() for q in Quality if q != Quality.GOOD},
}


def _check_names(values: Mapping[str, object]) -> None:
    for name in values:
        if not isinstance(name, str) or not _VALUE_NAME_RE.fullmatch(name) or name in _RESERVED_NAMES:
            raise ValueError(f"{name!r} is not a valid value name")
    if len(_good_names) < 10_000:
        _good_names.update(values)


def _check(item: NewReading) -> tuple[str, int, bytes, bytes]:
    """``(key, ts, values JSON, body tail)`` of a reading the backend will accept, or ValueError.

    One bad reading must not sink a batch message, so nothing the contract refuses gets in.

    The hot path (known names, plain finite floats and ints) is a handful of bytecodes a value.
    """
    key, ts, values, quality = item
    if type(ts) is not int:
        ts = operator.index(ts)  # numpy integers; refuses floats
    if not 0 <= ts < _MAX_TS:
        raise ValueError(f"ts {ts} is not epoch milliseconds")
    if not 1 <= len(values) <= MAX_VALUES:
        raise ValueError(f"a reading needs 1 to {MAX_VALUES} values, not {len(values)}")
    if not _good_names.issuperset(values):
        _check_names(values)
    clean: dict[str, float | int] = values if type(values) is dict else dict(values)
    for name, value in values.items():
        kind = type(value)
        if kind is float and value - value == 0.0:  # finite: inf - inf and nan - nan are nan
            continue
        if kind is int and -_MAX_INT < value < _MAX_INT:
            continue
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise ValueError(f"value {name}={value!r} is not a number")
        number = float(value)
        if not math.isfinite(number):
            raise ValueError(f"value {name}={value} is not finite")
        if clean is values:
            clean = dict(values)
        clean[name] = number
    tail = _TAILS[None if quality is None or quality == Quality.GOOD else Quality(quality)]
    return key, ts, orjson.dumps(clean), tail


class EdgeBuffer:
    def __init__(
        self,
        path: Path | str,
        *,
        max_bytes: int,
        max_age_s: float,
        policy: DropPolicy = DropPolicy.DROP_OLDEST,
        sync: Literal["full", "normal"] = "full",
    ) -> None:
        if max_bytes <= 0 or max_age_s <= 0:
            raise ValueError("max_bytes and max_age_s must be positive")
        self.path = Path(path)
        self.max_bytes = max_bytes
        self.max_age_ms = int(max_age_s * 1000)
        self.policy = DropPolicy(policy)
        self._sync = "FULL" if sync == "full" else "NORMAL"
        self._lock = threading.Lock()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, timeout=LOCK_WAIT_S, isolation_level=None, check_same_thread=False)
        try:
            # Exclusive before WAL: the lock is held until close and no shared-memory index is made.
            conn.execute("PRAGMA locking_mode=EXCLUSIVE")
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(f"PRAGMA synchronous={self._sync}")
            conn.execute(f"PRAGMA journal_size_limit={WAL_LIMIT}")
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise RuntimeError(f"{self.path} is buffer schema v{version}; this release reads v1")
            conn.executescript(_SCHEMA)
            conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        except BaseException as e:
            conn.close()
            if isinstance(e, sqlite3.OperationalError) and "locked" in str(e):
                raise BufferInUseError(f"{self.path} is open in another process") from e
            raise
        self._conn: sqlite3.Connection | None = conn
        self._sync_now = self._sync
        # The books, recomputed from disk here and kept in memory after each commit.
        self._depth: dict[str, int] = {}
        self._size = 0
        self._next_seq: dict[str, int] = dict(conn.execute("SELECT sensor_key, next_seq FROM sequences"))
        self._last_ts: dict[str, int] = {}  # each sensor's newest ts: the next one must be later
        for key, count, body_bytes, max_seq, max_ts in conn.execute(
            "SELECT sensor_key, count(*), sum(length(body)), max(seq), max(ts_ms) FROM readings "
            "GROUP BY sensor_key"
        ):
            self._depth[key] = count
            self._size += body_bytes + count * (len(key) + ROW_OVERHEAD)
            self._next_seq[key] = max(self._next_seq.get(key, 0), max_seq + 1)
            self._last_ts[key] = max_ts
        self._counters = dict.fromkeys(COUNTERS, 0)
        self._counters.update(conn.execute("SELECT name, value FROM counters"))
        self._unsaved: Counter[str] = Counter()  # counts not yet written (refusals need no transaction)

    # -- plumbing --------------------------------------------------------------------------------
    @property
    def conn(self) -> sqlite3.Connection:
        if self._conn is None:
            raise RuntimeError("the buffer is closed")
        return self._conn

    def _begin(self, *, durable: bool) -> sqlite3.Connection:
        conn = self.conn
        sync = self._sync if durable else "NORMAL"
        if sync != self._sync_now:
            conn.execute(f"PRAGMA synchronous={sync}")
            self._sync_now = sync
        conn.execute("BEGIN IMMEDIATE")
        return conn

    def _commit(self, conn: sqlite3.Connection, counts: Counter[str]) -> None:
        """Write the counts (with any unsaved ones) and commit; the caller updates its books after."""
        total = self._unsaved + counts
        if total:
            conn.executemany(
                "INSERT INTO counters (name, value) VALUES (?, ?) "
                "ON CONFLICT(name) DO UPDATE SET value = value + excluded.value",
                total.items(),
            )
        conn.execute("COMMIT")
        self._unsaved.clear()
        for name, n in counts.items():
            self._counters[name] += n

    def _rollback(self, conn: sqlite3.Connection) -> None:
        if conn.in_transaction:
            conn.execute("ROLLBACK")

    @staticmethod
    def _save_seqs(conn: sqlite3.Connection, gone: Iterable[Row], nexts: Mapping[str, int]) -> None:
        """Persist the next ``seq`` of the sensors whose newest row is being deleted.

        A sensor's next ``seq`` is the larger of ``sequences.next_seq`` and its newest row's
        ``seq`` + 1, so an append only writes its row; the counter is written when that row goes.
        """
        ends = [(key, seq + 1) for key, seq, _ in gone if seq + 1 == nexts[key]]
        if ends:
            conn.executemany(
                "INSERT INTO sequences (sensor_key, next_seq) VALUES (?, ?) "
                "ON CONFLICT(sensor_key) DO UPDATE SET next_seq = max(next_seq, excluded.next_seq)",
                ends,
            )

    def _forget(self, gone: Iterable[Row]) -> int:
        """Take deleted rows off the books; the number of rows."""
        rows = 0
        for key, _, body_len in gone:
            self._size -= body_len + len(key) + ROW_OVERHEAD
            left = self._depth[key] - 1
            if left:
                self._depth[key] = left
            else:
                del self._depth[key]
            rows += 1
        return rows

    # -- writing ---------------------------------------------------------------------------------
    def append(
        self, sensor_key: str, ts_ms: int, values: Mapping[str, float], quality: Quality | str | None = None
    ) -> int | None:
        """Store one reading; its ``seq``, or ``None`` if it was refused (it then has no ``seq``)."""
        return self.append_many([NewReading(sensor_key, ts_ms, values, quality)])[0]

    def append_many(self, readings: Iterable[NewReading]) -> list[int | None]:
        """Store readings in one transaction (one fsync); the ``seq`` of each, ``None`` if refused.

        A reading that breaks the contract (bad name, non-finite value, ...) raises ValueError
        and nothing of the call is stored. With ``drop_oldest`` a call larger than the whole
        buffer drops its own oldest readings too (they keep their ``seq``: the gap shows it).
        """
        checked = [_check(r) for r in readings]
        refuse = self.policy is DropPolicy.REFUSE_NEWEST
        with self._lock:
            conn = self.conn
            room = self.max_bytes - self._size
            seqs: list[int | None] = []
            rows: list[tuple[str, int, int, bytes]] = []
            advanced: dict[str, int] = {}
            stamped: dict[str, int] = {}
            added = 0
            for key, ts, values, tail in checked:
                seq = advanced.get(key)
                if seq is None:
                    seq = self._next_seq.get(key)
                    if seq is None:
                        split_sensor_key(key)
                        seq = 0
                last_ts = stamped.get(key, self._last_ts.get(key, -1))
                if ts <= last_ts:
                    ts = last_ts + 1  # one point per reading downstream (see the module's docstring)
                body = _BODY % (ts, seq, values, tail)
                size = len(body) + len(key) + ROW_OVERHEAD
                if refuse and size > room:
                    seqs.append(None)
                    continue
                room -= size
                added += size
                advanced[key] = seq + 1
                stamped[key] = ts
                rows.append((key, seq, ts, body))
                seqs.append(seq)
            refused = len(checked) - len(rows)
            if not rows:
                if refused:
                    self._unsaved["refused_full"] += refused
                    self._counters["refused_full"] += refused
                return seqs
            counts: Counter[str] = Counter(refused_full=refused) if refused else Counter()
            dropped: list[Row] = []
            try:
                self._begin(durable=True)
                conn.executemany(
                    "INSERT INTO readings (sensor_key, seq, ts_ms, body) VALUES (?, ?, ?, ?)", rows
                )
                excess = self._size + added - self.max_bytes
                if excess > 0 and not refuse:
                    dropped = self._drop_oldest(conn, excess)
                    self._save_seqs(conn, dropped, ChainMap(advanced, self._next_seq))
                    counts["dropped_full"] += len(dropped)
                self._commit(conn, counts)
            except BaseException as e:
                self._rollback(conn)
                if getattr(e, "sqlite_errorcode", None) != sqlite3.SQLITE_FULL:
                    raise
                self._unsaved["refused_disk"] += len(checked)
                self._counters["refused_disk"] += len(checked)
                return [None] * len(checked)
            self._next_seq.update(advanced)
            self._last_ts.update(stamped)
            self._size += added
            for key, _, _, _ in rows:
                self._depth[key] = self._depth.get(key, 0) + 1
            self._forget(dropped)
            return seqs

    def _drop_oldest(self, conn: sqlite3.Connection, excess: int) -> list[Row]:
        """Delete the oldest rows, any sensor, until at least ``excess`` bytes are freed."""
        gone: list[Row] = []
        last = None
        freed = 0
        cursor = conn.execute("SELECT id, sensor_key, seq, length(body) FROM readings ORDER BY id")
        for id_, key, seq, body_len in cursor:
            gone.append((key, seq, body_len))
            last = id_
            freed += body_len + len(key) + ROW_OVERHEAD
            if freed >= excess:
                break
        cursor.close()
        if last is not None:
            conn.execute("DELETE FROM readings WHERE id <= ?", (last,))
        return gone

    def ack(self, ids: Iterable[int]) -> int:
        """Delete the readings the broker confirmed (row ids); how many were still here."""
        id_list = list(ids)
        if not id_list:
            return 0
        with self._lock:
            conn = self._begin(durable=False)
            try:
                gone = conn.execute(
                    "DELETE FROM readings WHERE id IN (SELECT value FROM json_each(?)) "
                    "RETURNING sensor_key, seq, length(body)",
                    (orjson.dumps(id_list),),
                ).fetchall()
                self._save_seqs(conn, gone, self._next_seq)
                self._commit(conn, Counter())
            except BaseException:
                self._rollback(conn)
                raise
            return self._forget(gone)

    def expire(self, now_ms: int | None = None, *, limit: int = 10_000) -> int:
        """Delete up to ``limit`` readings whose ``ts`` is older than ``max_age_s``; how many.

        The limit keeps one call short: call again while it returns ``limit``.
        """
        if now_ms is None:
            now_ms = time.time_ns() // 1_000_000
        with self._lock:
            conn = self._begin(durable=False)
            try:
                gone = conn.execute(
                    "DELETE FROM readings WHERE id IN (SELECT id FROM readings WHERE ts_ms < ? LIMIT ?) "
                    "RETURNING sensor_key, seq, length(body)",
                    (now_ms - self.max_age_ms, limit),
                ).fetchall()
                self._save_seqs(conn, gone, self._next_seq)
                self._commit(conn, Counter(dropped_age=len(gone)))
            except BaseException:
                self._rollback(conn)
                raise
            return self._forget(gone)

    # -- reading ---------------------------------------------------------------------------------
    def pending(
        self,
        sensor_key: str,
        limit: int = MAX_READINGS,
        *,
        after_id: int = 0,
        max_bytes: int = BATCH_BODY_BUDGET,
    ) -> list[BufferedReading]:
        """A sensor's oldest readings (id > ``after_id``), at most ``limit`` and ``max_bytes`` of bodies.

        The defaults fit one batch message. ``after_id`` skips readings already in flight.
        """
        with self._lock:
            cursor = self.conn.execute(
                "SELECT id, sensor_key, seq, ts_ms, body FROM readings "
                "WHERE sensor_key = ? AND id > ? ORDER BY id LIMIT ?",
                (sensor_key, after_id, limit),
            )
            return self._cut(cursor, max_bytes)

    def oldest(
        self,
        limit: int = MAX_READINGS,
        *,
        after_id: int = 0,
        until_id: int | None = None,
        sensor_keys: Collection[str] | None = None,
    ) -> list[BufferedReading]:
        """The oldest readings (``after_id`` < id <= ``until_id``) of any sensor, or of ``sensor_keys``.

        In storage order, so acknowledging them deletes neighbouring rows. A fleet's backlog is
        interleaved (one row per sensor per tick): replayed one sensor at a time (:meth:`pending`)
        every deleted row dirties a page of its own; in storage order a page's rows go together.
        Measured on 100,000 readings of 100 sensors: read + ack 7 µs a reading against 18 µs.
        """
        sql = "SELECT id, sensor_key, seq, ts_ms, body FROM readings WHERE id > ?"
        params: list[object] = [after_id]
        if until_id is not None:
            sql += " AND id <= ?"
            params.append(until_id)
        if sensor_keys is not None:
            # unary +: filter while walking the rowids; the key index would need a sort by id after
            sql += " AND +sensor_key IN (SELECT value FROM json_each(?))"
            params.append(orjson.dumps(list(sensor_keys)))
        with self._lock:
            cursor = self.conn.execute(sql + " ORDER BY id LIMIT ?", (*params, limit))
            return self._cut(cursor, None)

    @staticmethod
    def _cut(cursor: sqlite3.Cursor, max_bytes: int | None) -> list[BufferedReading]:
        out: list[BufferedReading] = []
        total = 0
        for row in cursor:
            if max_bytes is not None:
                total += len(row[4])
                if out and total > max_bytes:
                    break
            out.append(BufferedReading(*row))
        cursor.close()
        return out

    def last_id(self, sensor_key: str | None = None) -> int:
        """The newest row id (of one sensor, or of any), 0 if none: a boundary for ``after_id``.

        Ids only grow (AUTOINCREMENT: an id is never reused, even once the buffer was emptied),
        so rows past this boundary are newer than everything buffered now.
        """
        with self._lock:
            if sensor_key is None:
                row = self.conn.execute("SELECT max(id) FROM readings").fetchone()
            else:
                row = self.conn.execute(
                    "SELECT max(id) FROM readings WHERE sensor_key = ?", (sensor_key,)
                ).fetchone()
            return int(row[0] or 0)

    def sensors_with_backlog(self) -> list[str]:
        """Keys of the sensors with readings buffered, in no particular order."""
        with self._lock:
            return list(self._depth)

    def depth(self, sensor_key: str | None = None) -> int:
        """Readings buffered: all of them, or one sensor's (its health report's ``buffer_depth``)."""
        with self._lock:
            return sum(self._depth.values()) if sensor_key is None else self._depth.get(sensor_key, 0)

    def size_bytes(self) -> int:
        with self._lock:
            return self._size

    def next_seq(self, sensor_key: str) -> int:
        """The ``seq`` the sensor's next stored reading will get."""
        with self._lock:
            return self._next_seq.get(sensor_key, 0)

    def counters(self) -> dict[str, int]:
        """Readings lost here since the file was made: ``dropped_full``, ``dropped_age``, ``refused_*``."""
        with self._lock:
            return dict(self._counters)

    # -- lifecycle -------------------------------------------------------------------------------
    def close(self) -> None:
        with self._lock:
            if self._conn is None:
                return
            conn = self._conn
            try:
                if self._unsaved:
                    self._begin(durable=True)
                    self._commit(conn, Counter())
                conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            finally:
                self._rollback(conn)
                conn.close()
                self._conn = None

    def __enter__(self) -> EdgeBuffer:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


# -- messages --------------------------------------------------------------------------------------
def _envelope(sensor_type: str) -> bytes:
    if not _SENSOR_TYPE_RE.fullmatch(sensor_type):
        raise ValueError(f"sensor_type {sensor_type!r} does not match {SENSOR_TYPE_PATTERN}")
    return b'{"schema":"' + TELEMETRY_SCHEMA.encode() + b'","sensor_type":"' + sensor_type.encode() + b'"'


def single_payload(sensor_type: str, reading: BufferedReading) -> bytes:
    """A ``moby.telemetry.v1`` message with one reading inline (its body spliced in, not re-encoded)."""
    return _envelope(sensor_type) + b"," + reading.body[1:]


def batch_payload(sensor_type: str, readings: Sequence[BufferedReading]) -> bytes:
    """A ``moby.telemetry.v1`` batch of 1–1000 readings of one sensor, in the order given.

    :meth:`EdgeBuffer.pending` with its defaults returns readings that always fit.
    """
    if not 1 <= len(readings) <= MAX_READINGS:
        raise ValueError(f"a batch holds 1 to {MAX_READINGS} readings, not {len(readings)}")
    if any(r.sensor_key != readings[0].sensor_key for r in readings):
        raise ValueError("a batch carries the readings of one sensor")
    payload = b"".join((_envelope(sensor_type), b',"readings":[', b",".join(r.body for r in readings), b"]}"))
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise ValueError(f"batch is {len(payload)} bytes, over the contract's {MAX_PAYLOAD_BYTES}")
    return payload
