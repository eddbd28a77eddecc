"""A parser for the read-only InfluxQL the proxy forwards: SELECT (without INTO) and five SHOWs.

It follows InfluxDB 1.x's own recursive-descent parser (``influxql/parser.go``) production for
production, so that a query it accepts is read by InfluxDB as the same statements with the same
boundaries. In particular it asks the scanner for a regex literal exactly where InfluxDB's parser
does (``parseRegex``): at the start of a field, a call argument, a GROUP BY dimension and a FROM
source, after ``"rp".``, and after ``=~``/``!~``. Everywhere else a ``/`` divides — ``tz / 1`` is
a division, as InfluxDB reads it.

Anything outside that grammar is refused, never passed through: other statements (``DROP``,
``CREATE``, ``DELETE``, ``GRANT``, ``KILL``, ``EXPLAIN``, ...), ``SELECT ... INTO`` (at any depth),
``SHOW`` statements other than MEASUREMENTS, TAG KEYS, TAG VALUES, FIELD KEYS and RETENTION
POLICIES, bound parameters, and anything this parser cannot read. Where InfluxDB is lenient in a
way that is easy to get wrong (``"a"./re/`` inside an expression, a bound parameter), it is
stricter: refusing more is safe, reading differently is not.

The parse also yields what the proxy needs beyond the verdict: every database a statement names
(for the allow-list), each source's retention policy token (for ``"auto"`` routing), the WHERE
clause's top-level time bounds and the ``GROUP BY time()`` interval (for routing and caching).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Final

from moby.query.influxql import (
    InfluxQLError,
    Kind,
    Token,
    duration_ms,
    normalize_newlines,
    scan_at,
    scan_regex_at,
    valid_duration,
)


class Refused(ValueError):
    """A statement the proxy does not forward (it may write, or it is not on the allow-list)."""


# Binary operators and their precedence (influxql Token.Precedence).
_PRECEDENCE: Final = {
    "OR": 1,
    "AND": 2,
    **dict.fromkeys(("=", "!=", "<>", "=~", "!~", "<", "<=", ">", ">="), 3),
    **dict.fromkeys(("+", "-", "|", "^"), 4),
    **dict.fromkeys(("*", "/", "%", "&"), 5),
}
_WHITESPACE: Final = frozenset(" \t\n")
_FILL: Final = frozenset({"null", "none", "previous", "linear"})
_VAR_TYPES: Final = frozenset({"float", "integer", "unsigned", "string", "boolean"})
_COMPARISONS: Final = frozenset({">", ">=", "<", "<=", "="})
# The SHOW statements the exported dashboards and Grafana's query editor send.
ALLOWED_SHOW: Final = ("MEASUREMENTS", "TAG KEYS", "TAG VALUES", "FIELD KEYS", "RETENTION POLICIES")


@dataclass
class Expr:
    """An expression node; ``start``/``end`` index the statement's tokens (``end`` exclusive)."""

    kind: str  # binary paren call var regex string number integer duration bool wildcard distinct
    start: int
    end: int
    value: str = ""  # operator (binary), lower-cased name (call), name (var), literal text
    args: list[Expr] = field(default_factory=list)  # binary: [lhs, rhs]; call: arguments
    op_index: int = -1  # binary: the operator's token
    typed: bool = False  # var: with a ::type


@dataclass
class Source:
    database: str | None = None
    policy: str | None = None
    measurement: str | None = None
    regex: str | None = None
    policy_index: int = -1  # token index of the retention policy's identifier
    subquery: Statement | None = None


@dataclass
class Statement:
    tokens: list[Token]  # from its first word to its end (comments and whitespace included)
    kind: str  # "SELECT" or "SHOW <what>"
    sources: list[Source] = field(default_factory=list)
    databases: list[str] = field(default_factory=list)  # every database it names, at any depth
    where: Expr | None = None
    dimensions: list[Expr] = field(default_factory=list)
    fill: str | None = None
    clauses: set[str] = field(default_factory=set)  # LIMIT OFFSET SLIMIT SOFFSET ORDER TZ

    def all_sources(self) -> list[Source]:
        """Its sources and, depth first, those of its subqueries."""
        out: list[Source] = []
        for s in self.sources:
            out.append(s)
            if s.subquery is not None:
                out.extend(s.subquery.all_sources())
        return out


# Bounds on what an attacker can make the parser do (it runs on the event loop): a dashboard's
# query is a few hundred characters, one statement, a few levels of parentheses.
MAX_QUERY_CHARS: Final = 64 * 1024
MAX_STATEMENTS: Final = 64
MAX_DEPTH: Final = 64  # nested parentheses, calls and subqueries


def parse(q: str) -> list[Statement]:
    """Every statement of ``q``; raises :class:`InfluxQLError` or :class:`Refused`."""
    if len(q) > MAX_QUERY_CHARS:
        raise InfluxQLError(f"the query is longer than {MAX_QUERY_CHARS} characters")
    return _Parser(normalize_newlines(q)).query()


class _Parser:
    def __init__(self, q: str) -> None:
        self.q = q
        self.pos = 0
        self.tokens: list[Token] = []  # of the statement being read
        self._peeked: tuple[int, list[Token], Token] | None = None
        self._scanned: dict[int, Token] = {}  # the token at each position (a pure function of it)
        self._depth = 0

    # --- scanning ----------------------------------------------------------------------------------
    def scan(self, i: int) -> Token:
        t = self._scanned.get(i)
        if t is None:
            t = self._scanned[i] = scan_at(self.q, i)
        return t

    def raw(self) -> Token:
        """The next token, whitespace and comments included, without consuming it."""
        return self.scan(self.pos)

    def push(self, t: Token) -> None:
        self.tokens.append(t)
        self.pos += len(t.text)

    def peek(self) -> Token:
        """The next significant token (InfluxDB's ScanIgnoreWhitespace), without consuming it."""
        if self._peeked is not None and self._peeked[0] == self.pos:
            return self._peeked[2]
        skipped: list[Token] = []
        i = self.pos
        while True:
            t = self.scan(i)
            if t.significant or t.kind is Kind.EOF:
                break
            skipped.append(t)
            i += len(t.text)
        self._peeked = (self.pos, skipped, t)
        return t

    def take(self) -> Token:
        t = self.peek()
        assert self._peeked is not None
        for s in self._peeked[1]:
            self.push(s)
        self._peeked = None
        if t.kind is not Kind.EOF:
            self.push(t)
        return t

    def regex(self) -> Token | None:
        """InfluxDB's parseRegex: one run of whitespace, then a ``/`` opens a regex (even ``/*``)."""
        if self.q[self.pos : self.pos + 1] in _WHITESPACE:
            self.push(self.raw())
        if self.q.startswith("/", self.pos):
            r = scan_regex_at(self.q, self.pos)
            self.push(r)
            return r
        return None

    @property
    def last(self) -> int:
        return len(self.tokens) - 1

    def fail(self, expected: str, found: Token | None = None) -> InfluxQLError:
        t = found if found is not None else self.peek()
        what = "end of query" if t.kind is Kind.EOF else repr(t.text)
        return InfluxQLError(f"found {what}, expected {expected} at char {self.pos + 1}")

    def expect_kw(self, word: str) -> None:
        t = self.take()
        if not t.is_kw(word):
            raise self.fail(word, t)

    def expect_op(self, op: str) -> None:
        t = self.take()
        if not t.is_op(op):
            raise self.fail(repr(op), t)

    def ident(self) -> Token:
        t = self.take()
        if t.kind is not Kind.IDENT:
            raise self.fail("identifier", t)
        return t

    # --- statements ----------------------------------------------------------------------------------
    def query(self) -> list[Statement]:
        """ParseQuery: statements separated by one or more ``;``."""
        statements: list[Statement] = []
        semi = True
        while True:
            self.tokens = []  # a statement's own list starts at its first word
            t = self.peek()
            if t.kind is Kind.EOF:
                break
            if t.kind is Kind.SEMI:
                self.take()
                semi = True
                continue
            if not semi:
                raise self.fail("';'")
            if len(statements) == MAX_STATEMENTS:
                raise InfluxQLError(f"the query holds more than {MAX_STATEMENTS} statements")
            self.pos = self._skip_to_significant()
            statements.append(self.statement())
            semi = False
        if not statements:
            raise InfluxQLError("the query holds no statement")
        return statements

    def _skip_to_significant(self) -> int:
        self.peek()
        assert self._peeked is not None
        pos = self.pos + sum(len(s.text) for s in self._peeked[1])
        self._peeked = None
        return pos

    def statement(self) -> Statement:
        first = self.take()
        if first.is_kw("SELECT"):
            return self.select()
        if first.is_kw("SHOW"):
            return self.show()
        if first.kind is Kind.KEYWORD:
            raise Refused(f"{first.value} statements are not allowed")
        raise self.fail("SELECT or SHOW", first)

    def select(self) -> Statement:
        """parseSelectStatement, from the token after SELECT."""
        stmt = Statement(self.tokens, "SELECT")
        self.fields()
        if self.peek().is_kw("INTO"):
            raise Refused("SELECT ... INTO writes to the database")
        self.expect_kw("FROM")
        stmt.sources = self.sources(stmt, subqueries=True)
        stmt.where = self.condition()
        stmt.dimensions = self.dimensions()
        stmt.fill = self.fill()
        self.order_by(stmt)
        for word in ("LIMIT", "OFFSET", "SLIMIT", "SOFFSET"):
            self.optional_int(stmt, word)
        self.location(stmt)
        return stmt

    def fields(self) -> None:
        while True:
            if self.regex() is None:
                self.expr()
            if self.peek().is_kw("AS"):
                self.take()
                self.ident()
            if not self.peek().is_op(","):
                return
            self.take()

    def sources(self, stmt: Statement, *, subqueries: bool) -> list[Source]:
        out = [self.source(stmt, subqueries=subqueries)]
        while self.peek().is_op(","):
            self.take()
            out.append(self.source(stmt, subqueries=subqueries))
        return out

    def source(self, stmt: Statement, *, subqueries: bool) -> Source:
        """parseSource: /regex/, (subquery), or db.rp.measurement with an optional final /regex/."""
        r = self.regex()
        if r is not None:
            return Source(regex=r.value)
        if subqueries and self.peek().is_op("("):
            self.take()
            self.expect_kw("SELECT")
            self.nested()
            sub = self.select()  # shares self.tokens: its indices are the top-level statement's
            self._depth -= 1
            self.expect_op(")")
            stmt.databases.extend(sub.databases)
            return Source(subquery=sub)
        names, indices, regex_follows = self.segments(in_source=True)
        if len(names) == 3:
            if regex_follows:
                raise InfluxQLError(f"a regex after three name segments at char {self.pos + 1}")
            src = Source(names[0], names[1], names[2], policy_index=indices[1])
        else:
            regex = self.regex() if regex_follows else None
            if regex is not None and len(names) == 1:
                src = Source(None, names[0], None, regex.value, policy_index=indices[0])
            elif regex is not None:
                src = Source(names[0], names[1], None, regex.value, policy_index=indices[1])
            elif len(names) == 1:
                src = Source(measurement=names[0])
            else:
                src = Source(None, names[0], names[1], policy_index=indices[0])
        if src.database is not None:
            stmt.databases.append(src.database)
        if src.policy == "":
            src.policy, src.policy_index = None, -1
        return src

    def segments(self, *, in_source: bool) -> tuple[list[str], list[int], bool]:
        """parseSegmentedIdents: ``a``, ``a.b``, ``a.b.c``, ``a..c``; True when ``./`` ended it."""
        first = self.ident()
        names, indices = [first.value], [self.last]
        while self.raw().is_op("."):
            self.push(self.raw())
            following = self.q[self.pos : self.pos + 1]
            if following == "/" and in_source:
                return names, indices, True
            if following in ("/", ":"):  # InfluxDB ends the name here; refused as too obscure
                raise self.fail("identifier after '.'")
            if following == ".":
                names.append("")
                indices.append(-1)
                continue
            names.append(self.ident().value)
            indices.append(self.last)
        if len(names) > 3:
            raise InfluxQLError(f"too many segments in {'.'.join(names)!r}")
        return names, indices, False

    def condition(self) -> Expr | None:
        if not self.peek().is_kw("WHERE"):
            return None
        self.take()
        return self.expr()

    def dimensions(self) -> list[Expr]:
        if not self.peek().is_kw("GROUP"):
            return []
        self.take()
        self.expect_kw("BY")
        dims: list[Expr] = []
        while True:
            r = self.regex()
            if r is not None:
                dims.append(Expr("regex", self.last, self.last + 1, r.value))
                # After a regex dimension InfluxDB reads the comma with Scan(), not skipping spaces.
                if self.raw().is_op(","):
                    self.push(self.raw())
                    continue
                return dims
            dims.append(self.expr())
            if not self.peek().is_op(","):
                return dims
            self.take()

    def fill(self) -> str | None:
        if not self.peek().is_word("fill"):
            return None
        e = self.expr()
        if e.kind != "call" or e.value != "fill" or len(e.args) != 1:
            raise InfluxQLError("fill must be a function call with one argument")
        arg = e.args[0]
        if arg.kind == "var" and not arg.typed and arg.value in _FILL:
            return arg.value
        if arg.kind in ("integer", "number"):
            return "number"
        raise InfluxQLError("fill takes null, none, previous, linear or a number")

    def order_by(self, stmt: Statement) -> None:
        if not self.peek().is_kw("ORDER"):
            return
        self.take()
        self.expect_kw("BY")
        t = self.take()
        if t.kind is Kind.IDENT:
            if t.value != "time":
                raise InfluxQLError("only ORDER BY time supported at this time")
            if self.peek().is_kw("ASC", "DESC"):
                self.take()
        elif not t.is_kw("ASC", "DESC"):
            raise self.fail("identifier, ASC or DESC", t)
        if self.peek().is_op(","):
            raise InfluxQLError("only ORDER BY time supported at this time")
        stmt.clauses.add("ORDER")

    def optional_int(self, stmt: Statement, word: str) -> None:
        if not self.peek().is_kw(word):
            return
        self.take()
        t = self.take()
        if t.kind is not Kind.INTEGER:
            raise self.fail("integer", t)
        stmt.clauses.add(word)

    def location(self, stmt: Statement) -> None:
        if not self.peek().is_word("tz"):
            return
        e = self.expr()
        if e.kind != "call" or e.value != "tz" or len(e.args) != 1 or e.args[0].kind != "string":
            raise InfluxQLError("tz takes one string argument, e.g. tz('Europe/Berlin')")
        stmt.clauses.add("TZ")

    # --- SHOW ----------------------------------------------------------------------------------------
    def show(self) -> Statement:
        t = self.take()
        if t.kind is Kind.EOF:
            raise self.fail("what to SHOW", t)
        what = t.value if t.kind is Kind.KEYWORD else t.text
        if t.is_kw("TAG", "FIELD", "RETENTION"):
            second = self.take()
            what += " " + (second.value if second.kind is Kind.KEYWORD else second.text)
        if what not in ALLOWED_SHOW:
            raise Refused(f"SHOW {what} is not allowed (allowed: SHOW {', SHOW '.join(ALLOWED_SHOW)})")
        stmt = Statement(self.tokens, f"SHOW {what}")
        if what == "TAG VALUES" and self.peek().is_kw("EXACT", "CARDINALITY"):
            raise Refused("SHOW TAG VALUES CARDINALITY is not allowed")
        if self.peek().is_kw("ON"):
            self.take()
            stmt.databases.append(self.ident().value)
        if what == "RETENTION POLICIES":
            return stmt
        if what == "MEASUREMENTS":
            if self.peek().is_kw("WITH"):
                self.take()
                self.expect_kw("MEASUREMENT")
                op = self.take()
                if not op.is_op("=", "=~"):
                    raise self.fail("'=' or '=~'", op)
                self.source(stmt, subqueries=False)
        elif self.peek().is_kw("FROM"):
            self.take()
            stmt.sources = self.sources(stmt, subqueries=False)
        if what == "TAG VALUES":
            self.tag_key_expr()
        if what != "FIELD KEYS":
            stmt.where = self.condition()
        self.order_by(stmt)
        limits = ("LIMIT", "OFFSET", "SLIMIT", "SOFFSET") if what == "TAG KEYS" else ("LIMIT", "OFFSET")
        for word in limits:
            self.optional_int(stmt, word)
        return stmt

    def tag_key_expr(self) -> None:
        self.expect_kw("WITH")
        self.expect_kw("KEY")
        op = self.take()
        if op.is_kw("IN"):
            self.expect_op("(")
            self.ident()
            while self.peek().is_op(","):
                self.take()
                self.ident()
            self.expect_op(")")
        elif op.is_op("=", "!="):
            self.ident()
        elif op.is_op("=~", "!~"):
            if self.regex() is None:
                raise self.fail("regex")
        else:
            raise self.fail("IN, '=' or '=~'", op)

    # --- expressions ---------------------------------------------------------------------------------
    def expr(self) -> Expr:
        """ParseExpr: unary expressions joined by binary operators, by precedence."""
        root = Expr("binary", 0, 0, args=[self.unary()])  # a dummy root, as InfluxDB builds it
        while True:
            op = self.peek()
            name = op.value if op.is_kw("AND", "OR") else op.text if op.kind is Kind.OP else ""
            if name not in _PRECEDENCE:
                return root.args[-1]
            self.take()
            op_index = self.last
            if name in ("=~", "!~"):
                r = self.regex()
                if r is None:
                    raise self.fail("regex")
                rhs = Expr("regex", self.last, self.last + 1, r.value)
            else:
                rhs = self.unary()
            node = root
            while True:
                r_node = node.args[-1]
                if r_node.kind != "binary" or _PRECEDENCE[r_node.value] >= _PRECEDENCE[name]:
                    node.args[-1] = Expr("binary", r_node.start, rhs.end, name, [r_node, rhs], op_index)
                    break
                r_node.end = rhs.end  # it now ends where the new operand does
                node = r_node

    def nested(self) -> None:
        self._depth += 1
        if self._depth > MAX_DEPTH:
            raise InfluxQLError(f"the query nests parentheses, calls or subqueries deeper than {MAX_DEPTH}")

    def unary(self) -> Expr:
        self.nested()
        try:
            return self._unary()
        finally:
            self._depth -= 1

    def _unary(self) -> Expr:
        t = self.take()
        start = self.last
        if t.is_op("("):
            inner = self.expr()
            self.expect_op(")")
            return Expr("paren", start, self.last + 1, args=[inner])
        if t.kind is Kind.IDENT:
            if self.raw().is_op("("):  # a call only when "(" follows the name directly
                self.push(self.raw())
                return self.call(t.value.lower(), start)
            return self.var(t, start)
        if t.is_kw("DISTINCT"):
            following = self.raw()
            if following.is_op("("):
                self.push(following)
                return self.call("distinct", start)
            if following.kind is Kind.WS:
                self.push(following)
                name = self.ident()
                return Expr("distinct", start, self.last + 1, name.value)
            raise self.fail("'(' or identifier", following)
        literal = {
            Kind.STRING: "string",
            Kind.NUMBER: "number",
            Kind.INTEGER: "integer",
            Kind.DURATION: "duration",
        }.get(t.kind)
        if literal == "duration" and not valid_duration(t.text):
            raise InfluxQLError(f"invalid duration {t.text!r} at char {self.pos}")
        if literal is not None:
            return Expr(literal, start, start + 1, t.value)
        if t.is_kw("TRUE", "FALSE"):
            return Expr("bool", start, start + 1, t.value)
        if t.is_op("*"):
            if self.raw().is_op("::"):
                self.push(self.raw())
                kind = self.raw()
                if not kind.is_kw("FIELD", "TAG"):
                    raise self.fail("field or tag", kind)
                self.push(kind)
            return Expr("wildcard", start, self.last + 1)
        if t.kind is Kind.PARAM:
            raise Refused("bound parameters ($name) are not supported by the MOBY query proxy")
        if t.is_op("+", "-"):
            following = self.peek()
            if following.kind in (Kind.NUMBER, Kind.INTEGER, Kind.DURATION, Kind.IDENT) or following.is_op(
                "("
            ):
                inner = self.unary()
                if inner.kind in ("number", "integer", "duration"):
                    return Expr(inner.kind, start, inner.end, t.text + inner.value)
                return Expr("binary", start, inner.end, "*", [Expr("integer", start, start + 1, "1"), inner])
            raise self.fail("identifier, number, duration or '('", following)
        raise self.fail("identifier, string, number or bool", t)

    def call(self, name: str, start: int) -> Expr:
        """parseCall, after ``name(``."""
        args: list[Expr] = []
        r = self.regex()
        if r is not None:
            args.append(Expr("regex", self.last, self.last + 1, r.value))
        elif self.raw().is_op(")"):
            self.push(self.raw())
            return Expr("call", start, self.last + 1, name)
        else:
            args.append(self.expr())
        while self.peek().is_op(","):
            self.take()
            r = self.regex()
            args.append(Expr("regex", self.last, self.last + 1, r.value) if r is not None else self.expr())
        self.expect_op(")")
        return Expr("call", start, self.last + 1, name, args)

    def var(self, first: Token, start: int) -> Expr:
        """ParseVarRef: a (segmented) name with an optional ``::type``."""
        self.tokens.pop()
        self.pos -= len(first.text)
        names, _, _ = self.segments(in_source=False)
        typed = False
        if self.raw().is_op("::"):
            self.push(self.raw())
            kind = self.raw()
            if not (kind.is_kw("FIELD", "TAG") or (kind.kind is Kind.IDENT and kind.value in _VAR_TYPES)):
                raise self.fail("a type (float, integer, unsigned, string, boolean, field, tag)", kind)
            self.push(kind)
            typed = True
        return Expr("var", start, self.last + 1, ".".join(names), typed=typed)


# --- what routing and caching need ------------------------------------------------------------------


@dataclass(frozen=True)
class TimeBound:
    """One side of a top-level ``time`` comparison: a fixed instant or an offset from ``now()``."""

    op: str  # >, >=, <, <=, =
    ms: float  # absolute epoch ms, or the offset from now() when relative
    relative: bool
    span: tuple[int, int]  # token indices of the expression after the operator
    op_index: int = -1

    def at(self, now_ms: float) -> float:
        return now_ms + self.ms if self.relative else self.ms


@dataclass(frozen=True)
class Shape:
    lower: TimeBound | None
    upper: TimeBound | None
    interval_ms: float | None  # GROUP BY time(interval)
    interval_offset: bool = False  # GROUP BY time(interval, offset)


def _conjuncts(where: Expr | None) -> list[Expr]:
    """The expressions ANDed at the top of a condition (iteratively: chains can be long)."""
    out: list[Expr] = []
    stack = [where] if where is not None else []
    while stack:
        e = stack.pop()
        if e.kind == "binary" and e.value == "AND":
            stack += [e.args[1], e.args[0]]
        elif e.kind == "paren":
            stack.append(e.args[0])
        else:
            out.append(e)
    return out


def _time_value(e: Expr) -> tuple[float, bool] | None:
    """(ms, relative to now) of ``now() - 15m``, ``1764139251123ms``, ``'2025-11-26T06:40:51Z'``."""
    offset = 0.0
    while True:  # unwrap parentheses and "± duration" steps, from the right
        if e.kind == "paren":
            e = e.args[0]
        elif e.kind == "binary" and e.value in ("+", "-") and e.args[1].kind == "duration":
            offset += (-1 if e.value == "-" else 1) * duration_ms(e.args[1].value)
            e = e.args[0]
        else:
            break
    base = _base_time(e)
    return None if base is None else (base[0] + offset, base[1])


def _base_time(e: Expr) -> tuple[float, bool] | None:
    if e.kind == "call" and e.value == "now" and not e.args:
        return 0.0, True
    if e.kind == "duration" and not e.value.startswith(("-", "+")):
        return duration_ms(e.value), False
    if e.kind == "integer" and e.value.isdigit():
        return int(e.value) / 1e6, False  # a bare integer is epoch nanoseconds
    if e.kind == "string":
        try:
            stamp = datetime.fromisoformat(e.value.replace(" ", "T", 1).replace("Z", "+00:00"))
        except ValueError:
            return None
        return (stamp.timestamp() * 1000, False) if stamp.tzinfo is not None else None
    return None


def shape(statement: Statement) -> Shape:
    """The time range (``time`` comparisons ANDed at the top of WHERE) and GROUP BY interval."""
    lower = upper = None
    for c in _conjuncts(statement.where):
        if c.kind != "binary" or c.value not in _COMPARISONS:
            continue
        lhs, rhs = c.args
        if lhs.kind != "var" or lhs.value.lower() != "time":
            continue
        parsed = _time_value(rhs)
        if parsed is None:
            continue
        bound = TimeBound(c.value, parsed[0], parsed[1], (rhs.start, rhs.end), c.op_index)
        if c.value in (">", ">=", "="):
            lower = bound
        if c.value in ("<", "<=", "="):
            upper = bound
    interval = None
    offset = False
    for d in statement.dimensions:
        if d.kind == "call" and d.value == "time" and d.args and d.args[0].kind == "duration":
            interval = duration_ms(d.args[0].value)
            offset = len(d.args) > 1
    return Shape(lower, upper, interval, offset)


def policies_named(statement: Statement) -> list[tuple[int, str]]:
    """(token index, name) of the retention policy of every source that names one, at any depth."""
    return [(s.policy_index, s.policy) for s in statement.all_sources() if s.policy is not None]


__all__ = ["Expr", "Refused", "Shape", "Source", "Statement", "TimeBound", "parse", "shape"]
