"""Line protocol encoding, checked against a small reference tokenizer.

The tokenizer follows what InfluxDB 1.x (the server MOBY runs and tests against) does, as
observed on a real ``influxd`` 1.6:

* measurement: ends at the first ``,`` or space not preceded by a backslash; ``\\,`` ``\\ ``
  ``\\=`` and ``\\"`` are unescaped;
* tag keys and values: end at ``=`` / ``,`` / space not preceded by a backslash; ``\\,`` ``\\ ``
  and ``\\=`` are unescaped (a backslash before anything else is kept as is);
* field keys: a backslash escapes whatever follows it while scanning; ``\\,`` ``\\ `` ``\\=``
  and ``\\"`` are unescaped;
* string field values: double quoted, ``\\"`` and ``\\\\`` unescaped;
* a line starting with ``#`` is a comment.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from moby.ingest.lineproto import (
    LineProtocolError,
    encode_fields,
    encode_point,
    escape_key,
    escape_measurement,
    escape_string_field,
    fields_from_json,
    fields_from_json_list,
    format_field,
    name_marker,
    series_key,
    values_json,
)

MEASUREMENT_ESC = frozenset(',= "')
TAG_ESC = frozenset(",= ")
FIELD_KEY_ESC = frozenset(',= "')

FieldValue = float | int | bool | str


# -- the reference tokenizer ---------------------------------------------------------------------
def _scan(line: str, i: int, stops: str, escapable: frozenset[str], *, pair_any: bool = False) -> int:
    """Index of the first unescaped character of ``stops`` at or after ``i`` (or len(line))."""
    while i < len(line):
        c = line[i]
        if c == "\\" and i + 1 < len(line) and (pair_any or line[i + 1] in escapable):
            i += 2
            continue
        if c in stops:
            return i
        i += 1
    return i


def _unescape(text: str, escapable: frozenset[str]) -> str:
    out: list[str] = []
    i = 0
    while i < len(text):
        if text[i] == "\\" and i + 1 < len(text) and text[i + 1] in escapable:
            out.append(text[i + 1])
            i += 2
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


def _field_value(raw: str) -> FieldValue:
    if raw.startswith('"'):
        assert raw.endswith('"') and len(raw) >= 2, raw
        return _unescape(raw[1:-1], frozenset('"\\'))
    if raw in ("true", "false"):
        return raw == "true"
    if raw.endswith("i"):
        return int(raw[:-1])
    return float(raw)


def parse_line(line: str) -> tuple[str, list[tuple[str, str]], list[tuple[str, FieldValue]], int]:
    """Split one line into (measurement, tags, fields, timestamp), unescaping every part."""
    assert "\n" not in line and "\r" not in line
    assert not line.startswith("#"), "InfluxDB reads this line as a comment"
    i = _scan(line, 0, ", ", MEASUREMENT_ESC)
    measurement = _unescape(line[:i], MEASUREMENT_ESC)
    tags: list[tuple[str, str]] = []
    while line[i] == ",":
        j = _scan(line, i + 1, "=, ", TAG_ESC)
        assert line[j] == "=", f"tag without '=' in {line!r}"
        k = _scan(line, j + 1, "=, ", TAG_ESC)
        assert k == len(line) or line[k] in ", ", f"unescaped '=' in a tag value of {line!r}"
        tags.append((_unescape(line[i + 1 : j], TAG_ESC), _unescape(line[j + 1 : k], TAG_ESC)))
        i = k
    assert line[i] == " ", line
    fields: list[tuple[str, FieldValue]] = []
    while True:
        j = _scan(line, i + 1, "=, ", FIELD_KEY_ESC, pair_any=True)
        assert j < len(line) and line[j] == "=", f"field without '=' in {line!r}"
        key = _unescape(line[i + 1 : j], FIELD_KEY_ESC)
        if line[j + 1] == '"':
            end = _scan(line, j + 2, '"', frozenset(), pair_any=True)
            assert end < len(line), f"unterminated string in {line!r}"
            k = end + 1
        else:
            k = _scan(line, j + 1, ", ", frozenset())
        fields.append((key, _field_value(line[j + 1 : k])))
        i = k
        assert i < len(line), f"no timestamp in {line!r}"
        if line[i] == " ":
            break
    timestamp = line[i + 1 :]
    assert timestamp == line.rsplit(" ", 1)[1]
    assert timestamp.lstrip("-").isdigit(), timestamp
    return measurement, tags, fields, int(timestamp)


# -- strategies -------------------------------------------------------------------------------
# Everything line protocol has to care about, plus arbitrary text.
_SPECIAL = [",", " ", "=", '"', "#", "'", "\t", "é", "✓", "\x00"]
_CHAR = st.one_of(st.sampled_from(_SPECIAL), st.characters(exclude_characters="\n\r\\"))
_CHAR_OR_BACKSLASH = st.one_of(_CHAR, st.just("\\"))

# Names without backslashes: InfluxDB carries every one of them, so the encoder must too.
names = st.lists(_CHAR, min_size=1, max_size=8).map("".join)
measurements = names.filter(lambda s: not s.startswith("#"))
# Names with backslashes: InfluxDB 1.x cannot carry a backslash before an escapable character
# (see the module docstring), so the encoder may refuse them, but must never mangle them.
any_names = st.lists(_CHAR_OR_BACKSLASH, min_size=1, max_size=8).map("".join)

finite_floats = st.floats(allow_nan=False, allow_infinity=False)
ints = st.integers(min_value=-(2**63), max_value=2**63 - 1)
strings = st.lists(st.characters(exclude_characters="\n\r") | st.sampled_from(['"', "\\"]), max_size=20).map(
    "".join
)
field_values: st.SearchStrategy[FieldValue] = st.one_of(finite_floats, ints, st.booleans(), strings)
timestamps = st.integers(min_value=0, max_value=2**62)


def assert_round_trip(
    line: str, measurement: str, tags: dict[str, str], fields: dict[str, FieldValue], timestamp: int
) -> None:
    got_measurement, got_tags, got_fields, got_ts = parse_line(line)
    assert got_measurement == measurement
    assert got_tags == sorted(tags.items())  # and therefore sorted by key
    assert got_ts == timestamp
    assert [k for k, _ in got_fields] == list(fields)
    for (_, got), want in zip(got_fields, fields.values(), strict=True):
        assert type(got) is type(want)
        assert got == want


# -- properties -------------------------------------------------------------------------------
@settings(max_examples=150)
@given(
    measurement=measurements,
    tags=st.dictionaries(names, names, max_size=5),
    fields=st.dictionaries(names, field_values, min_size=1, max_size=5),
    timestamp=timestamps,
)
def test_points_round_trip(
    measurement: str, tags: dict[str, str], fields: dict[str, FieldValue], timestamp: int
) -> None:
    line = encode_point(measurement, tags, fields, timestamp)
    assert_round_trip(line, measurement, tags, fields, timestamp)


@settings(max_examples=150)
@given(
    measurement=any_names,
    tags=st.dictionaries(any_names, any_names, max_size=3),
    fields=st.dictionaries(any_names, field_values, min_size=1, max_size=3),
)
def test_names_with_backslashes_round_trip_or_are_refused(
    measurement: str, tags: dict[str, str], fields: dict[str, FieldValue]
) -> None:
    try:
        line = encode_point(measurement, tags, fields, 1)
    except LineProtocolError:
        all_names = [measurement, *tags, *tags.values(), *fields]
        assert any("\\" in n for n in all_names) or measurement.startswith("#")
        return
    assert_round_trip(line, measurement, tags, fields, 1)


@given(
    st.lists(st.characters(exclude_characters="\n\r") | st.sampled_from(['"', "\\", '\\"']), max_size=20).map(
        "".join
    )
)
def test_string_fields_round_trip(value: str) -> None:
    encoded = escape_string_field(value)
    assert encoded.startswith('"') and encoded.endswith('"')
    # The closing quote is the first unescaped quote after the opening one.
    assert _scan(encoded, 1, '"', frozenset(), pair_any=True) == len(encoded) - 1
    assert _field_value(encoded) == value


@given(st.dictionaries(names, names, min_size=2, max_size=6))
def test_tags_come_out_sorted_by_key(tags: dict[str, str]) -> None:
    _, got, _, _ = parse_line(f"{series_key('m', tags)} f=1.0 1")
    assert [k for k, _ in got] == sorted(tags)


def test_tags_sorted_example() -> None:
    assert series_key("m", {"b": "2", "a": "1", "c": "3"}) == "m,a=1,b=2,c=3"


def test_empty_tag_values_are_left_out() -> None:
    assert series_key("m", {"a": "", "b": "x"}) == "m,b=x"


@given(finite_floats)
def test_floats_round_trip_through_repr(value: float) -> None:
    text = format_field(value)
    assert text == repr(value)
    assert not text.endswith("i")
    assert float(text) == value
    assert math.copysign(1, float(text)) == math.copysign(1, value)  # -0.0 stays -0.0


@given(ints)
def test_ints_get_the_i_suffix(value: int) -> None:
    assert format_field(value) == f"{value}i"


def test_float_that_looks_integral_stays_float() -> None:
    assert format_field(2.0) == "2.0"
    assert format_field(1e16) == "1e+16"


def test_bools() -> None:
    assert format_field(True) == "true"
    assert format_field(False) == "false"


def test_encode_point_example() -> None:
    line = encode_point(
        "vib ration",
        {"sensor_id": "s 1", "factory_id": "f,1", "x": "a=b"},
        {"v": 2.5, "seq": 42, "ok": True, "note": 'say "hi"\\'},
        1764139251123,
    )
    assert line == (
        r"vib\ ration,factory_id=f\,1,sensor_id=s\ 1,x=a\=b "
        r'v=2.5,seq=42i,ok=true,note="say \"hi\"\\" 1764139251123'
    )


# -- what the encoder must refuse -----------------------------------------------------------------
_BAD_NAMES = ["", "a\nb", "a\rb", "\n", "ab\\", "\\"]


@pytest.mark.parametrize("name", _BAD_NAMES)
def test_bad_measurements_are_refused(name: str) -> None:
    with pytest.raises(LineProtocolError):
        escape_measurement(name)
    with pytest.raises(LineProtocolError):
        encode_point(name, {}, {"f": 1.0}, 1)


@pytest.mark.parametrize("name", _BAD_NAMES)
def test_bad_keys_are_refused(name: str) -> None:
    with pytest.raises(LineProtocolError):
        escape_key(name)
    with pytest.raises(LineProtocolError):
        encode_point("m", {name: "v"}, {"f": 1.0}, 1)
    with pytest.raises(LineProtocolError):
        encode_point("m", {"t": name or "\n"}, {"f": 1.0}, 1)
    with pytest.raises(LineProtocolError):
        encode_point("m", {}, {name: 1.0}, 1)


@given(
    st.tuples(st.text(max_size=5), st.sampled_from(["\n", "\r"]), st.text(max_size=5)).map("".join),
)
def test_line_breaks_are_refused_everywhere(text: str) -> None:
    escapes: list[Callable[[str], str]] = [escape_measurement, escape_key, escape_string_field]
    for escape in escapes:
        with pytest.raises(LineProtocolError):
            escape(text)


@given(st.text(max_size=8).map(lambda s: s + "\\"))
def test_trailing_backslash_is_refused(name: str) -> None:
    with pytest.raises(LineProtocolError):
        escape_measurement(name)
    with pytest.raises(LineProtocolError):
        escape_key(name)


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_non_finite_floats_are_refused(value: float) -> None:
    with pytest.raises(LineProtocolError):
        format_field(value)


def test_a_point_needs_a_field() -> None:
    with pytest.raises(LineProtocolError):
        encode_fields([])
    with pytest.raises(LineProtocolError):
        encode_point("m", {"t": "v"}, {}, 1)


# -- names InfluxDB 1.x cannot carry: the encoder should refuse them, not mangle them -----------
def _round_trips_or_is_refused(where: str, name: str) -> bool:
    args: dict[str, Any] = {"measurement": "m", "tags": {"t": "v"}, "fields": {"f": 1.0}, "timestamp": 1}
    if where == "measurement":
        args["measurement"] = name
    elif where == "tag key":
        args["tags"] = {name: "v"}
    elif where == "tag value":
        args["tags"] = {"t": name}
    else:
        args["fields"] = {name: 1.0}
    try:
        line = encode_point(**args)
    except LineProtocolError:
        return True
    try:
        measurement, tags, fields, _ = parse_line(line)
    except AssertionError:
        return False
    return bool(
        measurement == args["measurement"] and dict(tags) == args["tags"] and dict(fields) == args["fields"]
    )


# Found with a real influxd 1.6; each must be refused (or, should InfluxDB learn to, carried).
_AMBIGUOUS = [
    pytest.param("tag key", "a\\,b"),
    pytest.param("tag key", "a\\ b"),
    pytest.param("tag key", "a\\=b"),
    pytest.param("tag key", 'a\\"b'),
    pytest.param("tag value", "a\\,b"),
    pytest.param("tag value", "a\\=b"),
    pytest.param("measurement", "a\\,b"),
    pytest.param("measurement", "a\\ b"),
    pytest.param("measurement", "a\\=b"),  # InfluxDB stores 'a=b'
    pytest.param("measurement", 'a\\"b'),  # InfluxDB stores 'a"b'
    pytest.param("measurement", "#m"),  # the line is a comment: the point silently vanishes
    pytest.param("field key", "a\\,b"),  # InfluxDB: 400 invalid field format
    pytest.param("field key", "a\\ b"),  # InfluxDB: 400 invalid field format
    pytest.param("field key", "a\\=b"),  # InfluxDB: 400
    pytest.param("field key", 'a\\"b'),  # InfluxDB stores 'a"b'
]


@pytest.mark.parametrize(("where", "name"), _AMBIGUOUS)
def test_names_influx_cannot_carry_are_refused_not_mangled(where: str, name: str) -> None:
    assert _round_trips_or_is_refused(where, name)


# -- fields straight from the values' JSON rendering -------------------------------------------
value_names = st.from_regex(r"\A[a-z][a-z0-9_]{0,63}\Z")
readings_values = st.dictionaries(value_names, finite_floats, min_size=1, max_size=8)
# line protocol's float: digits, an optional fraction and exponent, no "i" suffix (that is an int)
_LP_FLOAT = re.compile(r"-?[0-9]+(\.[0-9]+)?([eE][+-]?[0-9]+)?")


@given(readings_values)
def test_json_fields_are_the_values_as_floats(values: dict[str, float]) -> None:
    fields = fields_from_json(values_json(values)).decode()
    _, _, parsed, _ = parse_line(f"m {fields} 1")
    assert [k for k, _ in parsed] == list(values)
    for (_, got), (name, want) in zip(parsed, values.items(), strict=True):
        assert isinstance(got, float), name
        assert got == want and math.copysign(1, got) == math.copysign(1, want)
    for text in (part.split("=", 1)[1] for part in fields.split(",")):
        assert _LP_FLOAT.fullmatch(text), text


@given(st.lists(readings_values, min_size=1, max_size=20))
def test_json_fields_of_a_list_match_one_by_one(many: list[dict[str, float]]) -> None:
    assert fields_from_json_list(values_json(many)) == [fields_from_json(values_json(v)) for v in many]


def test_json_fields_of_integral_and_extreme_floats() -> None:
    values = {"a": 2.0, "b": 1e-7, "c": 1e22, "d": -0.0, "e": 5e-324, "f": 1.7976931348623157e308}
    assert fields_from_json(values_json(values)) == (
        b"a=2.0,b=1e-7,c=1e+22,d=-0.0,e=5e-324,f=1.7976931348623157e+308"
    )


@pytest.mark.parametrize(
    ("values", "found"),
    [({"seq": 1.0}, True), ({"a": 1.0, "seq": 2.0}, True), ({"seqx": 1.0}, False), ({"xseq": 1.0}, False)],
)
def test_name_marker_finds_exact_names_only(values: dict[str, float], found: bool) -> None:
    assert (name_marker("seq") in values_json(values)) is found
