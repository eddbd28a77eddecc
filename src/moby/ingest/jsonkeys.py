"""Repeated keys in a JSON object: refused, because a reader that keeps the first and one that
keeps the last would see two different messages (``"sensor_id": "other", "sensor_id": "me"``).

The JSON parsers on the hot path (pydantic-core's, orjson) keep the last silently. Finding
repeats exactly needs a parse that looks at every key (:func:`repeated_key`, Python's ``json``
with an ``object_pairs_hook``: ~10x the cost of validation), so it runs only when a cheap count
cannot rule them out (:func:`may_repeat_keys`): every key of a JSON text is followed by its own
``:``; when the text has no more colons than the distinct keys its validated form holds, no key
can have been given twice.
"""

from __future__ import annotations

import json
import re
from typing import Any, Final

# A key's closing quote followed by whitespace and the colon: the count below would miss it.
_SPACED_KEY_END: Final = re.compile(rb'"[ \t\r\n]+:')


def may_repeat_keys(payload: bytes, distinct_keys: int) -> bool:
    """False when ``payload`` provably repeats no key, given a lower bound of the distinct keys
    in its objects (summed over all of them); True when only :func:`repeated_key` can tell.

    Each key written has its own ``:`` and a colon appears nowhere else but inside strings, so
    the text's colons are at least the keys written, which are at least the distinct keys: if
    the colons equal a lower bound of those, all three are equal. Strings with colons in them (an
    RFC 3339 ``ts``) spoil the first count; then each key's closing ``":`` is counted instead,
    which works when no key has whitespace before its colon.
    """
    if payload.count(b":") == distinct_keys:
        return False
    return payload.count(b'":') != distinct_keys or _SPACED_KEY_END.search(payload) is not None


class _Repeated(Exception):
    def __init__(self, key: str) -> None:
        self.key = key


def _no_repeats(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _Repeated(key)
            seen.add(key)
    return out


def repeated_key(payload: bytes) -> str | None:
    """The first key given twice in one object of the JSON text (at any depth), or None.

    Raises ``ValueError`` when Python's parser cannot read the text at all.
    """
    try:
        json.loads(payload, object_pairs_hook=_no_repeats)
    except _Repeated as exc:
        return exc.key
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None
    return None
