"""The same users, ACL rules and TLS material for the EMQX cluster in ``deploy/emqx/``.

``moby broker export-emqx --dir DIR OUT`` writes what ``deploy/emqx/emqx.conf`` refers to under
``/opt/emqx/etc/moby/`` (mount OUT there on every node):

    acl.conf          the file authorizer, rendered from the same rules as Mosquitto's acl_file
    users.csv   0600  the built-in database's bootstrap (user_id,password_hash,salt,is_superuser),
                      the very PBKDF2-SHA512 hashes of the Mosquitto password file, one row per
                      connection identity (emqx.conf makes the username the client id, as
                      Mosquitto's ``use_username_as_clientid``)
    ca.crt, server.crt, server.key (0600)

The files' names and the PBKDF2 parameters are constants here that the deploy test checks
against emqx.conf, so the two cannot drift apart silently.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from moby.broker import acl, auth, pki
from moby.broker.setup import BrokerDir

MOUNT = "/opt/emqx/etc/moby"
FILES = ("acl.conf", "users.csv", "ca.crt", "server.crt", "server.key")
PBKDF2 = {"name": "pbkdf2", "mac_fun": "sha512", "iterations": auth.ITERATIONS, "dk_length": 64}


def users_csv(hashes: dict[str, str]) -> str:
    lines = ["user_id,password_hash,salt,is_superuser"]
    for name, encoded in sorted(hashes.items()):
        iterations, salt, digest = auth.split_hash(encoded)
        if iterations != auth.ITERATIONS:
            raise ValueError(f"{name}: hashed with {iterations} iterations, emqx.conf says {auth.ITERATIONS}")
        lines.append(f"{name},{digest.hex()},{salt.decode('ascii')},false")
    return "\n".join(lines) + "\n"


def export(bdir: BrokerDir, out: Path) -> list[Path]:
    registry = bdir.load()
    out.mkdir(parents=True, exist_ok=True)
    out.chmod(0o700)
    # every connection identity (a gateway's NAME, NAME.1, …) is a user of its own, as in Mosquitto
    principals = registry.connection_principals()
    pki.write_public(out / "acl.conf", acl.render_emqx(acl.all_rules(principals)).encode())
    pki.write_secret(out / "users.csv", users_csv(registry.password_hashes()).encode())
    shutil.copyfile(bdir.ca_cert, out / "ca.crt")
    shutil.copyfile(bdir.dir / "server" / "server.crt", out / "server.crt")
    pki.write_secret(out / "server.key", (bdir.dir / "server" / "server.key").read_bytes())
    return [out / name for name in FILES]
