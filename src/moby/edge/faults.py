"""Fault injection for ``moby simulate``: broken sensors, skewed clocks, bad messages, network cuts.

Sensor faults are given as a fraction of the fleet (``< 1``) or a count (``>= 1``); each faulty
sensor has exactly one fault, chosen by :func:`assign` from a seeded shuffle, so the same seed
and fleet size always break the same sensors (a test can compute which). What each does, and how
it shows downstream:

- ``flatline``: the sensor repeats its first reading forever (stuck ADC, frozen firmware):
  a series whose spread is 0.
- ``spike``: with probability ``spike_prob`` a reading's values are multiplied by
  ``spike_factor``: isolated outliers.
- ``out_of_range``: every value is :data:`OUT_OF_RANGE_VALUE` (-9999, the error code many
  sensors report as a number): physically impossible values (below absolute zero, negative RMS).
- ``dropout``: with probability ``dropout_prob`` no reading is taken at all (power or bus
  trouble): gaps in time but **not** in ``seq``, since a reading that was never taken never got one.
- clock skew: ``skew_s`` seconds added to the ``ts`` of a fraction of the sensors; past the
  backend's 10-minute future bound their readings are dead-lettered (``time_out_of_range``).

The device does not know it is faulty: readings keep ``quality`` good; finding them is the job of
whoever reads the data. Malformed messages (:func:`malformed_payload`) bypass the buffer (they are
not readings and get no ``seq``) and must each be dead-lettered by the backend with a reason.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

import orjson

from moby.edge.messages import now_ms
from moby.schema import TELEMETRY_SCHEMA

OUT_OF_RANGE_VALUE: Final = -9999.0
# Each kind of bad message and the dead-letter reason the contract's backend gives it.
MALFORMED_KINDS: Final = (
    "invalid_json",
    "invalid_schema",
    "identity_mismatch",
    "time_out_of_range",
    "too_large",
)


class Fault(StrEnum):
    FLATLINE = "flatline"
    SPIKE = "spike"
    OUT_OF_RANGE = "out_of_range"
    DROPOUT = "dropout"
    SKEW = "clock_skew"


@dataclass(frozen=True)
class FaultPlan:
    """The fault-injection switches of ``moby simulate`` (all off by default)."""

    flatline: float = 0.0
    spike: float = 0.0
    out_of_range: float = 0.0
    dropout: float = 0.0
    skew_s: float = 0.0
    skew: float = 0.0  # how many sensors get the skew (fraction or count)
    spike_prob: float = 0.05
    spike_factor: float = 10.0
    dropout_prob: float = 0.5
    malformed_rate: float = 0.0  # bad messages per second, fleet-wide
    cut_every_s: float = 0.0  # a network cut starts every this many seconds (0: never) ...
    cut_for_s: float = 0.0  # ... and lasts this long

    def __post_init__(self) -> None:
        for name in ("flatline", "spike", "out_of_range", "dropout", "skew", "malformed_rate"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0")
        if not (0 <= self.spike_prob <= 1 and 0 <= self.dropout_prob <= 1):
            raise ValueError("spike_prob and dropout_prob are probabilities (0-1)")
        if self.cut_every_s and not 0 < self.cut_for_s < self.cut_every_s:
            raise ValueError("a cut must last more than 0 s and less than --cut-every")


def how_many(amount: float, fleet: int) -> int:
    """A fraction of the fleet (``amount < 1``) or a count (``>= 1``), as a count."""
    return round(amount * fleet) if amount < 1 else int(amount)


def assign(fleet: int, plan: FaultPlan, seed: int) -> list[Fault | None]:
    """Each sensor's fault (or ``None``), the same for the same fleet size, plan and seed."""
    order = list(range(fleet))
    random.Random(seed).shuffle(order)
    faults: list[Fault | None] = [None] * fleet
    wanted = [
        (Fault.FLATLINE, plan.flatline),
        (Fault.SPIKE, plan.spike),
        (Fault.OUT_OF_RANGE, plan.out_of_range),
        (Fault.DROPOUT, plan.dropout),
        (Fault.SKEW, plan.skew if plan.skew_s else 0.0),
    ]
    at = 0
    for fault, amount in wanted:
        n = how_many(amount, fleet)
        if at + n > fleet:
            raise ValueError(f"more faulty sensors asked for than the fleet's {fleet}")
        for index in order[at : at + n]:
            faults[index] = fault
        at += n
    return faults


class SensorFault:
    """One sensor's fault, applied to each reading between the driver and the buffer."""

    def __init__(self, fault: Fault | None, plan: FaultPlan, seed: int) -> None:
        self.fault = fault
        self.plan = plan
        self.skew_ms = round(plan.skew_s * 1000) if fault is Fault.SKEW else 0
        self._rng = random.Random(seed)
        self._frozen: dict[str, float] | None = None

    def apply(self, values: dict[str, float]) -> dict[str, float] | None:
        """The values the device reports, or ``None`` when it takes no reading this time."""
        fault = self.fault
        if fault is None or fault is Fault.SKEW:
            return values
        if fault is Fault.FLATLINE:
            if self._frozen is None:
                self._frozen = values
            return self._frozen
        if fault is Fault.SPIKE:
            if self._rng.random() < self.plan.spike_prob:
                return {k: v * self.plan.spike_factor for k, v in values.items()}
            return values
        if fault is Fault.OUT_OF_RANGE:
            return dict.fromkeys(values, OUT_OF_RANGE_VALUE)
        return None if self._rng.random() < self.plan.dropout_prob else values


def malformed_payload(kind: str, sensor_type: str, sensor_id: str) -> bytes:
    """A telemetry message the backend must reject, with the reason ``kind`` (:data:`MALFORMED_KINDS`)."""
    reading = {"schema": TELEMETRY_SCHEMA, "sensor_type": sensor_type, "ts": now_ms(), "seq": 0}
    if kind == "invalid_json":
        return orjson.dumps(reading)[:-7]  # cut off mid-message, as a flaky link or a firmware bug would
    if kind == "invalid_schema":
        return orjson.dumps({**reading, "schema": "moby.telemetry.v0", "values": {"x": 1.0}})
    if kind == "identity_mismatch":
        return orjson.dumps({**reading, "sensor_id": f"not-{sensor_id}"[:64], "values": {"x": 1.0}})
    if kind == "time_out_of_range":
        return orjson.dumps({**reading, "ts": now_ms() - 30 * 86400 * 1000, "values": {"x": 1.0}})
    if kind == "too_large":
        return orjson.dumps({**reading, "values": {"x": 1.0}, "firmware_dump": "A" * (300 * 1024)})
    raise ValueError(f"unknown malformed kind {kind!r}")
