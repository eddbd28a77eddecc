"""Just enough of InfluxQL for a safe proxy: a tokenizer, a read-only check, time ranges, rewrites.

The tokenizer follows InfluxQL's lexical rules (single-quoted strings and double-quoted
identifiers with backslash escapes, ``--`` and ``/* */`` comments, regex literals, duration
literals), so a keyword inside a string, an identifier or a comment is never mistaken for a
statement, and a ``;`` inside one never splits it. Everything is checked on tokens, never on
substrings of the query text.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from typing import Final


class InfluxQLError(ValueError):
    """The query cannot be tokenized: InfluxDB would answer ``error parsing query``."""


class ReadOnlyViolation(ValueError):
    """The query would write or change the database."""


class Kind(Enum):
    WS = "ws"
    COMMENT = "comment"
    IDENT = "ident"  # unquoted identifier or keyword
    QIDENT = "qident"  # "double quoted identifier"
    STRING = "string"  # 'single quoted'
    NUMBER = "number"
    DURATION = "duration"
    REGEX = "regex"
    PARAM = "param"  # $bound_parameter
    OP = "op"
    SEMI = "semi"


@dataclass(frozen=True)
class Token:
    kind: Kind
    text: str

    @property
    def value(self) -> str:
        """Identifiers unquoted; keywords as written."""
        if self.kind is Kind.QIDENT:
            return re.sub(r"\\(.)", r"\1", self.text[1:-1])
        return self.text

    @property
    def upper(self) -> str:
        return self.text.upper() if self.kind is Kind.IDENT else ""

    def is_kw(self, *words: str) -> bool:
        return self.kind is Kind.IDENT and self.text.upper() in words

    @property
    def significant(self) -> bool:
        return self.kind not in (Kind.WS, Kind.COMMENT)


_UNITS: Final = {
    "ns": 1e-6,
    "u": 1e-3,
    "µ": 1e-3,
    "ms": 1.0,
    "s": 1e3,
    "m": 6e4,
    "h": 3.6e6,
    "d": 8.64e7,
    "w": 6.048e8,
}
_DURATION_PART: Final = re.compile(r"(\d+)(ns|ms|u|µ|s|m|h|d|w)")
_NUMBER: Final = re.compile(r"\d+(?:\.\d*)?|\.\d+")
_DURATION: Final = re.compile(r"(?:\d+(?:ns|ms|u|µ|s|m|h|d|w))+(?![A-Za-z0-9_])")
_IDENT: Final = re.compile(r"[^\W\d]\w*")
_OPS: Final = ("=~", "!~", "!=", "<>", "<=", ">=", "::", *"=<>+-*/%(),.:&|^")
# After one of these a "/" divides; anywhere else it opens a regex (FROM /re/, tag =~ /re/).
_OPERAND_KINDS: Final = (Kind.IDENT, Kind.QIDENT, Kind.STRING, Kind.NUMBER, Kind.DURATION, Kind.PARAM)


def _operand(t: Token) -> bool:
    """Could ``t`` end an operand (so that a "/" after it divides)?"""
    if t.kind is Kind.IDENT:
        return t.text.upper() not in _KEYWORDS
    return t.kind in _OPERAND_KINDS or t.text == ")"


def _quoted(q: str, i: int, quote: str, what: str) -> int:
    """Index after the closing quote of the literal opening at ``i``."""
    j = i + 1
    while j < len(q):
        c = q[j]
        if c == "\\":
            j += 2
            continue
        if c == quote:
            return j + 1
        if c == "\n" and quote != "/":
            break
        j += 1
    raise InfluxQLError(f"found unterminated {what} at char {i}")


def tokenize(q: str) -> list[Token]:
    tokens: list[Token] = []
    last: Token | None = None  # the last significant token
    i = 0
    while i < len(q):
        c = q[i]
        if c.isspace():
            j = i
            while j < len(q) and q[j].isspace():
                j += 1
            kind = Kind.WS
        elif q.startswith("--", i):
            j = q.find("\n", i)
            j = len(q) if j < 0 else j
            kind = Kind.COMMENT
        elif q.startswith("/*", i):
            end = q.find("*/", i + 2)
            if end < 0:
                raise InfluxQLError(f"found unterminated comment at char {i}")
            j, kind = end + 2, Kind.COMMENT
        elif c == "'":
            j, kind = _quoted(q, i, "'", "string"), Kind.STRING
        elif c == '"':
            j, kind = _quoted(q, i, '"', "quoted identifier"), Kind.QIDENT
        elif c == "/" and not (last and _operand(last)):
            j, kind = _quoted(q, i, "/", "regex"), Kind.REGEX
        elif c == ";":
            j, kind = i + 1, Kind.SEMI
        elif c == "$" and (m := _IDENT.match(q, i + 1)):
            j, kind = m.end(), Kind.PARAM
        elif (m := _DURATION.match(q, i)) is not None:
            j, kind = m.end(), Kind.DURATION
        elif (m := _NUMBER.match(q, i)) is not None:
            j = m.end()
            if j < len(q) and q[j] in "eE" and re.match(r"[eE][+-]?\d", q[j:]):  # 1.5e3
                j = re.match(r"[eE][+-]?\d+", q[j:]).end() + j  # type: ignore[union-attr]
            kind = Kind.NUMBER
        elif (m := _IDENT.match(q, i)) is not None:
            j, kind = m.end(), Kind.IDENT
        else:
            op = next((o for o in _OPS if q.startswith(o, i)), None)
            if op is None:
                raise InfluxQLError(f"found {c!r}, expected an InfluxQL token at char {i}")
            j, kind = i + len(op), Kind.OP
        token = Token(kind, q[i:j])
        tokens.append(token)
        if token.significant:
            last = token
        i = j
    return tokens


def split_statements(tokens: list[Token]) -> list[list[Token]]:
    """Statements separated by ``;`` (outside strings, identifiers and comments); empty ones dropped."""
    statements: list[list[Token]] = [[]]
    for t in tokens:
        if t.kind is Kind.SEMI:
            statements.append([])
        else:
            statements[-1].append(t)
    return [s for s in statements if any(t.significant for t in s)]


def significant(statement: list[Token]) -> list[Token]:
    return [t for t in statement if t.significant]


# Read-only SHOW statements that still reveal what only an administrator should see.
_ADMIN_SHOW: Final = frozenset({"USERS", "GRANTS"})


def check_read_only(statement: list[Token]) -> None:
    """Raise :class:`ReadOnlyViolation` unless the statement only reads."""
    words = significant(statement)
    head = words[0]
    if head.is_kw("EXPLAIN"):
        rest = words[1:]
        if rest and rest[0].is_kw("ANALYZE"):
            rest = rest[1:]
        if not rest or not rest[0].is_kw("SELECT"):
            raise ReadOnlyViolation("EXPLAIN must be followed by SELECT")
        words = rest
        head = words[0]
    if head.is_kw("SELECT"):
        if any(t.is_kw("INTO") for t in words):
            raise ReadOnlyViolation("SELECT ... INTO writes to the database")
        return
    if head.is_kw("SHOW"):
        if len(words) > 1 and words[1].upper in _ADMIN_SHOW:
            raise ReadOnlyViolation(f"SHOW {words[1].upper} is for administrators")
        return
    verb = head.upper or head.text
    raise ReadOnlyViolation(f"{verb} statements are not allowed")


def normalize(statement: list[Token]) -> str:
    """The statement as a cache key: comments dropped, whitespace collapsed, keywords upper-cased."""
    out: list[str] = []
    for t in significant(statement):
        out.append(t.text.upper() if t.kind is Kind.IDENT and t.text.upper() in _KEYWORDS else t.text)
    return " ".join(out)


_KEYWORDS: Final = frozenset(
    [
        "SELECT",
        "FROM",
        "WHERE",
        "AND",
        "OR",
        "GROUP",
        "BY",
        "ORDER",
        "ASC",
        "DESC",
        "LIMIT",
        "OFFSET",
        "SLIMIT",
        "SOFFSET",
        "FILL",
        "TZ",
        "AS",
        "SHOW",
        "MEASUREMENTS",
        "MEASUREMENT",
        "TAG",
        "KEYS",
        "KEY",
        "VALUES",
        "FIELD",
        "SERIES",
        "RETENTION",
        "POLICIES",
        "DATABASES",
        "ON",
        "WITH",
        "EXPLAIN",
        "ANALYZE",
        "NOT",
        "IN",
        "CARDINALITY",
        "EXACT",
    ]
)


def duration_ms(text: str) -> float:
    """An InfluxQL duration literal (``15m``, ``1h30m``, ``1764139251123ms``) in milliseconds."""
    parts = _DURATION_PART.findall(text)
    return sum(int(n) * _UNITS[u] for n, u in parts)


@dataclass(frozen=True)
class TimeBound:
    """One side of a ``time`` comparison: a fixed instant or an offset from ``now()``."""

    op: str  # >, >=, <, <=, =
    ms: float  # absolute epoch ms, or the offset from now() when relative
    relative: bool
    span: tuple[int, int]  # indices into the statement's tokens: the expression after the operator
    op_index: int = -1  # index of the operator token

    def at(self, now_ms: float) -> float:
        return now_ms + self.ms if self.relative else self.ms


@dataclass(frozen=True)
class Shape:
    """What routing and caching need to know about a SELECT."""

    lower: TimeBound | None
    upper: TimeBound | None
    interval_ms: float | None  # GROUP BY time(interval)


_CLAUSE_END: Final = frozenset({"GROUP", "ORDER", "LIMIT", "OFFSET", "SLIMIT", "SOFFSET", "TZ", "AND", "OR"})


def _time_expr(statement: list[Token], i: int) -> tuple[float, bool, int] | None:
    """Parse a time expression starting at token ``i``: (ms, relative, index after it)."""
    sig = [k for k in range(i, len(statement)) if statement[k].significant]
    if not sig:
        return None
    first = statement[sig[0]]
    if (
        first.is_kw("NOW")
        and len(sig) >= 3
        and statement[sig[1]].text == "("
        and statement[sig[2]].text == ")"
    ):
        ms, relative, k = 0.0, True, 3
        while (
            k + 1 < len(sig)
            and statement[sig[k]].text in "+-"
            and statement[sig[k + 1]].kind is Kind.DURATION
        ):
            sign = -1 if statement[sig[k]].text == "-" else 1
            ms += sign * duration_ms(statement[sig[k + 1]].text)
            k += 2
        return ms, relative, sig[k - 1] + 1
    if first.kind is Kind.DURATION:
        return duration_ms(first.text), False, sig[0] + 1
    if first.kind is Kind.NUMBER and first.text.isdigit():
        return int(first.text) / 1e6, False, sig[0] + 1  # a bare integer is epoch nanoseconds
    if first.kind is Kind.STRING:
        text = first.text[1:-1].replace(" ", "T", 1)
        try:
            stamp = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            return None
        if stamp.tzinfo is None:
            return None
        return stamp.timestamp() * 1000, False, sig[0] + 1
    return None


def shape(statement: list[Token]) -> Shape:
    """The time range (top-level ``time`` comparisons of the WHERE clause) and GROUP BY interval."""
    lower = upper = None
    interval = None
    depth = 0
    in_where = False
    n = len(statement)
    for i, t in enumerate(statement):
        if t.text == "(":
            depth += 1
        elif t.text == ")":
            depth -= 1
        if depth != 0 or not t.significant:
            continue
        if t.is_kw("WHERE"):
            in_where = True
        elif t.is_kw("GROUP", "ORDER", "LIMIT", "SLIMIT", "OFFSET", "SOFFSET"):
            in_where = False
        if in_where and (t.is_kw("TIME") or (t.kind is Kind.QIDENT and t.value == "time")):
            j = next((k for k in range(i + 1, n) if statement[k].significant), None)
            if j is None or statement[j].text not in (">", ">=", "<", "<=", "="):
                continue
            op = statement[j].text
            parsed = _time_expr(statement, j + 1)
            if parsed is None:
                continue
            ms, relative, end = parsed
            start = next(k for k in range(j + 1, n) if statement[k].significant)
            bound = TimeBound(op, ms, relative, (start, end), j)
            if op in (">", ">=", "="):
                lower = bound
            if op in ("<", "<=", "="):
                upper = bound
        if t.is_kw("BY") and i >= 1:
            sig = [k for k in range(i + 1, min(n, i + 12)) if statement[k].significant]
            if (
                len(sig) >= 3
                and statement[sig[0]].is_kw("TIME")
                and statement[sig[1]].text == "("
                and statement[sig[2]].kind is Kind.DURATION
            ):
                interval = duration_ms(statement[sig[2]].text)
    return Shape(lower, upper, interval)


def sources(statement: list[Token]) -> list[list[int]]:
    """Token indices of each ``a.b.c`` name after FROM (retention-policy-qualified measurements)."""
    found: list[list[int]] = []
    after_from = False
    chain: list[int] = []
    expect_name = True
    for i, t in enumerate(statement):
        if not t.significant:
            continue
        if t.is_kw("FROM"):
            after_from, chain, expect_name = True, [], True
            continue
        if not after_from:
            continue
        name = t.kind in (Kind.IDENT, Kind.QIDENT) and not t.is_kw(*_CLAUSE_END, "WHERE")
        if expect_name and (name or (t.kind is Kind.REGEX and chain)):  # a name, or "rp"./regex/
            chain.append(i)
            expect_name = False
        elif t.text == "." and chain:
            expect_name = True
            if statement[i + 1 : i + 2] and statement[i + 1].text == ".":  # db..measurement
                chain.append(-1)
        else:
            if chain:
                found.append(chain)
            chain, expect_name = [], True
            if t.text not in (",", "(") and t.kind is not Kind.REGEX:
                after_from = False
    if chain:
        found.append(chain)
    return found


def policies_named(statement: list[Token]) -> list[tuple[int, str]]:
    """(token index, name) of the retention policy part of every FROM source that names one."""
    out: list[tuple[int, str]] = []
    for chain in sources(statement):
        if len(chain) == 2 and chain[0] >= 0:
            out.append((chain[0], statement[chain[0]].value))
        elif len(chain) == 3 and chain[1] >= 0:
            out.append((chain[1], statement[chain[1]].value))
    return out


def render(statement: list[Token], replace: dict[int, str]) -> str:
    """The statement's text with the tokens at the given indices replaced."""
    return "".join(replace.get(i, t.text) for i, t in enumerate(statement))
