"""InfluxQL for the aggregates of :mod:`moby.schema.rollups` (rollups, dashboards, the readings API).

``mean``, ``min`` and ``max`` are InfluxQL functions. The energy mean is not, and InfluxQL (1.6)
does not allow an expression inside an aggregate (``mean(pow(10, x / 10))`` is refused), so it
is taken over a subquery: ``10 * log10(mean("x:energy"))`` of ``SELECT pow(10, "x" / 10) AS
"x:energy"``. ``pow`` and ``log10`` exist since InfluxDB 1.6; continuous queries accept the
subquery. When a statement needs one, every column is read through subqueries:

    SELECT max("seq") AS "seq", 10 * log10(mean("laeq:energy")) AS "laeq", min("laeq") AS "laeq_min", ...
    FROM (SELECT "laeq", "seq" FROM <source> WHERE <where> GROUP BY *),
         (SELECT pow(10, "laeq" / 10) AS "laeq:energy" FROM <source>
          WHERE <where> AND "laeq" >= -1000 AND "laeq" <= 1000 GROUP BY *)
    WHERE <outer where> GROUP BY ...

Each decibel field gets a subquery of its own, so that leaving an impossible level out of its
energy mean (``10^(L/10)`` of it would overflow; InfluxDB could not even encode the answer)
removes no other field's reading. ``GROUP BY *`` inside keeps every tag for the outer grouping.
A statement without a decibel field keeps the plain form (``SELECT mean("x") ... FROM <source>``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from moby.schema.rollups import ENERGY_LEVEL_LIMIT_DB, Aggregate
from moby.store.influx import quote_ident

ENERGY_SUFFIX: Final = ":energy"  # not a valid value name, so it cannot clash with one


@dataclass(frozen=True)
class Column:
    """``aggregate(of) AS alias``: e.g. ``Column(MAX, "iso_zone", "iso_zone")``."""

    aggregate: Aggregate
    of: str
    alias: str

    def expression(self) -> str:
        if self.aggregate is Aggregate.ENERGY_MEAN:
            return f"10 * log10(mean({quote_ident(self.of + ENERGY_SUFFIX)})) AS {quote_ident(self.alias)}"
        return f"{self.aggregate.value}({quote_ident(self.of)}) AS {quote_ident(self.alias)}"


def _and(*conditions: str) -> str:
    present = [c for c in conditions if c]
    return f" WHERE {' AND '.join(present)}" if present else ""


def aggregate_sql(
    columns: Sequence[Column], source: str, *, where: str = "", outer_where: str = ""
) -> tuple[str, str]:
    """``(<expressions>, "FROM ...")`` of ``columns`` over ``source`` (an rp-qualified measurement).

    ``where`` filters the readings (tags, time); ``outer_where`` is the time condition the outer
    statement of the subquery form needs (for its GROUP BY time buckets and the query proxy's
    routing; ignored in the plain form, where ``where`` already holds it). The caller puts
    ``SELECT`` and ``INTO`` around them and appends ``GROUP BY``, ``fill``, ``LIMIT``.
    """
    expressions = ", ".join(c.expression() for c in columns)
    energy = sorted({c.of for c in columns if c.aggregate is Aggregate.ENERGY_MEAN})
    if not energy:
        return expressions, f"FROM {source}{_and(where)}"
    plain = sorted({c.of for c in columns if c.aggregate is not Aggregate.ENERGY_MEAN})
    subqueries = []
    if plain:
        names = ", ".join(quote_ident(name) for name in plain)
        subqueries.append(f"(SELECT {names} FROM {source}{_and(where)} GROUP BY *)")
    limit = f"{ENERGY_LEVEL_LIMIT_DB:g}"
    for name in energy:
        q = quote_ident(name)
        subqueries.append(
            f"(SELECT pow(10, {q} / 10) AS {quote_ident(name + ENERGY_SUFFIX)} FROM {source}"
            f"{_and(where, f'{q} >= -{limit}', f'{q} <= {limit}')} GROUP BY *)"
        )
    return expressions, f"FROM {', '.join(subqueries)}{_and(outer_where)}"
