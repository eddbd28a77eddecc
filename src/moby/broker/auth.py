"""Passwords: generation, and the hash format Mosquitto's ``password_file`` expects.

Mosquitto 2.0 reads ``user:$7$<iterations>$<base64 salt>$<base64 hash>``: PBKDF2-HMAC-SHA512
over a 12-byte salt, 64-byte result (what ``mosquitto_passwd`` writes, with 101 iterations).
We use more iterations; the broker takes the count from the line. The salt is 12 printable
ASCII bytes, so the very same hash also serves EMQX's PBKDF2 authenticator, which stores the
salt as a string (``moby broker export-emqx``): one hash, both brokers, no plaintext kept.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

ITERATIONS = 20_000
SALT_BYTES = 12
_SALT_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789./"  # 6 bits a byte


def generate_password() -> str:
    """~190 bits, URL-safe (it may end up in an ``mqtts://user:pass@host`` URL)."""
    return secrets.token_urlsafe(24)


def hash_password(password: str, *, iterations: int = ITERATIONS, salt: bytes | None = None) -> str:
    if salt is None:
        salt = "".join(secrets.choice(_SALT_ALPHABET) for _ in range(SALT_BYTES)).encode()
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations)
    return f"$7${iterations}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def verify_password(password: str, encoded: str) -> bool:
    try:
        iterations, salt, expected = split_hash(encoded)
    except ValueError:
        return False
    got = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations)
    return hmac.compare_digest(expected, got)


def split_hash(encoded: str) -> tuple[int, bytes, bytes]:
    """``(iterations, salt, digest)`` of a ``$7$`` hash."""
    _, kind, iterations, salt, digest = encoded.split("$")
    if kind != "7":
        raise ValueError("not a $7$ (PBKDF2-SHA512) hash")
    return int(iterations), base64.b64decode(salt), base64.b64decode(digest)


def password_file(entries: dict[str, str]) -> str:
    """The ``password_file`` text from username → encoded hash."""
    for name in entries:
        if ":" in name or "\n" in name:
            raise ValueError(f"username {name!r} cannot go into a password file")
    return "".join(f"{name}:{encoded}\n" for name, encoded in sorted(entries.items()))
