"""The API token store and `moby token`: hashed at rest, shown once, revocable, safe to share."""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import re
import stat
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from typer.testing import CliRunner

from moby.cli import app
from moby.tokens import FILE_NAME, Role, TokenStore, TokenStoreError, split_token

TOKEN_RE = re.compile(r"^moby_[0-9a-f]{16}_[A-Za-z0-9_-]{43}$")


@pytest.fixture
def store(tmp_path: Path) -> TokenStore:
    return TokenStore(tmp_path / "state" / FILE_NAME)


def test_a_token_is_256_random_bits_stored_only_as_its_sha256(store: TokenStore) -> None:
    record, token = store.create(Role.VIEWER, "grafana")
    assert TOKEN_RE.match(token)
    token_id, secret = token.split("_", 2)[1:]
    assert record.id == token_id and record.name == "grafana" and record.role is Role.VIEWER
    text = store.path.read_text()
    assert secret not in text and token not in text
    assert hashlib.sha256(secret.encode()).hexdigest() in text
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600
    # The file is the documented shape: version, and per token id, name, role, digest, dates.
    [entry] = json.loads(text)["tokens"]
    assert set(entry) == {"id", "name", "role", "sha256", "created", "revoked"}
    assert entry["role"] == "viewer" and entry["revoked"] is None


def test_verify_accepts_the_token_and_nothing_near_it(store: TokenStore) -> None:
    record, token = store.create(Role.ADMIN)
    assert store.verify(token) == record
    assert record.name == "admin"  # the role, when no name is given
    other, _ = store.create(Role.VIEWER)
    near = [
        token[:-1] + ("A" if token[-1] != "A" else "B"),  # another secret, same id
        token.replace(record.id, other.id),  # the secret under another token's id
        token + "x",
        token[:-1],
        token.upper(),
        " " + token,
        "",
        "moby_",
        record.id,
    ]
    for candidate in near:
        assert store.verify(candidate) is None, candidate


@given(st.text(max_size=200))
def test_any_string_is_refused_without_an_error(text: str) -> None:
    assert split_token(text) is None or TOKEN_RE.match(text)


def test_revoked_tokens_are_refused_by_a_server_reading_the_same_file(store: TokenStore) -> None:
    record, token = store.create(Role.OPERATOR, "ops")
    server = TokenStore(store.path)  # another process's view: it re-reads on change
    assert server.verify(token) is not None
    revoked = store.revoke(record.id)
    assert revoked.revoked is not None and not revoked.active
    assert server.verify(token) is None
    assert store.revoke(record.id).revoked == revoked.revoked  # revoking twice changes nothing
    assert [r.id for r in store.records()] == [record.id]  # kept in the list, marked
    with pytest.raises(KeyError):
        store.revoke("0123456789abcdef")


def test_no_file_means_no_tokens(store: TokenStore) -> None:
    assert store.records() == [] and store.active_count() == 0 and store.error is None
    assert store.verify("moby_0123456789abcdef_" + "A" * 43) is None


@pytest.mark.parametrize(
    "content",
    [b"{not json", b"[]", b'{"version": 2, "tokens": []}', b'{"version": 1, "tokens": [{"id": "x"}]}'],
)
def test_a_damaged_file_verifies_nothing_and_says_why(store: TokenStore, content: bytes) -> None:
    _, token = store.create(Role.VIEWER)
    assert store.verify(token) is not None
    store.path.write_bytes(content)
    assert store.verify(token) is None  # fails closed
    assert store.error and str(store.path) in store.error
    with pytest.raises(TokenStoreError):
        store.records()
    with pytest.raises(TokenStoreError):
        store.create(Role.VIEWER)  # never overwrites what it cannot read


def test_roles_are_ordered_and_parsed() -> None:
    assert Role.VIEWER < Role.OPERATOR < Role.ADMIN
    assert Role.parse("Viewer") is Role.VIEWER and Role.parse("admin") is Role.ADMIN
    with pytest.raises(ValueError, match="viewer, operator or admin"):
        Role.parse("root")


@pytest.mark.parametrize("name", ["", "-x", "a b", "x" * 65, "a/b", "ünï"])
def test_bad_names_are_refused(store: TokenStore, name: str) -> None:
    with pytest.raises(ValueError, match="not allowed"):
        store.create(Role.VIEWER, name)
    assert not store.path.exists()


def _create_many(path: str, n: int) -> None:
    store = TokenStore(Path(path))
    for _ in range(n):
        store.create(Role.VIEWER)


def test_commands_run_at_the_same_time_lose_nothing(store: TokenStore) -> None:
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_create_many, args=(str(store.path), 10)) for _ in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    records = store.records()
    assert len(records) == 40 and len({r.id for r in records}) == 40


# --- moby token ---------------------------------------------------------------------------------------


def run(data_dir: Path, *args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, ["token", *args], env={"MOBY_DATA_DIR": str(data_dir)})
    return result.exit_code, result.stdout, result.stderr


def test_the_token_commands(tmp_path: Path) -> None:
    code, out, err = run(tmp_path, "create", "--role", "viewer", "--name", "grafana")
    assert code == 0, err
    token = out.strip()
    assert out == token + "\n" and TOKEN_RE.match(token)  # stdout holds the token alone
    token_id = token.split("_")[1]
    assert "shown only this once" in err and token_id in err and token not in err
    assert TokenStore(tmp_path / FILE_NAME).verify(token) is not None

    code, out, err = run(tmp_path, "list")
    assert code == 0 and token_id in out and "grafana" in out and "viewer" in out
    assert token.split("_", 2)[2] not in out + err  # never the secret

    code, _, err = run(tmp_path, "revoke", token_id)
    assert code == 0 and "revoked" in err
    assert TokenStore(tmp_path / FILE_NAME).verify(token) is None
    code, out, _ = run(tmp_path, "list")
    assert re.search(rf"{token_id}.*\d{{4}}-\d\d-\d\dT.*\d{{4}}-\d\d-\d\dT", out)  # created and revoked


def test_the_token_commands_refuse_with_one_line(tmp_path: Path) -> None:
    code, out, err = run(tmp_path, "create", "--role", "root")
    assert code == 2 and out == "" and "viewer, operator or admin" in err and "Traceback" not in err
    code, out, err = run(tmp_path, "create", "--role", "admin", "--name", "no spaces")
    assert code == 2 and out == "" and "not allowed" in err
    code, _, err = run(tmp_path, "revoke", "0123456789abcdef")
    assert code == 1 and "no token with id" in err
    assert not (tmp_path / FILE_NAME).exists()
    code, _, err = run(tmp_path, "list")
    assert code == 0 and "moby token create" in err


def test_the_token_file_can_be_named(tmp_path: Path) -> None:
    shared = tmp_path / "shared" / "tokens.json"
    result = CliRunner().invoke(
        app,
        ["token", "create", "--role", "admin"],
        env={"MOBY_DATA_DIR": str(tmp_path / "data"), "MOBY_API_TOKENS_FILE": str(shared)},
    )
    assert result.exit_code == 0
    assert TokenStore(shared).verify(result.stdout.strip()) is not None
    assert not (tmp_path / "data" / FILE_NAME).exists()
