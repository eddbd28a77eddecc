"""The InfluxQL tokenizer, read-only check, time ranges and "auto" sources of moby.query.influxql."""

from __future__ import annotations

import pytest

from moby.query.influxql import (
    InfluxQLError,
    Kind,
    ReadOnlyViolation,
    check_read_only,
    normalize,
    policies_named,
    render,
    shape,
    split_statements,
    tokenize,
)

NOW_MS = 1_764_139_251_123


def statements(q: str) -> list[list]:  # type: ignore[type-arg]
    return split_statements(tokenize(q))


def refused(q: str) -> bool:
    try:
        for s in statements(q):
            check_read_only(s)
    except (ReadOnlyViolation, InfluxQLError):  # the proxy refuses both (403 and 400)
        return True
    return False


@pytest.mark.parametrize(
    "q",
    [
        "SELECT * FROM m",
        'SELECT mean("x") FROM "auto"."m" WHERE time > now() - 1h GROUP BY time(1m)',
        "SELECT 'DROP DATABASE x' FROM m",  # a keyword inside a string
        'SELECT "INTO" FROM "DROP"',  # ... or inside identifiers
        "SELECT x FROM m -- ; DROP DATABASE x",  # ... or a comment
        "SELECT x FROM m /* ; DROP DATABASE x */",
        "SELECT x FROM m WHERE tag =~ /a;DROP DATABASE b/",  # ... or a regex
        "SELECT x FROM m WHERE s = 'it\\'s; DROP DATABASE x'",  # an escaped quote does not end it
        "SHOW DATABASES",
        "SHOW TAG VALUES FROM m WITH KEY = sensor_id",
        "show measurements; select * from m;",
        "EXPLAIN SELECT * FROM m",
        "EXPLAIN ANALYZE SELECT * FROM m",
    ],
)
def test_reads_pass(q: str) -> None:
    assert not refused(q)


@pytest.mark.parametrize(
    "q",
    [
        "DROP DATABASE moby",
        "drop measurement vibration",
        "CREATE DATABASE x",
        "DELETE FROM m WHERE time < now()",
        "ALTER RETENTION POLICY raw ON moby DURATION 1h",
        "GRANT ALL TO bob",
        "REVOKE ALL FROM bob",
        "KILL QUERY 1",
        "SET PASSWORD FOR bob = 'x'",
        "SELECT * INTO other FROM m",
        'select * into "db"."rp"."m" from m group by *',
        "SELECT * FROM m; DROP DATABASE moby",
        "SELECT * FROM m;DROP DATABASE moby",
        "SELECT 'a'';DROP DATABASE moby",  # '' is not an escape in InfluxQL: the string ends
        'SELECT "a"";DROP DATABASE moby',
        "SELECT x FROM m /* c */; /* c */ DROP DATABASE moby",
        "SELECT x FROM m -- c\n; DROP DATABASE moby",
        "/* hi */ DROP DATABASE moby",
        "EXPLAIN DROP DATABASE moby",
        "EXPLAIN SELECT * INTO x FROM m",
        "SHOW USERS",
        "SHOW GRANTS FOR bob",
    ],
)
def test_writes_and_admin_are_refused(q: str) -> None:
    assert refused(q)


@pytest.mark.parametrize(
    "q", ["SELECT 'open", 'SELECT "open', "SELECT x /* open", "SELECT x FROM m WHERE a =~ /open"]
)
def test_unterminated_literals_are_errors(q: str) -> None:
    with pytest.raises(InfluxQLError):
        tokenize(q)


def test_tokens() -> None:
    kinds = [(t.kind, t.text) for t in tokenize("SELECT x/2 FROM /re/ WHERE time > 15m") if t.significant]
    assert kinds == [
        (Kind.IDENT, "SELECT"),
        (Kind.IDENT, "x"),
        (Kind.OP, "/"),  # after an operand, "/" divides
        (Kind.NUMBER, "2"),
        (Kind.IDENT, "FROM"),
        (Kind.REGEX, "/re/"),
        (Kind.IDENT, "WHERE"),
        (Kind.IDENT, "time"),
        (Kind.OP, ">"),
        (Kind.DURATION, "15m"),
    ]


def test_grafana_time_filter() -> None:
    [s] = statements(
        'SELECT mean("rms_velocity") FROM "auto"."vibration" WHERE ("sensor_id" =~ /^s1$/) AND '
        f"time >= {NOW_MS - 900_000}ms and time <= {NOW_MS}ms GROUP BY time(1s) fill(null)"
    )
    got = shape(s)
    assert got.lower is not None and got.upper is not None
    assert (got.lower.at(NOW_MS), got.upper.at(NOW_MS)) == (NOW_MS - 900_000, NOW_MS)
    assert not got.lower.relative and got.interval_ms == 1000


@pytest.mark.parametrize(
    ("where", "lower", "upper"),
    [
        ("time > now() - 15m", NOW_MS - 900_000, None),
        ("time >= now() - 2d AND time <= now() - 1h", NOW_MS - 2 * 86_400_000, NOW_MS - 3_600_000),
        ('"time" > now() - 1h30m', NOW_MS - 5_400_000, None),
        ("time > '2025-11-26T06:40:51.123Z' AND time < '2025-11-26T07:40:51Z'", 1764139251123, 1764142851000),
        ("time >= 1764139251123000000", 1764139251123, None),
        ("x > 1 AND time > now() - 1m", NOW_MS - 60_000, None),
    ],
)
def test_time_ranges(where: str, lower: float, upper: float | None) -> None:
    [s] = statements(f"SELECT x FROM m WHERE {where}")
    got = shape(s)
    assert got.lower is not None and got.lower.at(NOW_MS) == pytest.approx(lower)
    assert (got.upper.at(NOW_MS) if got.upper else None) == (pytest.approx(upper) if upper else None)


def test_auto_sources_are_found_and_rewritten() -> None:
    [s] = statements('SELECT mean(x) FROM "auto"."m", auto.n, "db"."auto"."o", "raw"."p", q, db..r WHERE 1=1')
    named = policies_named(s)
    assert [name for _, name in named] == ["auto", "auto", "auto", "raw"]
    out = render(s, {i: '"rollup_1m"' for i, name in named if name == "auto"})
    want = 'SELECT mean(x) FROM "rollup_1m"."m", "rollup_1m".n, "db"."rollup_1m"."o", "raw"."p", q, db..r'
    assert out == want + " WHERE 1=1"
    # a subquery's source is found too; an "auto" that is not in a FROM is left alone
    [s] = statements('SELECT max(m) FROM (SELECT mean("auto") AS m FROM "auto"./vib.*/ GROUP BY time(1m))')
    assert [name for _, name in policies_named(s)] == ["auto"]


def test_normalize_ignores_layout_case_and_comments() -> None:
    a = normalize(statements("select  mean(x)\nfrom m -- hi\n where time > now() - 1h")[0])
    b = normalize(statements("SELECT mean(x) FROM m WHERE time > now() - 1h")[0])
    assert a == b
    assert normalize(statements('SELECT x FROM "M"')[0]) != normalize(statements('SELECT x FROM "m"')[0])
