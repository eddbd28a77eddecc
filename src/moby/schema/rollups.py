"""How each field is rolled up: the one table every stage reads (rollups, dashboards, the API).

A rollup point stands for many readings, and the right summary depends on what the value means:

* most values (temperatures, humidity, RMS velocities, ...) are **averaged** arithmetically;
* an evaluation **zone** (``iso_zone``: 1 = A ... 4 = D) and **peak** values are summarised by
  their **maximum**: a minute that touched zone D is in zone D, and the mean of peaks is not a
  peak (it would show fractional zones and smaller peaks on zoomed-out charts);
* sound (and other) **levels in decibels** are averaged as energies, as acoustics requires:
  ``L = 10·log10(mean(10^(L_i/10)))`` (the *energy mean*; the arithmetic mean of 70 and 90 dB
  is 80 dB, their energy mean 87.0 dB). An hourly energy mean of minute energy means weights
  every minute alike, as the hourly arithmetic mean of minute means does.

Whatever the aggregate of ``x``, every rollup also keeps ``x_min`` and ``x_max`` (the extremes
of the bucket) and ``seq`` is the bucket's largest sequence number.

A field is looked up by its exact name first (:data:`FIELD_AGGREGATES`, with the reason for
each), then by the naming rules in :data:`NAME_RULES` (so a sensor type added later that
follows the usual names — ``peak_*``, ``lceq``, ``lzmax`` — is rolled up right without a code
change); anything else is averaged. Decibel levels outside ±:data:`ENERGY_LEVEL_LIMIT_DB` are
no physical level: they are left out of the energy mean (``10^(L/10)`` would overflow), while
``x_min`` / ``x_max`` still show them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from enum import StrEnum
from typing import Final


class Aggregate(StrEnum):
    """The summary of one field over a time bucket."""

    MEAN = "mean"  # arithmetic mean
    MAX = "max"
    MIN = "min"
    ENERGY_MEAN = "energy_mean"  # levels in dB: 10·log10(mean(10^(L/10)))


# Exact field names → (aggregate, why). The value names of the shipped drivers
# (moby.edge.features.UNITS and moby.edge.drivers) that are not plain means, and the backend's own.
FIELD_AGGREGATES: Final[Mapping[str, tuple[Aggregate, str]]] = {
    "seq": (Aggregate.MAX, "the bucket's last sequence number: its rate is readings per second"),
    "iso_zone": (Aggregate.MAX, "ISO 10816 zone 1-4 (A-D): the worst zone of the bucket"),
    "peak_accel_m_s2": (Aggregate.MAX, "a peak: the largest of the bucket"),
    "peak_accel_g": (Aggregate.MAX, "a peak: the largest of the bucket"),
    "laeq": (Aggregate.ENERGY_MEAN, "A-weighted equivalent level, dB(A): energy mean"),
    "lamax": (Aggregate.MAX, "A-weighted maximum level, dB(A): the largest of the bucket"),
}

# The backend's own measurements (moby.store.selfmetrics): running totals roll up as their last,
# i.e. largest, value (rates are derivatives of it) and percentiles as a conservative maximum.
_COUNTERS: Final = (
    "messages_received",
    "readings_accepted",
    "rejected",
    "points_written",
    "write_errors",
    "mqtt_reconnects",
    "dead_letters_evicted",
)
_RUNNING_TOTAL: Final = (Aggregate.MAX, "a running total: its last value")
MEASUREMENT_AGGREGATES: Final[Mapping[str, Mapping[str, tuple[Aggregate, str]]]] = {
    "moby_internal": dict.fromkeys(_COUNTERS, _RUNNING_TOTAL),
    "moby_internal_rejected": {"messages": _RUNNING_TOTAL},
}
# moby_internal's received_<kind> (messages received per topic kind) are running totals too.
_RECEIVED_BY_KIND: Final = re.compile(r"^received_[a-z]+$")

# Naming rules for fields not listed above, tried in order: (pattern, aggregate, why).
NAME_RULES: Final[tuple[tuple[re.Pattern[str], Aggregate, str], ...]] = (
    (
        re.compile(r"^l[acz](?:[fsi])?eq$|_leq$|_db$|_dba$"),
        Aggregate.ENERGY_MEAN,
        "a level in dB: energy mean",
    ),
    (re.compile(r"^l[acz](?:[fsi])?(?:max|peak)$"), Aggregate.MAX, "a maximum or peak level: the largest"),
    (re.compile(r"^l[acz](?:[fsi])?min$"), Aggregate.MIN, "a minimum level: the smallest"),
    (re.compile(r"^peak_|_peak$|_peak_|_zone$"), Aggregate.MAX, "a peak or zone: the largest"),
    (re.compile(r"_p(?:9[0-9]|100)$"), Aggregate.MAX, "a high percentile: the largest (an upper bound)"),
)

# 10^(±100) is far from a float's limits for any number of readings; no sound or vibration
# level comes near ±1000 dB.
ENERGY_LEVEL_LIMIT_DB: Final = 1000.0


def aggregate_for(field: str, measurement: str | None = None) -> Aggregate:
    """The aggregate that is true for ``field`` (of ``measurement``, when given)."""
    return explain(field, measurement)[0]


def explain(field: str, measurement: str | None = None) -> tuple[Aggregate, str]:
    """The aggregate of ``field`` and the reason for it."""
    if measurement is not None and field in MEASUREMENT_AGGREGATES.get(measurement, {}):
        return MEASUREMENT_AGGREGATES[measurement][field]
    if measurement == "moby_internal" and _RECEIVED_BY_KIND.match(field):
        return _RUNNING_TOTAL
    if field in FIELD_AGGREGATES:
        return FIELD_AGGREGATES[field]
    for pattern, aggregate, why in NAME_RULES:
        if pattern.search(field):
            return aggregate, why
    return Aggregate.MEAN, "the arithmetic mean"
