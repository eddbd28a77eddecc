"""moby.ingest.registry: pages of sensors in a stable order, whatever arrives between them."""

from __future__ import annotations

import random

from moby.ingest.registry import Registry, SensorKey, SensorRecord


def keys(records: list[SensorRecord]) -> list[SensorKey]:
    return [(r.factory_id, r.sensor_id) for r in records]


def test_pages_cover_every_sensor_once_in_order() -> None:
    registry = Registry()
    wanted = [(f"f{f}", f"s{s:03d}") for f in range(3) for s in range(50)]
    for factory_id, sensor_id in random.Random(1).sample(wanted, len(wanted)):
        registry.saw_telemetry(factory_id, sensor_id, "vibration", 0, 1)
    seen: list[SensorKey] = []
    after = None
    while True:
        records, total, after = registry.page(40, after=after)
        assert total == 150
        seen += keys(records)
        if after is None:
            break
    assert seen == sorted(wanted)


def test_sensors_arriving_between_pages_take_their_place_in_the_order() -> None:
    registry = Registry()
    for s in ("b", "d", "f"):
        registry.saw_telemetry("f1", s, "vibration", 0, 1)
    first, _, after = registry.page(2)
    assert keys(first) == [("f1", "b"), ("f1", "d")] and after == ("f1", "d")
    registry.saw_telemetry("f1", "a", "vibration", 0, 1)  # before the cursor: not repeated
    registry.saw_telemetry("f1", "e", "vibration", 0, 1)  # after it: on the next page
    rest, total, after = registry.page(2, after=after)
    assert keys(rest) == [("f1", "e"), ("f1", "f")] and total == 5 and after is None


def test_a_factorys_page_and_filters() -> None:
    registry = Registry(
        [
            SensorRecord(f, s, "noise" if s.endswith("1") else "vibration")
            for f in ("a", "ab", "b")
            for s in ("s0", "s1")
        ]
    )
    records, total, after = registry.page(10, factory_id="a")
    assert keys(records) == [("a", "s0"), ("a", "s1")] and total == 2 and after is None
    records, total, _ = registry.page(1, keep=lambda r: r.sensor_type == "noise")
    assert keys(records) == [("a", "s1")] and total == 3
    assert registry.page(10, factory_id="zz") == ([], 0, None)
