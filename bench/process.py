"""Micro-benchmark of :meth:`moby.ingest.process.Processor.process`, the per-message CPU cost.

No broker, no database: the same messages as ``bench/ingest.py`` (a single reading; a batch of
100) handed to the processor in a loop, µs per message reported as the best of ``--rounds``
of CPU time (the minimum is the figure least disturbed by other work on a shared machine). Also
the rarer paths of the repeated-key check (moby.ingest.jsonkeys): an RFC 3339 ``ts`` (colons in
a string: the second count) and the same with a space before every colon (the full parse).

    .venv/bin/python bench/process.py                # this tree
    PYTHONPATH=/other/tree/src .venv/bin/python bench/process.py   # another tree, same venv
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable

import orjson

from moby.ingest.process import Accepted, Processor
from moby.ingest.registry import Registry

SENSORS = 20


def single(seq: int, ts: int) -> bytes:
    return orjson.dumps(
        {
            "schema": "moby.telemetry.v1",
            "sensor_type": "vibration",
            "ts": ts,
            "seq": seq,
            "values": {"rms_velocity": 1.0 + seq % 7, "peak_accel_g": 0.5},
        }
    )


def batch(seq: int, ts: int, readings: int = 100) -> bytes:
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


def rfc3339(payload: bytes) -> bytes:
    """The same message with RFC 3339 timestamps: colons inside strings."""
    message = json.loads(payload)
    for reading in message.get("readings", [message]):
        reading["ts"] = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(reading["ts"] // 1000)) + (
            f".{reading['ts'] % 1000:03d}Z"
        )
    return orjson.dumps(message)


def spaced(payload: bytes) -> bytes:
    """The same message with a space before each colon: neither count can be used."""
    return json.dumps(json.loads(payload), separators=(", ", " : ")).encode()


def measure(name: str, make: Callable[[int, int], bytes], n: int, rounds: int) -> float:
    now_ms = int(time.time() * 1000)
    processor = Processor(Registry())
    messages = [(f"moby/f1/s{i % SENSORS}/telemetry", make(i, now_ms - 60_000 + i)) for i in range(n)]
    assert all(isinstance(processor.process(t, p), Accepted) for t, p in messages[:SENSORS]), name
    best = float("inf")
    for _ in range(rounds):
        started = time.process_time()
        for topic, payload in messages:
            processor.process(topic, payload)
        best = min(best, (time.process_time() - started) / n)
    print(f"{name:<28} {best * 1e6:8.2f} µs/message")
    return best


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    measure("single reading", single, args.messages, args.rounds)
    measure("batch of 100", batch, args.messages // 50, args.rounds)
    measure("single, RFC 3339", lambda s, t: rfc3339(single(s, t)), args.messages, args.rounds)
    measure("batch of 100, RFC 3339", lambda s, t: rfc3339(batch(s, t)), args.messages // 50, args.rounds)
    both = lambda s, t: spaced(rfc3339(single(s, t)))  # noqa: E731
    measure("single, RFC 3339, spaced", both, args.messages, args.rounds)
    both_batch = lambda s, t: spaced(rfc3339(batch(s, t)))  # noqa: E731
    measure("batch, RFC 3339, spaced", both_batch, args.messages // 50, args.rounds)


if __name__ == "__main__":
    main()
