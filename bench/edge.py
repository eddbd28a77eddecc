"""`make bench` (edge part): the on-device buffer, a 1,000,000-reading replay, a 2,000-sensor fleet.

1. buffer: the EdgeBuffer's store-and-forward cycle on one core, in this process — append_many a
   batch (fsync'd), read it back (``oldest``), build each reading's message, ack (delete) it —
   for batches of 1 (the agent: one reading per sensor per call), 100 and 2,000 (a simulator
   tick). Ceiling measured in the same run: plain SQLite inserts of the same rows in the same
   mode (WAL, synchronous=FULL, one transaction per batch), no reads, no deletes.
2. replay: a backlog of 1,000,000 readings (200 sensors × 5,000) written into the simulator's
   buffer file, then `moby simulate --rate 0` (send only what is buffered) against a real
   Mosquitto, a real `moby serve` and a real InfluxDB: simulate start → last point stored;
   readings/s; every reading stored exactly once, every sensor's seq contiguous. Ceiling in the
   same run: InfluxDB alone taking the same points, pre-encoded (5,000-point POSTs, 2 at a time).
3. fleet: `moby simulate --sensors 2000 --rate 1` for ~30 s against the same real spine:
   readings/s achieved, simulate's CPU (from /proc: must stay under one core), the other
   processes' CPU, and afterwards every reading taken stored exactly once with seq contiguous.

The machine is shared and noisy (2 vCPUs, other work running): compare ratios, not absolute rates.
"""

from __future__ import annotations

import argparse
import json
import signal
import sqlite3
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import orjson

from ingest import Bench, cpu_seconds, machine, query, stored
from moby.edge.buffer import EdgeBuffer, NewReading, sensor_key, single_payload
from moby.edge.fleet import SENSOR_TYPES, sensor_id
from moby.edge.simulate import buffer_path
from moby.procs import ManagedProcess

VALUES = {"rms_velocity": 2.31, "peak_accel_g": 0.82, "crest_factor": 3.1, "kurtosis": 2.9}


def readings(batch: int, start: int, sensors: int = 2000) -> list[NewReading]:
    now = int(time.time() * 1000)
    return [NewReading(f"bench/s{(start + i) % sensors}", now, VALUES) for i in range(batch)]


def buffer_cycle(workdir: Path, batch: int, total: int) -> dict[str, float]:
    path = workdir / f"cycle-{batch}.sqlite"
    with EdgeBuffer(path, max_bytes=1 << 30, max_age_s=86400) as buffer:
        wall, cpu = time.perf_counter(), time.process_time()
        after = 0
        for start in range(0, total, batch):
            buffer.append_many(readings(batch, start))
            rows = buffer.oldest(batch, after_id=after)
            payloads = [single_payload("vibration", r) for r in rows]
            assert len(payloads) == batch
            after = rows[-1].id
            buffer.ack([r.id for r in rows])
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        assert buffer.depth() == 0
    return {"readings": total, "seconds": wall, "cpu_s": cpu, "readings_per_s": total / wall}


def raw_inserts(workdir: Path, batch: int, total: int) -> dict[str, float]:
    conn = sqlite3.connect(workdir / f"raw-{batch}.sqlite", isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute(
        "CREATE TABLE r (id INTEGER PRIMARY KEY, sensor_key TEXT, seq INTEGER, ts_ms INTEGER, body BLOB)"
    )
    body = orjson.dumps({"ts": int(time.time() * 1000), "seq": 1, "values": VALUES})
    wall, cpu = time.perf_counter(), time.process_time()
    for start in range(0, total, batch):
        conn.execute("BEGIN")
        conn.executemany(
            "INSERT INTO r (sensor_key, seq, ts_ms, body) VALUES (?, ?, ?, ?)",
            [(f"bench/s{(start + i) % 2000}", start + i, 0, body) for i in range(batch)],
        )
        conn.execute("COMMIT")
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    conn.close()
    return {"readings": total, "seconds": wall, "cpu_s": cpu, "readings_per_s": total / wall}


def simulate(bench: Bench, workdir: Path, factory: str, *args: str) -> ManagedProcess:
    return ManagedProcess(
        "moby simulate",
        [sys.executable, "-m", "moby", "simulate", "--factory", factory, *args],
        log_path=workdir / f"simulate-{factory}.log",
        ready=lambda: True,
        env={
            "MOBY_MQTT_URL": bench.broker.url,
            "MOBY_DATA_DIR": str(workdir / "sim"),
            "MOBY_LOG_FORMAT": "json",
        },
    )


def stop(sim: ManagedProcess) -> dict[str, Any]:
    sim.signal(signal.SIGTERM)
    assert sim.proc is not None and sim.proc.wait(120) == 0, sim.tail()
    for line in reversed(sim.log_path.read_text().splitlines()):
        if '"simulator stopped"' in line:
            summary: dict[str, Any] = orjson.loads(line)
            return summary
    raise RuntimeError(sim.tail())


def seq_check(url: str, db: str, expected: dict[str, int]) -> int:
    """Sensors whose stored seqs are not exactly 0..n-1 (count, min, max; each point is unique)."""
    res = query(url, db, 'SELECT count("seq"), min("seq"), max("seq") FROM "raw"./.*/ GROUP BY sensor_id')
    seen = {s["tags"]["sensor_id"]: s["values"][0][1:] for s in res[0].get("series", [])}
    return sum(seen.get(k) != [n, 0, n - 1] for k, n in expected.items())


def next_seqs(path: Path, factory: str, sensors: int) -> tuple[dict[str, int], int]:
    with EdgeBuffer(path, max_bytes=1 << 30, max_age_s=7 * 86400) as buffer:
        ids = [sensor_id(i) for i in range(sensors)]
        return {s: buffer.next_seq(sensor_key(factory, s)) for s in ids}, buffer.depth()


def prefill(path: Path, factory: str, sensors: int, per_sensor: int) -> None:
    start = int(time.time() * 1000) - per_sensor * 1000 - 60_000
    fields = {
        "vibration": "rms_velocity",
        "temperature": "temperature",
        "humidity": "humidity",
        "noise": "laeq",
    }
    with EdgeBuffer(path, max_bytes=1 << 31, max_age_s=7 * 86400, sync="normal") as buffer:
        for i in range(per_sensor):
            buffer.append_many(
                NewReading(
                    sensor_key(factory, sensor_id(s)),
                    start + i * 1000,
                    {fields[SENSOR_TYPES[s % 4]]: 40.0 + i % 7},
                )
                for s in range(sensors)
            )


def influx_ceiling(bench: Bench, sensors: int, per_sensor: int) -> float:
    """Points/s InfluxDB alone takes for the same points, pre-encoded: 5,000-point POSTs, 2 at a time."""
    start = int(time.time() * 1000) - per_sensor * 1000 - 60_000
    fields = {
        "vibration": "rms_velocity",
        "temperature": "temperature",
        "humidity": "humidity",
        "noise": "laeq",
    }
    lines = [
        f"{SENSOR_TYPES[s % 4]},factory_id=ceil,line_id=line-{s // 40 + 1},machine_id=m-{s // 4 + 1:04d},"
        f"sensor_id={sensor_id(s)} {fields[SENSOR_TYPES[s % 4]]}={40.0 + i % 7!r},seq={i}i "
        f"{start + i * 1000}".encode()
        for i in range(per_sensor)
        for s in range(sensors)
    ]
    bodies = [b"\n".join(lines[i : i + 5000]) + b"\n" for i in range(0, len(lines), 5000)]
    del lines
    urllib.request.urlopen(
        urllib.request.Request(f"{bench.influx.url}/query?q=CREATE+DATABASE+bench_ceiling", method="POST"),
        timeout=10,
    ).close()
    lock = threading.Lock()

    def post_all() -> None:
        while True:
            with lock:
                if not bodies:
                    return
                body = bodies.pop()
            url = f"{bench.influx.url}/write?db=bench_ceiling&precision=ms"
            urllib.request.urlopen(urllib.request.Request(url, data=body, method="POST"), timeout=60).close()

    started = time.monotonic()
    threads = [threading.Thread(target=post_all) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sensors * per_sensor / (time.monotonic() - started)


def replay(bench: Bench, workdir: Path, sensors: int = 200, per_sensor: int = 5000) -> dict[str, Any]:
    factory, db, n = "replay", "bench_replay", sensors * per_sensor
    path = buffer_path(workdir / "sim", factory)
    t = time.perf_counter()
    prefill(path, factory, sensors, per_sensor)
    prefill_s = time.perf_counter() - t
    backend = bench.backend(db, "bench-replay").start(timeout_s=60)
    args = ("--sensors", str(sensors), "--rate", "0", "--per-connection", "50", "--replay-rate", "10000000")
    sim = simulate(bench, workdir, factory, *args)
    procs = {"mosquitto": bench.broker.pid, "influxd": bench.influx.pid, "backend": backend.pid}
    cpu0 = {k: cpu_seconds(p) for k, p in procs.items()}
    started = time.monotonic()
    sim.start()
    done = bench.wait_stored(db, n, timeout=1200)
    seconds = done - started
    cpu = {k: round(cpu_seconds(p) - cpu0[k], 2) for k, p in procs.items()}
    cpu["simulate"] = round(cpu_seconds(sim.pid), 2)
    summary = stop(sim)
    time.sleep(2)
    expected, depth = next_seqs(path, factory, sensors)
    result = {
        "readings": n,
        "prefill_s": round(prefill_s, 1),
        "seconds": round(seconds, 2),
        "readings_per_s": round(n / seconds),
        "stored": stored(bench.influx.url, db),
        "sensors_with_seq_problems": seq_check(bench.influx.url, db, expected),
        "left_in_buffer": depth,
        "cpu_s": cpu,
        "simulate_summary_taken": summary["taken"],
    }
    backend.stop()
    # The ceiling after the run, in the same InfluxDB (a database of its own).
    result["influx_ceiling_points_per_s"] = round(influx_ceiling(bench, sensors, per_sensor))
    result["ratio_to_ceiling"] = round(result["readings_per_s"] / result["influx_ceiling_points_per_s"], 3)
    return result


def fleet(bench: Bench, workdir: Path, sensors: int = 2000, seconds: float = 30) -> dict[str, Any]:
    factory, db = "fleet", "bench_fleet"
    backend = bench.backend(db, "bench-fleet").start(timeout_s=60)
    sim = simulate(bench, workdir, factory, "--sensors", str(sensors), "--rate", "1").start()
    time.sleep(5)  # births, first ticks
    procs = {
        "simulate": sim.pid,
        "mosquitto": bench.broker.pid,
        "influxd": bench.influx.pid,
        "backend": backend.pid,
    }
    cpu0 = {k: cpu_seconds(p) for k, p in procs.items()}
    stored0, t0 = stored(bench.influx.url, db), time.monotonic()
    time.sleep(seconds)
    cpu = {k: cpu_seconds(p) - cpu0[k] for k, p in procs.items()}
    stored1, t1 = stored(bench.influx.url, db), time.monotonic()
    summary = stop(sim)
    expected, depth = next_seqs(buffer_path(workdir / "sim", factory), factory, sensors)
    total = sum(expected.values())
    bench.wait_stored(db, total, timeout=120)
    time.sleep(2)
    result = {
        "sensors": sensors,
        "window_s": round(t1 - t0, 1),
        "stored_per_s_in_window": round((stored1 - stored0) / (t1 - t0)),
        "taken_per_s": round(summary["taken"] / summary["seconds"]),
        "late_ticks": summary["late_ticks"],
        "simulate_cpu_cores": round(cpu["simulate"] / (t1 - t0), 3),
        "cpu_cores": {k: round(v / (t1 - t0), 3) for k, v in cpu.items()},
        "taken": total,
        "stored": stored(bench.influx.url, db),
        "sensors_with_seq_problems": seq_check(bench.influx.url, db, expected),
        "left_in_buffer": depth,
    }
    backend.stop()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--only", nargs="*", default=["buffer", "replay", "fleet"])
    parser.add_argument("--replay-sensors", type=int, default=200)
    parser.add_argument("--replay-per-sensor", type=int, default=5000)
    parser.add_argument("--fleet-sensors", type=int, default=2000)
    parser.add_argument("--fleet-seconds", type=float, default=30)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    results: dict[str, Any] = {"machine": machine()}
    with tempfile.TemporaryDirectory(prefix="moby-bench-edge-") as tmp:
        for name in args.only:
            print(f"… {name}", file=sys.stderr, flush=True)
            workdir = Path(tmp) / name
            workdir.mkdir()
            if name == "buffer":
                out: dict[str, Any] = {}
                for batch, total in ((1, 1000), (100, 50_000), (2000, 200_000)):
                    cycle, ceiling = buffer_cycle(workdir, batch, total), raw_inserts(workdir, batch, total)
                    out[f"batch_{batch}"] = {
                        "cycle": cycle,
                        "ceiling_raw_inserts": ceiling,
                        "ratio": cycle["readings_per_s"] / ceiling["readings_per_s"],
                    }
                results["buffer"] = out
                continue
            bench = Bench(workdir)  # a fresh broker and InfluxDB per scenario
            try:
                if name == "replay":
                    results["replay"] = replay(bench, workdir, args.replay_sensors, args.replay_per_sensor)
                elif name == "fleet":
                    results["fleet"] = fleet(bench, workdir, args.fleet_sensors, args.fleet_seconds)
                else:
                    raise SystemExit(f"unknown scenario {name!r}")
            finally:
                bench.close()
    print(json.dumps(results, indent=2))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
