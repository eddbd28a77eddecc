"""`make bench`: the ingest spine under load, against its own ceilings, in one run.

Starts a private Mosquitto and InfluxDB (free ports, temporary folder) and `moby serve` as a
child process, then runs:

1. ceiling-broker: `mosquitto_pub -l` alone (20 publishers, no subscriber) — the publisher's
   own limit, which bounds every live measurement.
2. burst: 100,000 single-reading QoS 1 messages from 20 sensors, published as fast as
   `mosquitto_pub -l` can, into the running backend. Sustained msgs/s = N / (first publish →
   last point stored). Zero loss is verified (count and every sensor's seq contiguous).
3. drain: the same 100,000 messages queued at the broker while the backend is stopped, then
   the backend started: how fast one backend empties a backlog.
4. batch: 10,000 100-reading messages (readings/s), against the InfluxDB ceiling measured in
   the same run (the better of two runs): the same points, pre-encoded, POSTed straight to
   /write (5,000-point batches, 4 at a time — what the backend's writer does).
5. latency: a steady 10,000 msgs/s for 20 s; publish-to-stored latency per message, from the
   time each message was written to the publisher to the first poll of InfluxDB (every 25 ms)
   that shows its seq stored.

Each scenario runs ``--repeat`` times (default 3), each run on a fresh broker and InfluxDB; the
run with the median headline figure is reported, along with every run's figure.
Peak RSS of the backend is sampled throughout. Results print as a table and as JSON
(--json FILE). The machine is shared and noisy: compare ratios, not absolute rates.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import orjson

from moby.broker.mosquitto import Mosquitto
from moby.config import Settings
from moby.procs import ManagedProcess, free_port, http_ready
from moby.store.influxd import Influxd

SENSORS = 20
# as many POSTs in flight for the InfluxDB ceiling as the backend's writer keeps (MOBY_WRITE_CONCURRENCY)
WRITER_CONCURRENCY = Settings.model_fields["write_concurrency"].default


def telemetry(seq: int, ts: int, readings: int = 1) -> bytes:
    if readings == 1:
        return orjson.dumps(
            {
                "schema": "moby.telemetry.v1",
                "sensor_type": "vibration",
                "ts": ts,
                "seq": seq,
                "values": {"rms_velocity": 1.0 + seq % 7, "peak_accel_g": 0.5},
            }
        )
    return orjson.dumps(
        {
            "schema": "moby.telemetry.v1",
            "sensor_type": "vibration",
            "readings": [
                {
                    "ts": ts + i,
                    "seq": seq * readings + i,
                    "values": {"rms_velocity": 1.0 + i % 7, "peak_accel_g": 0.5},
                }
                for i in range(readings)
            ],
        }
    )


def query(url: str, db: str, q: str) -> list[dict[str, Any]]:
    params = urllib.parse.urlencode({"q": q, "db": db, "epoch": "ms"})
    with urllib.request.urlopen(f"{url}/query?{params}", timeout=30) as r:
        return orjson.loads(r.read())["results"]  # type: ignore[no-any-return]


def stored(url: str, db: str) -> int:
    try:
        res = query(url, db, 'SELECT count("seq") FROM "raw"./.*/')
    except OSError:
        return -1
    return sum(s["values"][0][1] for s in res[0].get("series", []))


def seq_gaps(url: str, db: str, expected_per_sensor: int) -> int:
    res = query(
        url, db, 'SELECT count("seq"), min("seq"), max("seq") FROM "raw"."vibration" GROUP BY sensor_id'
    )
    bad = 0
    for s in res[0].get("series", []):
        _, count, lo, hi = s["values"][0]
        if not (count == expected_per_sensor and lo == 0 and hi == expected_per_sensor - 1):
            bad += 1
    return bad


def backend_metrics(backend: ManagedProcess) -> dict[str, float]:
    """The backend's own view: mean receive→stored lag and mean reading-time→stored age."""
    text = metrics_text(backend)
    values: dict[str, float] = {}
    for line in text.splitlines():
        if not line.startswith("#") and " " in line:
            key, _, value = line.rpartition(" ")
            values[key] = float(value)

    def mean(name: str) -> float:
        count = values.get(f"{name}_count", 0.0)
        return values.get(f"{name}_sum", 0.0) / count if count else 0.0

    return {
        "mean_receive_to_stored_s": mean("moby_end_to_end_lag_seconds"),
        "mean_reading_ts_to_stored_s": mean("moby_reading_age_seconds"),
        "mean_write_latency_s": mean("moby_write_latency_seconds"),
        "mean_batch_points": mean("moby_write_batch_points"),
    }


def metrics_text(backend: ManagedProcess) -> str:
    port = backend._env["MOBY_API_PORT"] if backend._env else ""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        return r.read().decode()  # type: ignore[no-any-return]


def points_written(backend: ManagedProcess) -> float:
    """The backend's count of points InfluxDB confirmed (``moby_points_written_total``)."""
    try:
        text = metrics_text(backend)
    except OSError:
        return 0.0
    for line in text.splitlines():
        if line.startswith("moby_points_written_total "):
            return float(line.split()[1])
    return 0.0


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


class RssSampler(threading.Thread):
    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid, self.peak, self._stop = pid, 0.0, threading.Event()

    def run(self) -> None:
        while not self._stop.wait(0.2):
            try:
                self.peak = max(self.peak, rss_mb(self.pid))
            except OSError:
                return

    def stop(self) -> float:
        self._stop.set()
        return self.peak


def publish_files(port: int, files: list[tuple[str, bytes]]) -> float:
    """One `mosquitto_pub -l -q 1` per topic, all at once; returns seconds until all exited.

    Chunks of ≤ 50,000 lines: mosquitto_pub -l stops early past 65,535 lines (packet ids wrap).
    """

    def run(topic: str, data: bytes) -> None:
        lines = data.split(b"\n")
        for i in range(0, len(lines), 50_000):
            chunk = b"\n".join(lines[i : i + 50_000]).strip(b"\n") + b"\n"
            subprocess.run(
                ["mosquitto_pub", "-p", str(port), "-q", "1", "-t", topic, "-l"],
                input=chunk,
                check=True,
                timeout=600,
            )

    started = time.monotonic()
    threads = [threading.Thread(target=run, args=f) for f in files]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.monotonic() - started


class Bench:
    def __init__(self, workdir: Path) -> None:
        self.dir = workdir
        self.broker = Mosquitto(workdir / "mosquitto", free_port()).start()
        self.influx = Influxd(workdir / "influxdb", free_port(), free_port()).start(timeout_s=60)
        self.results: dict[str, Any] = {}
        self.backend_env: dict[str, str] = {}  # extra MOBY_* settings for the backend under test

    def backends(self, db: str, name: str, workers: int) -> list[ManagedProcess]:
        """``workers`` backends in one share group, each with its own client id and data dir."""
        return [
            self.backend(
                db, f"{name}-w{i}", MOBY_MQTT_SHARE_GROUP=name, MOBY_DATA_DIR=str(self.dir / f"{db}-w{i}")
            )
            for i in range(workers)
        ]

    def backend(self, db: str, client_id: str, **env: str) -> ManagedProcess:
        api_port = free_port()

        return ManagedProcess(
            "moby serve",
            [sys.executable, "-m", "moby", "serve"],
            log_path=self.dir / f"serve-{client_id}.log",
            ready=lambda: http_ready(f"http://127.0.0.1:{api_port}/readyz"),
            env={
                "MOBY_MQTT_URL": self.broker.url,
                "MOBY_INFLUX_URL": self.influx.url,
                "MOBY_INFLUX_DB": db,
                "MOBY_DATA_DIR": str(self.dir / f"backend-{db}"),
                "MOBY_API_PORT": str(api_port),
                "MOBY_MQTT_CLIENT_ID": client_id,
                "MOBY_MQTT_SHARE_GROUP": client_id,
                "MOBY_LOG_LEVEL": "warning",
                **env,
            },
        )

    def files(self, factory: str, per_sensor: int, readings: int = 1) -> list[tuple[str, bytes]]:
        now = int(time.time() * 1000) - per_sensor * readings - 60_000
        return [
            (
                f"moby/{factory}/s{s}/telemetry",
                b"\n".join(telemetry(i, now + i * readings, readings) for i in range(per_sensor)) + b"\n",
            )
            for s in range(SENSORS)
        ]

    def wait_stored(self, db: str, n: int, backends: list[ManagedProcess], timeout: float = 600) -> float:
        """When the backends report ``n`` points confirmed by InfluxDB (its 204), checked by a count.

        The backends' own counter is polled rather than InfluxDB: a ``count()`` over 100,000
        points costs InfluxDB ~18 ms of CPU, and polling it every 50 ms took CPU from the very
        pipeline being measured. The count in InfluxDB is then checked once at the end.
        """
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if sum(points_written(b) for b in backends) >= n:
                done = time.monotonic()
                break
            time.sleep(0.05)
        else:
            raise TimeoutError(f"{db}: backends confirmed {sum(points_written(b) for b in backends)} of {n}")
        if (count := stored(self.influx.url, db)) < n:
            raise AssertionError(f"{db}: backends report {n} written but InfluxDB holds {count}")
        return done

    def cpu(self, extra: dict[str, int]) -> dict[str, float]:
        pids = {"mosquitto": self.broker.pid, "influxd": self.influx.pid, **extra}
        return {k: cpu_seconds(p) for k, p in pids.items()}

    # -- scenarios ------------------------------------------------------------------------------
    def ceiling_broker(self, n: int) -> None:
        files = self.files("ceil", n // SENSORS)
        seconds = publish_files(self.broker.port, files)
        self.results["ceiling_publish"] = {"messages": n, "seconds": seconds, "msgs_per_s": n / seconds}

    def burst(self, n: int, workers: int = 1) -> None:
        db = f"bench_burst_{workers}w"
        backends = [b.start(timeout_s=60) for b in self.backends(db, db, workers)]
        samplers = [RssSampler(b.pid) for b in backends]
        for sampler in samplers:
            sampler.start()
        files = self.files(f"burst{workers}", n // SENSORS)
        pids = {f"backend{i}": b.pid for i, b in enumerate(backends)}
        c0 = self.cpu(pids)
        started = time.monotonic()
        publish_s = publish_files(self.broker.port, files)
        done = self.wait_stored(db, n, backends)
        c1 = self.cpu(pids)
        count = stored(self.influx.url, db)
        gaps = seq_gaps(self.influx.url, db, n // SENSORS)
        for b in backends:
            b.stop()
        self.results["burst" if workers == 1 else f"burst_{workers}_workers"] = {
            "messages": n,
            "workers": workers,
            "publish_msgs_per_s": n / publish_s,
            "msgs_per_s": n / (done - started),
            "stored": count,
            "lost": n - count,
            "sensors_with_gaps": gaps,
            "peak_rss_mb": max(sampler.stop() for sampler in samplers),
            "cpu_s": {k: round(c1[k] - c0[k], 2) for k in c0},
        }

    def drain(self, n: int, workers: int = 1) -> None:
        db = f"bench_drain_{workers}w"
        backends = self.backends(db, db, workers)
        for b in backends:
            b.start(timeout_s=60)
            b.stop()  # the session (and its subscription) now exists at the broker
        publish_files(self.broker.port, self.files(f"drain{workers}", n // SENSORS))
        started = time.monotonic()
        for b in backends:
            b.start(timeout_s=60)
        samplers = [RssSampler(b.pid) for b in backends]
        for sampler in samplers:
            sampler.start()
        done = self.wait_stored(db, n, backends)
        count = stored(self.influx.url, db)
        for b in backends:
            b.stop()
        self.results["drain" if workers == 1 else f"drain_{workers}_workers"] = {
            "messages": n,
            "workers": workers,
            "msgs_per_s": n / (done - started),
            "lost": n - count,
            "peak_rss_mb": max(sampler.stop() for sampler in samplers),
        }

    def influx_ceiling(self, db: str, total: int) -> tuple[float, float]:
        """InfluxDB alone: ``total`` points like the pipeline's, pre-encoded, POSTed straight to
        /write in 5,000-point batches, 4 at a time (what the writer does); (points/s, CPU s)."""
        now = int(time.time() * 1000) - total - 60_000
        body_lines = [
            f"vibration,factory_id=ceil,sensor_id=s{i % SENSORS} rms_velocity={1.0 + i % 7!r},"
            f"peak_accel_g=0.5,seq={i}i {now + i}".encode()
            for i in range(total)
        ]
        batches = [b"\n".join(body_lines[i : i + 5000]) + b"\n" for i in range(0, total, 5000)]
        del body_lines
        urllib.request.urlopen(
            urllib.request.Request(f"{self.influx.url}/query?q=CREATE+DATABASE+{db}", method="POST"),
            timeout=10,
        ).close()
        influx_cpu0 = cpu_seconds(self.influx.pid)
        started = time.monotonic()
        lock = threading.Lock()

        def post_all() -> None:
            while True:
                with lock:
                    if not batches:
                        return
                    body = batches.pop()
                req = urllib.request.Request(
                    f"{self.influx.url}/write?db={db}&precision=ms", data=body, method="POST"
                )
                urllib.request.urlopen(req, timeout=60).close()

        threads = [threading.Thread(target=post_all) for _ in range(WRITER_CONCURRENCY)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return total / (time.monotonic() - started), cpu_seconds(self.influx.pid) - influx_cpu0

    def batch(self, messages: int, readings: int = 100) -> None:
        # The ceiling first, twice (into fresh databases), keeping the better: on a noisy machine
        # one slow run would otherwise flatter the ratio.
        total = messages * readings
        ceilings = [self.influx_ceiling(f"bench_ceiling{i}", total) for i in range(2)]
        ceiling, ceiling_influx_cpu = max(ceilings)

        db = "bench_batch"
        backend = self.backend(db, "bench-batch", **self.backend_env).start(timeout_s=60)
        rss = RssSampler(backend.pid)
        rss.start()
        files = self.files("batch", messages // SENSORS, readings)
        c0 = self.cpu({"backend": backend.pid})
        started = time.monotonic()
        publish_s = publish_files(self.broker.port, files)
        done = self.wait_stored(db, total, [backend])
        c1 = self.cpu({"backend": backend.pid})
        count = stored(self.influx.url, db)
        view = backend_metrics(backend)
        backend.stop()
        rate = total / (done - started)
        self.results["batch"] = {
            "messages": messages,
            "readings": total,
            "readings_per_s": rate,
            "publish_readings_per_s": total / publish_s,
            "lost": total - count,
            "influx_ceiling_points_per_s": ceiling,
            "influx_ceiling_runs": [round(c) for c, _ in ceilings],
            "ratio_to_ceiling": rate / ceiling,
            "ceiling_influxd_cpu_s": round(ceiling_influx_cpu, 2),
            "cpu_s": {k: round(c1[k] - c0[k], 2) for k in c0},
            "peak_rss_mb": rss.stop(),
            "backend_view": view,
        }

    def latency(self, rate: float, seconds: float) -> None:
        db = "bench_latency"
        backend = self.backend(db, "bench-latency").start(timeout_s=60)
        procs = [
            subprocess.Popen(
                [
                    "mosquitto_pub",
                    "-p",
                    str(self.broker.port),
                    "-q",
                    "1",
                    "-t",
                    f"moby/lat/s{s}/telemetry",
                    "-l",
                    # a window of 200 unacknowledged publishes: the default 20 stalls a steady
                    # 500 msgs/s publisher whenever one acknowledgement is late
                    "-M",
                    "200",
                ],
                stdin=subprocess.PIPE,
            )
            for s in range(SENSORS)
        ]
        sent_at: list[list[float]] = [[] for _ in range(SENSORS)]
        sent_ts: list[list[int]] = [[] for _ in range(SENSORS)]
        stop = threading.Event()
        observed: list[dict[int, float]] = [{} for _ in range(SENSORS)]

        def poll() -> None:
            last = [-1] * SENSORS
            while not stop.is_set() or any(last[s] < len(sent_at[s]) - 1 for s in range(SENSORS)):
                t = time.monotonic()
                try:
                    res = query(
                        self.influx.url, db, 'SELECT last("seq") FROM "raw"."vibration" GROUP BY sensor_id'
                    )
                except OSError:
                    time.sleep(0.025)
                    continue
                for series in res[0].get("series", []):
                    s = int(series["tags"]["sensor_id"][1:])
                    top = series["values"][0][1]
                    for seq in range(last[s] + 1, top + 1):
                        observed[s][seq] = t
                    last[s] = max(last[s], top)
                time.sleep(max(0.0, 0.025 - (time.monotonic() - t)))
                if stop.is_set() and time.monotonic() - stop_time[0] > 30:
                    return

        stop_time = [0.0]
        poller = threading.Thread(target=poll, daemon=True)
        poller.start()
        c0 = self.cpu({"backend": backend.pid, "bench": os.getpid()})
        c0["publishers"] = sum(cpu_seconds(p.pid) for p in procs)
        started = time.monotonic()
        sent = 0
        last_ts = [0] * SENSORS
        while time.monotonic() - started < seconds:
            # Every 5 ms: write what is due to each publisher's pipe, one flush per pipe.
            due = int((time.monotonic() - started) * rate)
            now_mono = time.monotonic()
            dirty = set()
            while sent < due:
                s = sent % SENSORS
                seq = len(sent_at[s])
                ts = max(int(time.time() * 1000), last_ts[s] + 1)
                last_ts[s] = ts
                stdin = procs[s].stdin
                assert stdin is not None
                stdin.write(telemetry(seq, ts) + b"\n")
                sent_at[s].append(now_mono)
                sent_ts[s].append(ts)
                dirty.add(s)
                sent += 1
            for s in dirty:
                stdin = procs[s].stdin
                assert stdin is not None
                stdin.flush()
            time.sleep(0.005)
        stop_time[0] = time.monotonic()
        c1 = self.cpu({"backend": backend.pid, "bench": os.getpid()})
        c1["publishers"] = sum(cpu_seconds(p.pid) for p in procs)
        stop.set()
        for p in procs:
            assert p.stdin is not None
            p.stdin.close()
            p.wait(60)
        poller.join(60)
        backend_view = backend_metrics(backend)
        backend.stop()
        lat = sorted(
            observed[s][i] - sent_at[s][i]
            for s in range(SENSORS)
            for i in range(len(sent_at[s]))
            if i in observed[s]
        )
        missing = sent - len(lat)
        self.results["latency"] = {
            "target_msgs_per_s": rate,
            "achieved_msgs_per_s": sent / seconds,
            "messages": sent,
            "p50_s": lat[len(lat) // 2] if lat else None,
            "p99_s": lat[int(len(lat) * 0.99)] if lat else None,
            "max_s": lat[-1] if lat else None,
            "not_seen": missing,
            "poll_interval_s": 0.025,
            "cpu_s": {k: round(c1[k] - c0[k], 2) for k in c0},
            "backend_view": backend_view,
        }

    def close(self) -> None:
        self.influx.stop()
        self.broker.stop()


def machine() -> dict[str, Any]:
    cpu = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem = Path("/proc/meminfo").read_text().splitlines()[0].split()[1]
    return {
        "cpus": os.cpu_count(),
        "cpu": cpu,
        "mem_gib": round(int(mem) / 1024 / 1024, 1),
        "python": platform.python_version(),
        "kernel": platform.release(),
        "mosquitto": subprocess.run(["mosquitto", "-h"], capture_output=True, text=True).stdout.splitlines()[
            0
        ],
        "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }


# The figure each scenario is judged by; the median run by it is the one reported.
HEADLINE = {
    "ceiling_publish": "msgs_per_s",
    "burst": "msgs_per_s",
    "burst_2_workers": "msgs_per_s",
    "drain": "msgs_per_s",
    "drain_2_workers": "msgs_per_s",
    "batch": "ratio_to_ceiling",
    "latency": "p99_s",
}


def median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Each result of the run whose headline figure is the median, with every run's figure."""
    out: dict[str, Any] = {}
    for key in runs[0]:
        metric = HEADLINE[key]
        ordered = sorted(runs, key=lambda r: r[key][metric] if r[key][metric] is not None else float("inf"))
        out[key] = {**ordered[len(ordered) // 2][key], f"runs_{metric}": [r[key][metric] for r in runs]}
    return out


def run_scenario(bench: Bench, name: str, args: argparse.Namespace) -> None:
    if name == "ceiling":
        bench.ceiling_broker(args.messages)
    elif name in ("burst", "burst2"):
        bench.burst(args.messages, workers=2 if name == "burst2" else 1)
    elif name in ("drain", "drain2"):
        bench.drain(args.messages, workers=2 if name == "drain2" else 1)
    elif name == "batch":
        bench.batch(args.batch_messages)
    elif name == "latency":
        bench.latency(args.latency_rate, args.latency_seconds)
    else:
        raise SystemExit(f"unknown scenario {name!r}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--batch-messages", type=int, default=10_000)
    parser.add_argument("--latency-rate", type=float, default=10_000)
    parser.add_argument("--latency-seconds", type=float, default=20)
    parser.add_argument(
        "--only", nargs="*", default=["ceiling", "burst", "drain", "burst2", "drain2", "batch", "latency"]
    )
    parser.add_argument("--json", type=Path)
    parser.add_argument("--env", nargs="*", default=[], help="MOBY_X=value settings for the backend")
    parser.add_argument(
        "--repeat", type=int, default=3, help="runs per scenario; the run with the median result is kept"
    )
    args = parser.parse_args()

    results: dict[str, Any] = {"machine": machine(), "repeat": args.repeat}
    with tempfile.TemporaryDirectory(prefix="moby-bench-") as tmp:
        for name in args.only:
            runs: list[dict[str, Any]] = []
            for i in range(args.repeat):
                # A fresh broker and InfluxDB per run: one run's compactions and retained state
                # must not tax the next one.
                print(f"… {name} ({i + 1}/{args.repeat})", file=sys.stderr, flush=True)
                bench = Bench(Path(tmp) / f"{name}-{i}")
                bench.backend_env = dict(kv.split("=", 1) for kv in args.env)
                try:
                    run_scenario(bench, name, args)
                finally:
                    bench.close()
                runs.append(bench.results)
            results.update(median_run(runs))
    if "burst" in results and "ceiling_publish" in results:
        results["burst"]["ratio_to_publisher_ceiling"] = (
            results["burst"]["msgs_per_s"] / results["ceiling_publish"]["msgs_per_s"]
        )
    print(json.dumps(results, indent=2))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
