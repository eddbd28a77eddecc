"""`moby up` makes a viewer token for its hints when its backend will require one, and only then."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from moby.access import AccessConfigError
from moby.tokens import TokenStore
from moby.up import viewer_token


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("MOBY_API_AUTH", "MOBY_API_HOST", "MOBY_API_TOKENS_FILE", "MOBY_CONFIG"):
        monkeypatch.delenv(name, raising=False)


def test_an_open_loopback_backend_needs_none(tmp_path: Path) -> None:
    assert viewer_token(tmp_path, tmp_path / "backend") is None
    assert not (tmp_path / "backend").exists()


def test_a_required_token_is_made_once_kept_0600_and_renewed_when_revoked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MOBY_API_AUTH", "required")
    path = viewer_token(tmp_path, tmp_path / "backend")
    assert path is not None and stat.S_IMODE(path.stat().st_mode) == 0o600
    token = path.read_text().strip()
    store = TokenStore(tmp_path / "backend" / "api-tokens.json")
    record = store.verify(token)
    assert record is not None and record.role.label == "viewer" and record.name == "moby-up"
    # The next `moby up` reuses it (no pile of tokens) ...
    assert viewer_token(tmp_path, tmp_path / "backend") == path and path.read_text().strip() == token
    assert len(store.records()) == 1
    # ... unless it was revoked.
    store.revoke(record.id)
    assert viewer_token(tmp_path, tmp_path / "backend") == path
    assert path.read_text().strip() != token and store.verify(path.read_text().strip()) is not None


def test_beyond_loopback_too(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MOBY_API_HOST", "0.0.0.0")
    assert viewer_token(tmp_path, tmp_path / "backend") is not None
    monkeypatch.setenv("MOBY_API_AUTH", "off")
    with pytest.raises(AccessConfigError, match="MOBY_API_AUTH=off"):
        viewer_token(tmp_path, tmp_path / "backend")
