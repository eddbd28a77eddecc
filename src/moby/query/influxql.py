"""InfluxQL's lexical rules, exactly as InfluxDB 1.x's scanner applies them.

The proxy's safety rests on reading a query the way InfluxDB reads it: a ``;`` or a keyword
inside a string, an identifier, a regex or a comment must never be taken for syntax, and syntax
must never be taken for the inside of one. So this scanner follows InfluxDB 1.x's own
(``influxql/scanner.go``) rule for rule, quirks included:

* whitespace is only space, tab and newline (``\\r`` and ``\\r\\n`` read as ``\\n``); any other
  character outside a literal or a comment is illegal;
* a bare identifier is ASCII letters, digits and ``_``; if a ``"`` follows it directly, the
  token is the quoted part alone (``abc"def"`` is the identifier ``def``);
* strings and quoted identifiers end at the first unescaped quote; the only escapes are ``\\n``,
  ``\\\\``, ``\\"`` and ``\\'``; a newline inside one is an error;
* ``--`` comments run to the end of the line, ``/* */`` comments do not nest;
* numbers have no exponent; digits followed by a letter are a duration (``1e3`` is one);
  ``1.`` is a number that swallows its dot;
* **a ``/`` is a division or starts a comment — except where the grammar asks for a regex.**
  InfluxDB's parser asks for one (``parseRegex``) at a few positions only (after ``=~``/``!~``, at
  the start of a field, a call argument, a GROUP BY dimension and a FROM source, after
  ``"rp".``), and there one run of whitespace may come first and a ``/`` always opens a regex,
  even ``/*``. The scanner never decides this alone: :func:`scan_regex_at` is called by the
  parser (:mod:`moby.query.parser`) at exactly those positions.

A NUL character ends the query for InfluxDB's scanner; it is refused here instead.
"""

from __future__ import annotations

import re
from enum import Enum
from typing import Final, NamedTuple


class InfluxQLError(ValueError):
    """The query is not InfluxQL the proxy could read (InfluxDB would not parse it either, or
    the proxy cannot be sure it reads it as InfluxDB does)."""


class Kind(Enum):
    WS = "ws"
    COMMENT = "comment"
    IDENT = "ident"  # an identifier, bare or (partly) double-quoted
    KEYWORD = "keyword"  # a bare word InfluxDB reserves (SELECT, FROM, AND, TRUE, ...)
    STRING = "string"
    NUMBER = "number"  # 1.5, .5, 1.
    INTEGER = "integer"
    DURATION = "duration"  # 15m, 1h30m (and anything else digits-then-letters)
    REGEX = "regex"
    PARAM = "param"  # $bound_parameter
    OP = "op"  # operators and punctuation: + - * / % & | ^ = != <> =~ !~ < <= > >= ( ) , . : ::
    SEMI = "semi"
    EOF = "eof"


class Token(NamedTuple):
    kind: Kind
    text: str  # exactly as written
    value: str = ""  # identifiers and strings unquoted and unescaped; keywords upper-cased

    @property
    def significant(self) -> bool:
        return self.kind not in (Kind.WS, Kind.COMMENT)

    def is_kw(self, *words: str) -> bool:
        """A reserved word (upper case given): ``t.is_kw("FROM", "WHERE")``."""
        return self.kind is Kind.KEYWORD and self.value in words

    def is_word(self, word: str) -> bool:
        """A bare or quoted identifier with this name, case-insensitively (``time``, ``fill``)."""
        return self.kind is Kind.IDENT and self.value.lower() == word

    def is_op(self, *texts: str) -> bool:
        return self.kind is Kind.OP and self.text in texts


# InfluxDB 1.x's keywords (influxql/token.go of the version InfluxDB 1.6 and 1.7 ship), plus AND,
# OR, TRUE and FALSE, which its scanner looks up the same way. A bare word in this set can never
# be an identifier; in double quotes it always is one.
_KEYWORD_LIST: Final = """
    ALL ALTER ANALYZE ANY AS ASC BEGIN BY CARDINALITY CREATE CONTINUOUS DATABASE DATABASES
    DEFAULT DELETE DESC DESTINATIONS DIAGNOSTICS DISTINCT DROP DURATION END EVERY EXACT EXPLAIN
    FIELD FOR FROM GRANT GRANTS GROUP GROUPS IN INF INSERT INTO KEY KEYS KILL LIMIT MEASUREMENT
    MEASUREMENTS NAME OFFSET ON ORDER PASSWORD POLICY POLICIES PRIVILEGES QUERIES QUERY READ
    REPLICATION RESAMPLE RETENTION REVOKE SELECT SERIES SET SHOW SHARD SHARDS SLIMIT SOFFSET STATS
    SUBSCRIPTION SUBSCRIPTIONS TAG TO USER USERS VALUES WHERE WITH WRITE AND OR TRUE FALSE"""
KEYWORDS: Final = frozenset(_KEYWORD_LIST.split())

_WS: Final = re.compile(r"[ \t\n]+")
_BARE: Final = re.compile(r"[A-Za-z0-9_]+")
_DIGITS: Final = re.compile(r"[0-9]*")
_DURATION_TAIL: Final = re.compile(r"[A-Za-zµ]+[A-Za-zµ0-9]*")
_LETTER: Final = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
_DIGIT: Final = frozenset("0123456789")
_ESCAPES: Final = {"n": "\n", "\\": "\\", '"': '"', "'": "'"}
# Operators and punctuation, longest first where one is the prefix of another.
_OPS: Final = {
    "=": ("=~", "="),
    "!": ("!=", "!~"),
    ">": (">=", ">"),
    "<": ("<=", "<>", "<"),
    ":": ("::", ":"),
    **{c: (c,) for c in "+*%&|^(),."},
}
EOF: Final = Token(Kind.EOF, "")


def normalize_newlines(q: str) -> str:
    """``\\r\\n`` and a lone ``\\r`` as InfluxDB's reader sees them: ``\\n``. The proxy parses and
    forwards this text, so both read the same characters."""
    return q.replace("\r\n", "\n").replace("\r", "\n") if "\r" in q else q


def _quoted(q: str, i: int, what: str) -> tuple[int, str]:
    """End index and unescaped content of the string or quoted identifier opening at ``i``."""
    quote = q[i]
    j = i + 1
    out: list[str] = []
    n = len(q)
    while j < n:
        c = q[j]
        if c == quote:
            return j + 1, "".join(out)
        if c == "\n":
            break
        if c == "\\":
            escaped = _ESCAPES.get(q[j + 1] if j + 1 < n else "")
            if escaped is None:
                raise InfluxQLError(f"bad escape in {what} at char {j + 1}")
            out.append(escaped)
            j += 2
            continue
        out.append(c)
        j += 1
    raise InfluxQLError(f"unterminated {what} at char {i + 1}")


def _ident(q: str, i: int, lookup: bool) -> Token:
    """scanIdent: a bare run, or a quoted part (which, oddly, replaces a bare run before it)."""
    j = i
    n = len(q)
    while j < n:
        if q[j] == '"':
            end, value = _quoted(q, j, "quoted identifier")
            return Token(Kind.IDENT, q[i:end], value)
        m = _BARE.match(q, j)
        if m is None:
            break
        j = m.end()
    word = q[i:j]
    if lookup and word.upper() in KEYWORDS:
        return Token(Kind.KEYWORD, word, word.upper())
    return Token(Kind.IDENT, word, word)


def _number(q: str, i: int) -> Token:
    """scanNumber: digits [. digits] — or digits then letters, a duration."""
    j = _DIGITS.match(q, i).end()  # type: ignore[union-attr]  # [0-9]* always matches
    n = len(q)
    if j < n and q[j] == ".":
        if j + 1 < n and q[j + 1] in _DIGIT:
            j = _DIGITS.match(q, j + 1).end()  # type: ignore[union-attr]
        else:
            j += 1  # InfluxDB's scanner consumes the dot of "1." and drops it
        return Token(Kind.NUMBER, q[i:j], q[i:j].rstrip("."))
    if j < n and (q[j] in _LETTER or q[j] == "µ"):
        j = _DURATION_TAIL.match(q, j).end()  # type: ignore[union-attr]
        return Token(Kind.DURATION, q[i:j], q[i:j])
    return Token(Kind.INTEGER, q[i:j], q[i:j])


def scan_at(q: str, i: int) -> Token:
    """The token starting at ``q[i]`` as InfluxDB's ``Scan()`` reads it (never a regex)."""
    if i >= len(q):
        return EOF
    c = q[i]
    if c in " \t\n":
        return Token(Kind.WS, _WS.match(q, i).group())  # type: ignore[union-attr]
    if c in _LETTER or c == "_" or c == '"':
        return _ident(q, i, lookup=True)
    if c in _DIGIT or (c == "." and q[i + 1 : i + 2] in _DIGIT):
        return _number(q, i)
    if c == "'":
        end, value = _quoted(q, i, "string")
        return Token(Kind.STRING, q[i:end], value)
    if c == "$":
        param = _ident(q, i + 1, lookup=False)
        return Token(Kind.PARAM, "$" + param.text, param.value)
    if c == "-":
        if q.startswith("--", i):
            end = q.find("\n", i)
            return Token(Kind.COMMENT, q[i : len(q) if end < 0 else end + 1])
        return Token(Kind.OP, "-")
    if c == "/":
        if q.startswith("/*", i):
            end = q.find("*/", i + 2)
            if end < 0:
                raise InfluxQLError(f"unterminated comment at char {i + 1}")
            return Token(Kind.COMMENT, q[i : end + 2])
        return Token(Kind.OP, "/")
    if c == ";":
        return Token(Kind.SEMI, ";")
    for op in _OPS.get(c, ()):
        if q.startswith(op, i):
            return Token(Kind.OP, op)
    if c == "\x00":
        raise InfluxQLError(f"NUL character at char {i + 1}")
    raise InfluxQLError(f"found {c!r}, which is not InfluxQL, at char {i + 1}")


def scan_regex_at(q: str, i: int) -> Token:
    """ScanRegex: the regex literal whose opening ``/`` is ``q[i]``. It ends at the first ``/``
    not directly preceded by a backslash (``\\/`` is a slash; any other backslash is kept)."""
    j = i + 1
    n = len(q)
    out: list[str] = []
    while j < n:
        c = q[j]
        if c == "/":
            return Token(Kind.REGEX, q[i : j + 1], "".join(out))
        if c == "\n":
            break
        if c == "\\" and j + 1 < n and q[j + 1] == "/":
            out.append("/")
            j += 2
            continue
        out.append(c)
        j += 1
    raise InfluxQLError(f"unterminated regex at char {i + 1}")


def tokenize(q: str) -> list[Token]:
    """Every token of ``q`` as ``Scan()`` reads it, with no regex positions: for tests and for
    texts known to hold no regex. Statements are read by :mod:`moby.query.parser`."""
    tokens: list[Token] = []
    i = 0
    while i < len(q):
        t = scan_at(q, i)
        tokens.append(t)
        i += len(t.text)
    return tokens


def significant(tokens: list[Token]) -> list[Token]:
    return [t for t in tokens if t.significant]


def normalize(tokens: list[Token]) -> str:
    """A statement as a cache key: comments dropped, whitespace collapsed, keywords upper-cased."""
    return " ".join(t.value if t.kind is Kind.KEYWORD else t.text for t in tokens if t.significant)


def render(tokens: list[Token], replace: dict[int, str]) -> str:
    """The statement's text with the tokens at the given indices replaced."""
    return "".join(replace.get(i, t.text) for i, t in enumerate(tokens))


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
_DURATION_VALID: Final = re.compile(r"(?:[0-9]+(?:ns|ms|u|µ|s|m|h|d|w))+")
_DURATION_PART: Final = re.compile(r"([0-9]+)(ns|ms|u|µ|s|m|h|d|w)")


def valid_duration(text: str) -> bool:
    """What InfluxDB's ParseDuration accepts (``15m``, ``1h30m``, ``100ms``; not ``1e3``)."""
    return _DURATION_VALID.fullmatch(text) is not None


def duration_ms(text: str) -> float:
    """An InfluxQL duration literal (``15m``, ``1h30m``, ``1764139251123ms``) in milliseconds."""
    return sum(int(n) * _UNITS[u] for n, u in _DURATION_PART.findall(text))
