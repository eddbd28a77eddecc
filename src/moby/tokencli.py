"""``moby token create | list | revoke``: the API tokens of the HTTP API and the InfluxQL proxy.

The token file is ``MOBY_API_TOKENS_FILE``, else ``MOBY_DATA_DIR/api-tokens.json`` (the one
``moby serve`` with the same environment reads). ``create`` prints the token on stdout and
nothing else there, so it can be captured (``TOKEN=$(moby token create --role viewer)``); it
is shown once and only its hash is kept.
"""

from __future__ import annotations

from typing import Annotated

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

from moby.tokens import Role, TokenStore, TokenStoreError, store_path

token_app = typer.Typer(
    help="API tokens for the HTTP API and the InfluxQL proxy (viewer < operator < admin).",
    no_args_is_help=True,
)
err = Console(stderr=True)


def _store() -> TokenStore:
    from moby.config import Settings

    try:
        settings = Settings()
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "configuration"
        err.print(f"MOBY_{where.upper()}: {first['msg']}", style="red", markup=False, soft_wrap=True)
        raise typer.Exit(2) from None
    return TokenStore(store_path(settings.data_dir, settings.api_tokens_file))


def _fail(message: str, code: int = 1) -> typer.Exit:
    err.print(message, style="red", markup=False, highlight=False, soft_wrap=True)
    return typer.Exit(code)


@token_app.command("create")
def create(
    role: Annotated[
        str, typer.Option(help="viewer (read data), operator (also commands), admin (also dead letters)")
    ],
    name: Annotated[
        str | None, typer.Option(help="what the token is for, e.g. grafana (default: the role)")
    ] = None,
) -> None:
    """Create a token and print it on stdout, once (only its hash is kept)."""
    store = _store()
    try:
        record, token = store.create(Role.parse(role), name)
    except ValueError as exc:
        raise _fail(str(exc), 2) from None
    except (TokenStoreError, OSError) as exc:
        raise _fail(f"cannot create a token in {store.path}: {exc}") from None
    print(token)
    err.print(
        f"created {record.role.label} token {record.id} ({record.name}) in {store.path}: "
        "it is shown only this once; revoke it with `moby token revoke " + record.id + "`",
        highlight=False,
        markup=False,
        soft_wrap=True,
    )


@token_app.command("list")
def list_tokens() -> None:
    """Every token: id, name, role, when created and revoked (never a secret)."""
    store = _store()
    try:
        records = store.records()
    except TokenStoreError as exc:
        raise _fail(str(exc)) from None
    table = Table("id", "name", "role", "created", "revoked")
    for r in records:
        table.add_row(r.id, r.name, r.role.label, r.created, r.revoked or "")
    Console().print(table)
    if not records:
        err.print(
            f"no tokens in {store.path}; create one with `moby token create --role viewer`", soft_wrap=True
        )


@token_app.command("revoke")
def revoke(
    token_id: Annotated[str, typer.Argument(metavar="ID", help="the id `moby token list` shows")],
) -> None:
    """Revoke a token: refused from the next request on (it stays in the list, marked)."""
    store = _store()
    try:
        record = store.revoke(token_id.strip().lower())
    except KeyError:
        raise _fail(f"no token with id {token_id!r} in {store.path} (`moby token list` shows them)") from None
    except (TokenStoreError, OSError) as exc:
        raise _fail(f"cannot revoke in {store.path}: {exc}") from None
    err.print(
        f"token {record.id} ({record.name}, {record.role.label}) revoked at {record.revoked}", soft_wrap=True
    )
