"""Configuration mistakes as lines a person can act on: what they wrote, what is wrong, what is allowed.

Every command reports a bad setting the same way, whatever the setting's source (an environment
variable, a key of the ``MOBY_CONFIG`` file, a key of an edge agent's TOML file)::

    MOBY_BATCH_MAX_POINTS='abc': not a valid integer; allowed: an integer ≥ 1 (default 5000)
    /etc/moby/agent.toml: [sensors.0] interval_s=0: should be greater than 0; allowed: a number > 0

The pieces here are pure: :func:`problem_lines` turns a pydantic ``ValidationError`` into such
lines, given a function that names a field's location as the user wrote it; what is allowed is
read from the model's own JSON Schema, so a field added later is described without more code.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable, Sequence
from enum import Enum
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from pydantic import BaseModel, SecretStr, ValidationError
from pydantic_core import ErrorDetails

Loc = tuple[int | str, ...]
MAX_VALUE_CHARS = 80


class ConfigError(Exception):
    """One or more configuration problems, each already a finished line."""

    def __init__(self, problems: Iterable[str], warnings: Iterable[str] = ()) -> None:
        self.problems = tuple(problems)
        self.warnings = tuple(warnings)  # found on the way, worth showing with the problems
        super().__init__("\n".join(self.problems))


def redact_url(url: str) -> str:
    """The URL with any password replaced, safe to log."""
    try:
        parts = urlsplit(url)
        password, hostname, port = parts.password, parts.hostname, parts.port
    except ValueError:  # an unparsable port, a bad IPv6 literal: say nothing of the netloc
        return "<unparsable URL>"
    if password is None:
        return url
    netloc = f"{parts.username}:***@{hostname}" + (f":{port}" if port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def show_value(value: object, *, secret: bool = False) -> str:
    """A value as it may appear in a message: secrets hidden, URLs redacted, long text cut."""
    if secret or isinstance(value, SecretStr):
        return "'***'"
    if isinstance(value, str) and "://" in value:
        value = redact_url(value)
    text = repr(value)
    return text if len(text) <= MAX_VALUE_CHARS else text[: MAX_VALUE_CHARS - 1] + "…"


def closest(name: str, candidates: Iterable[str]) -> str | None:
    """The candidate a typo most likely meant (difflib), or None."""
    matches = difflib.get_close_matches(name, list(candidates), n=1, cutoff=0.6)
    return matches[0] if matches else None


def did_you_mean(name: str, candidates: Iterable[str]) -> str:
    guess = closest(name, candidates)
    return f" (did you mean {guess}?)" if guess else ""


# -- what is allowed, from a JSON Schema ---------------------------------------------------------
_TYPES = {
    "integer": "an integer",
    "number": "a number",
    "boolean": "true or false",
    "string": "text",
    "array": "a list",
    "object": "a table of keys and values",
}
_FORMATS = {
    "path": "a path",
    "file-path": "the path of an existing file",
    "directory-path": "the path of an existing folder",
    "password": "text (secret)",
    "uri": "a URL",
}
_BOUNDS = (("minimum", "≥"), ("exclusiveMinimum", ">"), ("maximum", "≤"), ("exclusiveMaximum", "<"))


def _number(value: object) -> str:
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, int) and value >= 1024**2 and value % 1024**2 == 0:
        return f"{value} ({value // 1024**2} MiB)"
    return str(value)


def describe_allowed(schema: dict[str, Any]) -> str:
    """'an integer ≥ 1', 'one of full, normal', 'text matching ^…$', … for a property's schema."""
    for key in ("anyOf", "oneOf"):
        if key in schema:
            kinds = [describe_allowed(s) for s in schema[key] if s.get("type") != "null"]
            return " or ".join(dict.fromkeys(kinds)) or "nothing"
    if "enum" in schema:
        return "one of " + ", ".join(str(v) for v in schema["enum"])
    if "const" in schema:
        return f"exactly {schema['const']}"
    kind = schema.get("type")
    text = _FORMATS.get(schema.get("format", ""), _TYPES.get(kind, "a value")) if kind else "a value"
    items = schema.get("items")
    if kind == "array" and isinstance(items, dict):
        text = "a list of " + ("tables" if "$ref" in items else describe_allowed(items))
    if "pattern" in schema:
        text += f" matching {schema['pattern']}"
    bounds = [f"{sign} {_number(schema[key])}" for key, sign in _BOUNDS if key in schema]
    if bounds:
        text += " " + " and ".join(bounds)
    text += _count(schema.get("minLength"), schema.get("maxLength"), "character", "characters")
    text += _count(schema.get("minItems"), schema.get("maxItems"), "entry", "entries")
    return text


def _count(low: int | None, high: int | None, one: str, many: str) -> str:
    if low is not None and high is not None:
        return f", {low}–{high} {many}"
    if low is not None:
        return f", at least {low} {one if low == 1 else many}"
    if high is not None:
        return f", at most {high} {one if high == 1 else many}"
    return ""


def field_schemas(model: type[BaseModel]) -> dict[str, dict[str, Any]]:
    """Each field's JSON Schema (``$ref``s resolved one level), keyed by field name."""
    schema = model.model_json_schema()
    defs = schema.get("$defs", {})
    out: dict[str, dict[str, Any]] = {}
    by_alias = {f.alias or n: n for n, f in model.model_fields.items()}
    for key, prop in schema.get("properties", {}).items():
        ref = prop.get("$ref", "")
        if ref.startswith("#/$defs/"):
            prop = {**defs.get(ref.removeprefix("#/$defs/"), {}), **prop}
        out[by_alias.get(key, key)] = prop
    return out


def secret_fields(model: type[BaseModel]) -> frozenset[str]:
    """Fields whose values are never shown (SecretStr, alone or in a union)."""
    return frozenset(name for name, f in model.model_fields.items() if "SecretStr" in repr(f.annotation))


def default_of(model: type[BaseModel], field: str) -> object:
    """A field's default as a person would write it, or None when it has none (or a secret)."""
    info = model.model_fields[field]
    if field in secret_fields(model) or info.is_required():
        return None
    value = info.get_default(call_default_factory=True)
    if isinstance(value, Enum):
        value = value.value
    return value


def show_default(value: object) -> str:
    """A default as it would be written in the environment: ``true``, ``./var``, ``—`` for none."""
    if value is None or value == "":
        return "—"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, Path) and not value.is_absolute():
        return f"./{value}"
    return str(value)


# -- pydantic errors as lines ----------------------------------------------------------------------
_MESSAGE_PREFIXES = (("Value error, ", ""), ("Input should be ", "should be "), ("Assertion failed, ", ""))


# Where the "allowed" part says it better (the pattern, the choices), a short word is enough.
_SHORT = {
    "string_pattern_mismatch": "wrong form",
    "literal_error": "not one of the choices",
    "enum": "not one of the choices",
}


def _message(error: ErrorDetails) -> str:
    if error["type"] in _SHORT:
        return _SHORT[error["type"]]
    msg = str(error["msg"])
    for prefix, replacement in _MESSAGE_PREFIXES:
        if msg.startswith(prefix):
            msg = replacement + msg[len(prefix) :]
    if error["type"] == "extra_forbidden":
        return "not a known setting"
    if error["type"] == "missing":
        return "required, but not set"
    return msg


def schema_at(root: dict[str, Any], loc: Loc) -> dict[str, Any] | None:
    """The JSON Schema of the value at ``loc`` (properties, list items and ``$ref``s followed)."""
    defs = root.get("$defs", {})

    def resolve(schema: dict[str, Any]) -> dict[str, Any]:
        ref = schema.get("$ref", "")
        if ref.startswith("#/$defs/"):
            return {
                **defs.get(ref.removeprefix("#/$defs/"), {}),
                **{k: v for k, v in schema.items() if k != "$ref"},
            }
        return schema

    schema: dict[str, Any] | None = root
    for part in loc:
        if schema is None:
            return None
        schema = resolve(schema)
        if isinstance(part, int):
            items = schema.get("items")
            schema = items if isinstance(items, dict) else None
        else:
            props = schema.get("properties", {})
            schema = props.get(part) if isinstance(props.get(part), dict) else None
    return resolve(schema) if schema is not None else None


def problem_lines(
    exc: ValidationError,
    model: type[BaseModel],
    name_of: Callable[[Loc], str],
    *,
    known: Sequence[str] = (),
) -> list[str]:
    """One line per error: ``<name>=<value>: <what is wrong>; allowed: <what is allowed>``.

    ``name_of`` turns an error's location (field name, then list indexes or nested keys) into
    the name the user wrote; ``known`` are the valid names to suggest for an unknown key.
    """
    root = model.model_json_schema()
    secrets = secret_fields(model)
    lines = []
    for error in exc.errors(include_url=False):
        loc: Loc = tuple(error["loc"])
        field = str(loc[0]) if loc else ""
        name = name_of(loc) if loc else "configuration"
        message = _message(error)
        if error["type"] == "extra_forbidden":
            lines.append(f"{name}: {message}{did_you_mean(str(loc[-1]), known)}")
            continue
        line = (
            name
            if error["type"] == "missing"
            else f"{name}={show_value(error['input'], secret=field in secrets)}"
        )
        line += f": {message}"
        schema = schema_at(root, loc)
        allowed = describe_allowed(schema) if schema is not None else "text"
        if schema is not None:
            if allowed != "text":  # a validator's own message already says what text it wants
                line += f"; allowed: {allowed}"
            default = default_of(model, field) if len(loc) == 1 and field in model.model_fields else None
            default = schema.get("default") if default is None else default
            if default not in (None, ""):
                line += f" (default {show_default(default)})"
        lines.append(line)
    return lines


def toml_key(loc: Loc) -> str:
    """A TOML location as a person reads it: ``interval_s``, ``[sensors.0] interval_s``, ``types[1]``."""
    keys = list(loc)
    index = ""
    while len(keys) > 1 and isinstance(keys[-1], int):
        index = f"[{keys.pop()}]" + index
    if len(keys) == 1:
        return f"{keys[0]}{index}"
    return f"[{'.'.join(str(k) for k in keys[:-1])}] {keys[-1]}{index}"


def toml_problem(path: object, exc: Exception) -> str:
    """A TOML syntax error as one line: the file, where, and what."""
    return f"{path}: not valid TOML: {exc}"
