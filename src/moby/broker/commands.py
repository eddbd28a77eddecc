"""``moby broker …``: create and manage a production Mosquitto setup (see docs/BROKER.md).

Secrets are never printed: the commands say *where* a key or a generated password was written
(0600, in a 0700 folder) so it can be copied to where it is needed.
"""

from __future__ import annotations

import os
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from moby.broker.acl import Role
from moby.broker.setup import USER_ROLES, BrokerConfig, BrokerDir, BrokerSetupError, Limits
from moby.config import check_state_path
from moby.terminal import err, out

broker_app = typer.Typer(
    help="A production Mosquitto: CA, TLS, users, per-sensor ACLs.", no_args_is_help=True
)

if TYPE_CHECKING:
    UserRole = Role
else:  # the choices of --role: only the roles a password user may have (a sensor gets a certificate)
    UserRole = StrEnum("UserRole", {r.name: r.value for r in USER_ROLES})

DirOption = Annotated[
    Path | None,
    typer.Option("--dir", help="the broker's folder [default: $MOBY_DATA_DIR/broker, i.e. ./var/broker]"),
]


def _dir(directory: Path | None, *, writes: bool = False, creates: bool = False) -> BrokerDir:
    """The broker folder. For a command that writes there, checked first (a ConfigError names
    --dir or MOBY_DATA_DIR and what is wrong); only ``init`` creates it when it is missing."""
    data_dir = os.environ.get("MOBY_DATA_DIR") or "./var"
    path = directory or Path(data_dir) / "broker"
    blocked = path.parent.exists() and not path.parent.is_dir()  # e.g. MOBY_DATA_DIR is a file
    if creates or (writes and (path.exists() or blocked)):
        name, value = ("--dir", path) if directory else ("MOBY_DATA_DIR", Path(data_dir))
        check_state_path(name, value, path)
    return BrokerDir(path)


def _failed(exc: BrokerSetupError) -> typer.Exit:
    err().print(f"[red]{exc}")
    return typer.Exit(1)


def _reload(bdir: BrokerDir, reload: bool) -> None:
    if reload and bdir.reload():
        out().print("[green]✓[/] the running broker reloaded its passwords, ACL and CRL (SIGHUP)")
    elif reload:
        out().print("the broker is not running; the change applies when it starts")


@broker_app.command()
def init(
    directory: DirOption = None,
    cert_port: Annotated[int, typer.Option(help="TLS listener for client certificates")] = 8883,
    password_port: Annotated[int, typer.Option(help="TLS listener for username + password")] = 8884,
    local_port: Annotated[
        int | None, typer.Option(help="plain listener on 127.0.0.1 for local tools (password still required)")
    ] = None,
    bind: Annotated[str, typer.Option(help="address the TLS listeners bind")] = "0.0.0.0",
    host: Annotated[
        list[str] | None, typer.Option("--host", help="a DNS name or IP clients dial (repeat; SANs)")
    ] = None,
    max_queued_messages: Annotated[
        int, typer.Option(help="per offline/slow client session")
    ] = Limits.max_queued_messages,
    max_queued_bytes: Annotated[int, typer.Option(help="per client session")] = Limits.max_queued_bytes,
    max_inflight_messages: Annotated[int, typer.Option()] = Limits.max_inflight_messages,
    force: Annotated[
        bool, typer.Option(help="replace an existing setup (new CA: every bundle must be re-issued)")
    ] = False,
) -> None:
    """Create the CA, the server certificate and mosquitto.conf (TLS, no anonymous access)."""
    bdir = _dir(directory, creates=True)
    config = BrokerConfig(
        cert_port=cert_port,
        password_port=password_port,
        local_port=local_port,
        bind=bind,
        hosts=host or ["localhost", "127.0.0.1"],
        limits=Limits(
            max_queued_messages=max_queued_messages,
            max_queued_bytes=max_queued_bytes,
            max_inflight_messages=max_inflight_messages,
        ),
    )
    try:
        bdir.init(config, force=force)
    except BrokerSetupError as exc:
        raise _failed(exc) from None
    out().print(f"[green]✓[/] broker set up in {bdir.dir}\n  run it:  mosquitto -c {bdir.conf}")


@broker_app.command("add-sensor")
def add_sensor(
    sensor_id: Annotated[
        str, typer.Argument(help="the sensor's id (the certificate's CN, unique per broker)")
    ],
    factory: Annotated[str, typer.Option(help="the factory whose topics it may use")],
    password: Annotated[
        bool, typer.Option(help="also issue a password (devices without TLS client certs)")
    ] = False,
    directory: DirOption = None,
    reload: Annotated[bool, typer.Option(help="SIGHUP the running broker")] = True,
) -> None:
    """Issue a client certificate (and optionally a password) and write the device bundle."""
    bdir = _dir(directory, writes=True)
    try:
        bundle = bdir.add_sensor(sensor_id, factory, password=password)
    except BrokerSetupError as exc:
        raise _failed(exc) from None
    out().print(
        f"[green]✓[/] sensor {sensor_id} (factory {factory}): bundle in {bundle}\n"
        f"  copy it to the device, then:  moby edge --config {bundle / 'agent.toml'}"
    )
    _reload(bdir, reload)


@broker_app.command("add-user")
def add_user(
    name: Annotated[str, typer.Argument(help="the username")],
    role: Annotated[UserRole, typer.Option(help="what the user may do (a sensor: use add-sensor)")],
    factory: Annotated[str | None, typer.Option(help="gateway only: the factory it speaks for")] = None,
    connections: Annotated[
        int,
        typer.Option(
            help="gateway only: connections it holds at once, as NAME, NAME.1, … (one password); "
            "every other client needs a user of its own"
        ),
    ] = 1,
    directory: DirOption = None,
    reload: Annotated[bool, typer.Option(help="SIGHUP the running broker")] = True,
) -> None:
    """Add a password user; the generated password is written to DIR/users/NAME.password (0600).

    The username is also the MQTT client id (the broker enforces it), so every backend process
    needs a user of its own.
    """
    bdir = _dir(directory, writes=True)
    try:
        path = bdir.add_user(name, Role(role.value), factory=factory, connections=connections)
    except BrokerSetupError as exc:
        raise _failed(exc) from None
    out().print(f"[green]✓[/] user {name} ({role.value}): password in {path}")
    if connections > 1:
        names = bdir.load().identities(name)
        shown = ", ".join(names) if len(names) <= 4 else f"{names[0]}, {names[1]} … {names[-1]}"
        out().print(f"  connects as {shown} (one connection each, one password)")
    _reload(bdir, reload)


def _remove(name: str, directory: Path | None, reload: bool) -> None:
    bdir = _dir(directory, writes=True)
    try:
        bdir.remove(name)
    except BrokerSetupError as exc:
        raise _failed(exc) from None
    out().print(f"[green]✓[/] {name} removed: certificate revoked (CRL), password and ACL entries gone")
    _reload(bdir, reload)


@broker_app.command("remove-sensor")
def remove_sensor(
    sensor_id: str,
    directory: DirOption = None,
    reload: Annotated[bool, typer.Option(help="SIGHUP the running broker")] = True,
) -> None:
    """Revoke a sensor's certificate and remove its password and ACL entries."""
    _remove(sensor_id, directory, reload)


@broker_app.command("remove-user")
def remove_user(
    name: str,
    directory: DirOption = None,
    reload: Annotated[bool, typer.Option(help="SIGHUP the running broker")] = True,
) -> None:
    """Remove a user's password and ACL entries."""
    _remove(name, directory, reload)


@broker_app.command("list")
def list_principals(directory: DirOption = None) -> None:
    """Sensors and users with their roles (no secrets)."""
    try:
        registry = _dir(directory).load()
    except BrokerSetupError as exc:
        raise _failed(exc) from None
    for name, entry in sorted(registry.principals.items()):
        how = "+".join(
            w for w, on in (("cert", entry.get("serial")), ("password", entry.get("password_hash"))) if on
        )
        connections = len(registry.identities(name))
        if connections > 1:
            how += f"\t{connections} connections"
        print(f"{name}\t{entry['role']}\t{entry.get('factory') or '-'}\t{how}")


@broker_app.command()
def render(directory: DirOption = None) -> None:
    """Rewrite mosquitto.conf, passwd, acl and the CRL from the registry (after upgrading MOBY).

    Listener settings (such as binding client ids to users) take effect when the broker restarts.
    """
    bdir = _dir(directory, writes=True)
    try:
        bdir.render()
    except BrokerSetupError as exc:
        raise _failed(exc) from None
    out().print(f"[green]✓[/] {bdir.conf} and the files it names rewritten; restart the broker to apply")


@broker_app.command()
def reload(directory: DirOption = None) -> None:
    """Make the running broker re-read passwords, ACL and CRL (SIGHUP)."""
    if not _dir(directory).reload():
        err().print("[red]no running broker found (pid file)")
        raise typer.Exit(1)


@broker_app.command("export-emqx")
def export_emqx(
    folder: Annotated[
        Path, typer.Argument(metavar="OUT", help="folder to mount at /opt/emqx/etc/moby on every EMQX node")
    ],
    directory: DirOption = None,
) -> None:
    """Write the ACL, users and TLS files deploy/emqx/emqx.conf expects, from this setup."""
    from moby.broker.emqx import export

    for path in export(_dir(directory), folder):
        out().print(f"wrote {path}", markup=False, highlight=False)
