"""API tokens of the HTTP API and the InfluxQL proxy: created, listed, revoked, verified.

A token is ``moby_<id>_<secret>``: ``id`` is 16 hex characters (public: it names the token in
``moby token list`` and revocation), ``secret`` is 32 random bytes in base64url (256 bits).
Only ``sha256(secret)`` is stored, in a JSON file (0600) under the data directory.

Why SHA-256 and not bcrypt/scrypt/Argon2: slow hashes exist to make guessing a *low-entropy*
password expensive after the hash leaks. A 256-bit random secret cannot be guessed whatever the
hash costs, so a slow hash would add nothing but latency to every request (Grafana sends many,
and a deliberately slow check per request would hand anyone a cheap way to burn our CPU). The
token is looked up by its id and its digest compared in constant time (:func:`hmac.compare_digest`).

The file is rewritten whole (a temporary file created 0600, fsync'd, then renamed) under a lock,
so ``moby token`` commands run at the same time never lose each other's changes, and a reader
(the server) sees the old file or the new one, never half of one. The server re-reads it when it
changes (a ``stat`` per check), so a revocation takes effect on the next request.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import fcntl
import hashlib
import hmac
import json
import os
import re
import secrets
from collections.abc import Iterator
from dataclasses import asdict, dataclass, replace
from enum import IntEnum
from pathlib import Path
from typing import Any, Final

PREFIX: Final = "moby_"
FILE_NAME: Final = "api-tokens.json"
NAME_PATTERN: Final = r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$"
_ID_RE: Final = re.compile(r"^[0-9a-f]{16}$")
_TOKEN_RE: Final = re.compile(r"^moby_([0-9a-f]{16})_([A-Za-z0-9_-]{43})$")
MAX_TOKENS: Final = 10_000  # a bound on the file (and on what the server holds in memory)


class Role(IntEnum):
    """Ordered: a role may do everything the ones below it may."""

    VIEWER = 1
    OPERATOR = 2
    ADMIN = 3

    @property
    def label(self) -> str:
        return self.name.lower()

    @classmethod
    def parse(cls, text: str) -> Role:
        try:
            return cls[text.upper()]
        except KeyError:
            raise ValueError(f"unknown role {text!r}: choose viewer, operator or admin") from None


class TokenStoreError(Exception):
    """The token file cannot be used (unreadable, malformed): explained, not a crash."""


@dataclass(frozen=True)
class TokenRecord:
    id: str
    name: str
    role: Role
    sha256: str
    created: str
    revoked: str | None = None

    @property
    def active(self) -> bool:
        return self.revoked is None

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["role"] = self.role.label
        return data

    @classmethod
    def from_json(cls, data: Any) -> TokenRecord:
        if not isinstance(data, dict):
            raise ValueError("a token entry is not an object")
        record = cls(
            id=str(data["id"]),
            name=str(data["name"]),
            role=Role.parse(str(data["role"])),
            sha256=str(data["sha256"]),
            created=str(data["created"]),
            revoked=None if data.get("revoked") is None else str(data["revoked"]),
        )
        if not _ID_RE.match(record.id) or not re.fullmatch(r"[0-9a-f]{64}", record.sha256):
            raise ValueError(f"token entry {record.id!r} has a malformed id or digest")
        return record


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def split_token(token: str) -> tuple[str, str] | None:
    """(id, secret) of a well-formed token; None for anything else (never raises)."""
    if len(token) > 100:
        return None
    match = _TOKEN_RE.match(token)
    return (match[1], match[2]) if match else None


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


class TokenStore:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._seen: tuple[int, int, int] | None = None  # (inode, mtime_ns, size) of what is loaded
        self._by_id: dict[str, TokenRecord] = {}
        self._error: str | None = None

    # --- reading (the server) --------------------------------------------------------------
    def verify(self, token: str) -> TokenRecord | None:
        """The active record of ``token``; None when it is malformed, unknown or revoked.

        An unreadable or malformed file verifies nothing (fails closed): see :attr:`error`.
        """
        parts = split_token(token)
        self.refresh()
        if parts is None:
            return None
        record = self._by_id.get(parts[0])
        # Compared even for an unknown id, so the answer takes as long either way.
        expected = record.sha256 if record else "0" * 64
        ok = hmac.compare_digest(digest(parts[1]).encode(), expected.encode())
        return record if ok and record is not None and record.active else None

    @property
    def error(self) -> str | None:
        """Why the file could not be used, or None."""
        return self._error

    def refresh(self) -> None:
        """Re-read the file if it changed since the last read."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            self._seen, self._by_id, self._error = None, {}, None
            return
        except OSError as exc:
            self._seen, self._by_id, self._error = None, {}, f"cannot read {self.path}: {exc.strerror}"
            return
        seen = (st.st_ino, st.st_mtime_ns, st.st_size)
        if seen == self._seen:
            return
        try:
            records = self._read()
        except TokenStoreError as exc:
            self._seen, self._by_id, self._error = seen, {}, str(exc)
            return
        self._seen, self._by_id, self._error = seen, {r.id: r for r in records}, None

    def active_count(self) -> int:
        self.refresh()
        return sum(r.active for r in self._by_id.values())

    def records(self) -> list[TokenRecord]:
        """Every token, revoked ones included, as the file holds them now."""
        return self._read()

    def _read(self) -> list[TokenRecord]:
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise TokenStoreError(f"cannot read {self.path}: {exc.strerror}") from None
        if len(raw) > MAX_TOKENS * 1024:
            raise TokenStoreError(f"{self.path} is larger than {MAX_TOKENS} tokens can be")
        try:
            doc = json.loads(raw)
            if not isinstance(doc, dict) or doc.get("version") != 1 or not isinstance(doc["tokens"], list):
                raise ValueError("not a version 1 token file")
            return [TokenRecord.from_json(item) for item in doc["tokens"]]
        except (ValueError, KeyError, TypeError) as exc:
            raise TokenStoreError(f"{self.path} is not a valid token file: {exc}") from None

    # --- changing (``moby token``) ---------------------------------------------------------------
    def create(self, role: Role, name: str | None = None) -> tuple[TokenRecord, str]:
        """A new token: its record, and the token itself (shown once, never stored)."""
        if name is not None and not re.match(NAME_PATTERN, name):
            raise ValueError(
                f"token name {name!r} is not allowed: 1-64 of A-Z a-z 0-9 _ . @ -, starting with a letter "
                "or digit"
            )
        with self._locked() as records:
            if len(records) >= MAX_TOKENS:
                raise TokenStoreError(f"{self.path} already holds {MAX_TOKENS} tokens: revoke and prune some")
            token_id = secrets.token_hex(8)
            while any(r.id == token_id for r in records):  # pragma: no cover - 64 random bits
                token_id = secrets.token_hex(8)
            secret = base64.urlsafe_b64encode(secrets.token_bytes(32)).decode().rstrip("=")
            record = TokenRecord(token_id, name or role.label, role, digest(secret), _now())
            records.append(record)
        return record, f"{PREFIX}{token_id}_{secret}"

    def revoke(self, token_id: str) -> TokenRecord:
        """Mark a token revoked (kept in the list, with when). KeyError when there is none."""
        with self._locked() as records:
            for index, record in enumerate(records):
                if record.id == token_id:
                    if record.active:
                        records[index] = replace(record, revoked=_now())
                    return records[index]
            raise KeyError(token_id)  # inside: nothing is written

    @contextlib.contextmanager
    def _locked(self) -> Iterator[list[TokenRecord]]:
        """The records, to change in place; written back atomically on leaving."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        lock_fd = os.open(self.path.with_name(self.path.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX)
            records = self._read()
            yield records
            self._write(records)
        finally:
            os.close(lock_fd)

    def _write(self, records: list[TokenRecord]) -> None:
        data = json.dumps({"version": 1, "tokens": [r.to_json() for r in records]}, indent=1).encode()
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.unlink(missing_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
        dir_fd = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def store_path(data_dir: Path, tokens_file: Path | None = None) -> Path:
    """Where the tokens live: ``MOBY_API_TOKENS_FILE``, else ``MOBY_DATA_DIR/api-tokens.json``."""
    return tokens_file if tokens_file is not None else data_dir / FILE_NAME
