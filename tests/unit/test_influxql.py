"""The InfluxQL scanner and parser of the query proxy: what they read, what they refuse, and what
they tell routing and caching (time ranges, "auto" sources, databases)."""

from __future__ import annotations

import pytest

from moby.query.influxql import InfluxQLError, Kind, normalize, scan_at, scan_regex_at, tokenize
from moby.query.parser import Refused, Statement, parse, policies_named, shape

NOW_MS = 1_764_139_251_123

# The reproductions: InfluxDB reads "tz / 1" (and "fill / 1", "not / 1") as a division;
# the old tokenizer read a regex there and skipped the rest, so every one of these was forwarded.
REPRODUCTIONS = [
    'SELECT tz / 1, "x" INTO "other_db"."autogen"."injected" FROM /vibration/',
    'SELECT fill / 1 FROM "m"; DROP DATABASE "victim"; SELECT "v" FROM /m/',
    'SELECT not / 1 FROM "m"; CREATE DATABASE "pwn"; SELECT "v" FROM /m/',
    'SELECT tz / 1 FROM "m"; CREATE USER "evil" WITH PASSWORD \'pw\' WITH ALL PRIVILEGES; '
    'SELECT "v" FROM /m/',
    'SELECT tz / 1 FROM "m"; DELETE FROM "m"; SELECT "v" FROM /m/',
    'SELECT tz / 1, "x" * 0 + 666 AS "x" INTO "moby"."raw"."vibration" FROM "moby"."raw"."vibration" '
    'WHERE "sensor_id"::tag = \'marker\' GROUP BY * ; SELECT "v" FROM /m/',
]


def verdict(q: str) -> str:
    try:
        parse(q)
    except Refused:
        return "refused"
    except InfluxQLError:
        return "unparsed"
    return "read"


@pytest.mark.parametrize("q", REPRODUCTIONS)
def test_the_reproductions_are_refused(q: str) -> None:
    with pytest.raises(Refused):
        parse(q)


@pytest.mark.parametrize("word", ["tz", "fill", "not", "time", "now", "mean", "TZ", '"into"'])
def test_a_slash_after_a_name_divides(word: str) -> None:
    [s] = parse(f"SELECT {word} / 1, x FROM m")
    ops = [t.text for t in s.tokens if t.kind is Kind.OP]
    assert ops == ["/", ","]
    assert not any(t.kind is Kind.REGEX for t in s.tokens)


@pytest.mark.parametrize(
    ("q", "regexes"),
    [
        ("SELECT a FROM m WHERE a =~ /x/ AND b !~ /y/", ["x", "y"]),
        ("SELECT a FROM m WHERE a=~/x/", ["x"]),
        ("SELECT /x/ FROM m", ["x"]),  # a field
        ("SELECT a, /x/ FROM m", ["x"]),
        ("SELECT mean(/x/) FROM m", ["x"]),  # a call argument
        ("SELECT top(a, /x/) FROM m", ["x"]),
        ("SELECT a FROM /m.*/", ["m.*"]),  # a source
        ('SELECT a FROM "rp"./m.*/', ["m.*"]),
        ('SELECT a FROM "db"."rp"./m.*/', ["m.*"]),
        ('SELECT a FROM "db"../m/', ["m"]),
        ("SELECT a FROM m, /x/", ["x"]),
        ("SELECT a FROM m GROUP BY /x/", ["x"]),  # a dimension
        ("SELECT a FROM m WHERE a =~ /a\\/b;DROP DATABASE x/", ["a/b;DROP DATABASE x"]),
        # InfluxDB's regex ends at the first "/" not right after a backslash, even after "\\"
        ("SELECT a FROM m WHERE a =~ /a\\\\/ /", ["a\\/ "]),
        ("SHOW MEASUREMENTS WITH MEASUREMENT =~ /vib/", ["vib"]),
        ("SHOW TAG VALUES WITH KEY =~ /s/", ["s"]),
        ("SHOW FIELD KEYS FROM /m/", ["m"]),
    ],
)
def test_regexes_where_influxdb_reads_them(q: str, regexes: list[str]) -> None:
    [s] = parse(q)
    assert [t.value for t in s.tokens if t.kind is Kind.REGEX] == regexes


@pytest.mark.parametrize(
    "q",
    [
        "SELECT * FROM m",
        'SELECT mean("x") FROM "auto"."m" WHERE time > now() - 1h GROUP BY time(1m) fill(null)',
        "SELECT 'DROP DATABASE x' FROM m",  # a keyword inside a string
        'SELECT "INTO" FROM "DROP"',  # ... or inside identifiers
        "SELECT x FROM m -- ; DROP DATABASE x",  # ... or a comment
        "SELECT x FROM m /* ; DROP DATABASE x */",
        'SELECT x FROM m WHERE "tag" =~ /a;DROP DATABASE b/',  # ... or a regex
        "SELECT x FROM m WHERE s = 'it\\'s; DROP DATABASE x'",  # an escaped quote does not end it
        "show measurements; select * from m;",
        ";;SELECT a FROM m;;",
        "SHOW TAG VALUES FROM m WITH KEY = sensor_id",
        "SHOW TAG VALUES WITH KEY IN (\"a\", b) WHERE a = 'x' LIMIT 3 OFFSET 1",
        "SHOW MEASUREMENTS WITH MEASUREMENT =~ /x/ LIMIT 100",
        "SHOW TAG KEYS FROM m SLIMIT 1",
        'SHOW FIELD KEYS FROM "rp"."m"',
        'SHOW RETENTION POLICIES ON "moby"',
        "SELECT a FROM m WHERE time > now() - 1h ORDER BY time DESC LIMIT 1 OFFSET 1 SLIMIT 1 "
        "SOFFSET 1 tz('Europe/Berlin')",
        "SELECT DISTINCT a FROM m",
        "SELECT count(DISTINCT(a)), *::field, a::tag, -b, - 1, a + -1h FROM m",
        "SELECT a FROM (SELECT b FROM m WHERE c = 'x') WHERE a > 1",
        "SELECT a FROM m GROUP BY time(1m, 30s), * fill(-1)",
        'SELECT a FROM m fill("none")',
        'SELECT abc"def" FROM m',  # a name directly before a quote: the quoted part is the name
        "SELECT 1. FROM m",  # InfluxDB's scanner swallows the dot
        "SELECT a\r\nFROM m\rWHERE a = 1",
        "SELECT " + "(" * 60 + "1" + ")" * 60 + " FROM m",  # deep, within the bound
        "SELECT a FROM m;" * 64,
        "SELECT " + " + ".join(["a"] * 5000) + " FROM m WHERE " + " AND ".join(["a = 1"] * 3000),
    ],
)
def test_reads_are_parsed(q: str) -> None:
    assert verdict(q) == "read"


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
        "SELECT a FROM (SELECT b INTO x FROM m)",  # InfluxDB parses INTO in a subquery
        "SELECT * FROM m; DROP DATABASE moby",
        "SELECT * FROM m;DROP DATABASE moby",
        "SELECT x FROM m /* c */; /* c */ DROP DATABASE moby",
        "SELECT x FROM m -- c\n; DROP DATABASE moby",
        "/* hi */ DROP DATABASE moby",
        "EXPLAIN SELECT * FROM m",
        "EXPLAIN ANALYZE SELECT * FROM m",  # executes the query
        "SHOW USERS",
        "SHOW GRANTS FOR bob",
        "SHOW DIAGNOSTICS",
        "SHOW STATS",
        "SHOW QUERIES",
        "SHOW SHARDS",
        "SHOW DATABASES",
        "SHOW SERIES",
        "SHOW CONTINUOUS QUERIES",
        "SHOW TAG VALUES CARDINALITY WITH KEY = a",
        "SHOW MEASUREMENT CARDINALITY",
        "SELECT $x FROM m",  # a bound parameter
    ],
)
def test_writes_and_everything_else_are_refused(q: str) -> None:
    assert verdict(q) == "refused"


@pytest.mark.parametrize(
    "q",
    [
        "SELECT 'a'';DROP DATABASE moby",  # '' is not an escape in InfluxQL: the string ends
        'SELECT "a"";DROP DATABASE moby',
        "SELECT 'open",
        'SELECT "open',
        "SELECT x /* open",
        "SELECT x FROM m WHERE a =~ /open",
        "SELECT x FROM m WHERE s = 'bad \\q escape'",
        "SELECT x FROM m WHERE a = 'two\nlines'",
        "SELECT /* a comment where a field starts is a regex to InfluxDB */ x FROM m",
        "SELECT x FROM m WHERE a =~ b",  # =~ needs a regex
        "SELECT mean (x) FROM m",  # a call only when "(" follows the name directly
        "SELECT a ::tag FROM m",
        "SELECT 1e3 FROM m",  # digits then letters: a duration, and not a valid one
        "SELECT a FROM m tz('UTC') LIMIT 1",  # clauses in InfluxDB's order only
        "SELECT a FROM m GROUP BY /x/ , b",  # after a regex dimension the comma must follow directly
        'SELECT a FROM "a"."b"."c"."d"',
        "SELECT a./x/ FROM m",
        "SELECT a FROM m WHERE a = 1 OR",
        "SELECT a FROM m ORDER BY x",
        "SELECT a AS select FROM m",
        "SELECT x FROM m WHERE tag = 'a'",  # TAG is a keyword: "tag" must be quoted
        "SELECT a FROM m fill(x)",
        "SELECT é FROM m",  # only ASCII outside literals
        "SELECT a\x0bFROM m",  # only space, tab and newline are whitespace
        "SELECT a FROM m\x00; DROP DATABASE x",  # a NUL ends the query for InfluxDB
        'SELECT"x" FROM m',  # the quoted part replaces the word: no SELECT
        "-- only a comment",
        "",
        # bounds: the parser runs on the event loop
        "SELECT " + "(" * 65 + "1" + ")" * 65 + " FROM m",
        "SELECT " + "abs(" * 65 + "1" + ")" * 65 + " FROM m",
        "SELECT a FROM " + "(SELECT a FROM " * 65 + "m" + ")" * 65,
        "SELECT a FROM m;" * 65,
        "SELECT a FROM m WHERE a = '" + "x" * 64 * 1024 + "'",
    ],
)
def test_what_cannot_be_parsed_is_refused(q: str) -> None:
    assert verdict(q) == "unparsed"


def test_scanner_tokens() -> None:
    q = 'SELECT x/2, "a""b" FROM m WHERE t > 15m'
    tokens = [(t.kind, t.text) for t in tokenize(q) if t.significant]
    assert tokens == [
        (Kind.KEYWORD, "SELECT"),
        (Kind.IDENT, "x"),
        (Kind.OP, "/"),
        (Kind.INTEGER, "2"),
        (Kind.OP, ","),
        (Kind.IDENT, '"a"'),  # a quoted identifier ends at its quote...
        (Kind.IDENT, '"b"'),  # ... and the next one starts there
        (Kind.KEYWORD, "FROM"),
        (Kind.IDENT, "m"),
        (Kind.KEYWORD, "WHERE"),
        (Kind.IDENT, "t"),
        (Kind.OP, ">"),
        (Kind.DURATION, "15m"),
    ]
    assert scan_at("1.x", 0).text == "1." and scan_at(".5", 0).kind is Kind.NUMBER
    assert scan_at("/* c */x", 0).kind is Kind.COMMENT and scan_at("--c\nx", 0).text == "--c\n"
    assert scan_at('"se\\"l\\nect"', 0).value == 'se"l\nect'
    assert scan_regex_at("/a\\/b\\d/ x", 0).value == "a/b\\d"


def test_grafana_time_filter() -> None:
    [s] = parse(
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
        ("TIME > now() - 1h - 30m", NOW_MS - 5_400_000, None),
        ("time > (now() - 2h) + 1h + " + " + ".join(["0s"] * 3000), NOW_MS - 3_600_000, None),
        ("time > '2025-11-26T06:40:51.123Z' AND time < '2025-11-26T07:40:51Z'", 1764139251123, 1764142851000),
        ("time >= 1764139251123000000", 1764139251123, None),
        ("x > 1 AND time > now() - 1m", NOW_MS - 60_000, None),
        ("(x > 1 AND time > now() - 1m)", NOW_MS - 60_000, None),
        ("x > 1 OR time > now() - 1m", None, None),  # not a bound on the whole answer
        ("time > now() - tz", None, None),
    ],
)
def test_time_ranges(where: str, lower: float | None, upper: float | None) -> None:
    [s] = parse(f"SELECT x FROM m WHERE {where}")
    got = shape(s)
    assert (got.lower.at(NOW_MS) if got.lower else None) == (pytest.approx(lower) if lower else None)
    assert (got.upper.at(NOW_MS) if got.upper else None) == (pytest.approx(upper) if upper else None)


def test_auto_sources_are_found_and_rewritten() -> None:
    from moby.query.influxql import render

    [s] = parse('SELECT mean(x) FROM "auto"."m", auto.n, "db"."auto"."o", "raw"."p", q, db..r WHERE 1=1')
    named = policies_named(s)
    assert [name for _, name in named] == ["auto", "auto", "auto", "raw"]
    out = render(s.tokens, {i: '"rollup_1m"' for i, name in named if name == "auto"})
    want = 'SELECT mean(x) FROM "rollup_1m"."m", "rollup_1m".n, "db"."rollup_1m"."o", "raw"."p", q, db..r'
    assert out == want + " WHERE 1=1"
    # a subquery's source is found too; an "auto" that is not in a FROM is left alone
    [s] = parse('SELECT max(m) FROM (SELECT mean("auto") AS m FROM "auto"./vib.*/ GROUP BY time(1m))')
    assert [name for _, name in policies_named(s)] == ["auto"]


def databases(q: str) -> list[str]:
    return [db for s in parse(q) for db in s.databases]


def test_every_database_named_is_reported() -> None:
    assert databases('SELECT a FROM "otherdb"."autogen"."m"') == ["otherdb"]
    assert databases("SELECT a FROM _internal..m, x") == ["_internal"]
    assert databases('SELECT a FROM "d1"."rp"./m/') == ["d1"]
    assert databases('SELECT a FROM (SELECT b FROM "d2"."rp"."m"), m') == ["d2"]
    assert databases("SHOW MEASUREMENTS ON d3") == ["d3"]
    assert databases('SHOW TAG VALUES ON d4 FROM "d5".."m" WITH KEY = k') == ["d4", "d5"]
    assert databases('SHOW MEASUREMENTS WITH MEASUREMENT = "d6"."rp"."m"') == ["d6"]
    assert databases('SELECT a FROM "rp"."m", m WHERE "d"."rp"."f" = 1') == []  # names in WHERE are fields


def test_normalize_ignores_layout_case_and_comments() -> None:
    def norm(q: str) -> str:
        [s] = parse(q)
        return normalize(s.tokens)

    assert norm("select  mean(x)\nfrom m -- hi\n where time > now() - 1h") == norm(
        "SELECT mean(x) FROM m WHERE time > now() - 1h"
    )
    assert norm('SELECT x FROM "M"') != norm('SELECT x FROM "m"')


def test_statements_keep_their_own_text() -> None:
    statements: list[Statement] = parse(" /* c */ SELECT a FROM m ; SHOW MEASUREMENTS -- x\n")
    assert ["".join(t.text for t in s.tokens) for s in statements] == ["SELECT a FROM m", "SHOW MEASUREMENTS"]
    assert [s.kind for s in statements] == ["SELECT", "SHOW MEASUREMENTS"]
