"""The container image's HEALTHCHECK: is the `moby` command this container runs serving?

Docker runs ``python /opt/moby/healthcheck.py`` inside the container (the slim base image has no
curl). It looks at the command line of the container's main process (``/proc/1/cmdline``; with
``docker run --init`` that is the init, whose arguments hold the same command) and asks:

* ``moby serve``: ``GET /healthz`` on the API must answer 200. That is liveness (the process
  answers); readiness, broker and InfluxDB reachable, is ``/readyz``, for a load balancer, since
  restarting the backend would not bring InfluxDB back.
* ``moby proxy``: its port must answer HTTP at all (``/ping`` is forwarded to InfluxDB, which may
  be away: a 502 still shows the proxy alive).
* any other command (``edge``, ``simulate``, ``token``, ...) serves nothing to ask: healthy while
  it runs (Docker sees it exit).

Host and port come from the settings the command itself reads (``moby.config``: the ``MOBY_*``
variables and ``MOBY_CONFIG``), so a container that moves its port stays checked. ``/healthz``
needs no API token and skips the Host check, so this works with tokens required.

Exit 0 when healthy, 1 when not, with one line saying why (``docker inspect`` shows it).
``python healthcheck.py moby serve`` checks that command instead of the main process's.
"""

from __future__ import annotations

import sys
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path

TIMEOUT_S = 5.0  # below the HEALTHCHECK's --timeout, so a hung server reads as a clear line
PROC_CMDLINE = Path("/proc/1/cmdline")


def moby_command(argv: Sequence[str]) -> tuple[str, list[str]] | None:
    """The subcommand and its arguments in a command line that runs ``moby``, or None."""
    # `/opt/moby/bin/python /opt/moby/bin/moby serve`, `docker-init -- moby serve`, `python -m moby serve`
    for i, arg in enumerate(argv):
        if Path(arg).name == "moby":
            rest = list(argv[i + 1 :])
            for j, word in enumerate(rest):
                if not word.startswith("-"):
                    return word, rest[j + 1 :]
            return None
    return None


def option(args: Sequence[str], name: str) -> str | None:
    """The value of ``--name VALUE`` or ``--name=VALUE`` (the last one given), or None."""
    value = None
    for i, arg in enumerate(args):
        if arg == name and i + 1 < len(args):
            value = args[i + 1]
        elif arg.startswith(name + "="):
            value = arg.partition("=")[2]
    return value


def local_host(host: str) -> str:
    """Where to reach a server that listens on ``host`` from inside its own container."""
    from moby.access import WILDCARDS

    if host in WILDCARDS:
        return "127.0.0.1"  # every interface, loopback included
    return f"[{host}]" if ":" in host else host


def probe(url: str, *, any_answer: bool) -> str | None:
    """None when ``url`` answers as wanted (200, or with ``any_answer`` any HTTP status),
    else why not."""
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_S) as r:
            status = int(r.status)
    except urllib.error.HTTPError as exc:
        status = exc.code
        exc.close()
    except (OSError, ValueError) as exc:  # refused, timed out, no such host, a bad URL
        reason = getattr(exc, "reason", exc)
        return f"{url}: no answer ({reason})"
    if status == 200 or any_answer:
        return None
    return f"{url}: answered {status}, not 200"


def check(argv: Sequence[str]) -> str | None:
    """None when the command in ``argv`` is healthy, else one line saying why not."""
    found = moby_command(argv)
    if found is None or found[0] not in ("serve", "proxy"):
        return None
    command, args = found
    from moby.config import ConfigError, load_settings

    try:
        settings = load_settings().settings
    except ConfigError as exc:
        return f"moby {command} cannot be checked: " + "; ".join(exc.problems)
    if command == "serve":
        url = f"http://{local_host(settings.api_host)}:{settings.api_port}/healthz"
        return probe(url, any_answer=False)
    port = option(args, "--port") or settings.proxy_port or 8087
    return probe(f"http://{local_host(settings.proxy_host)}:{port}/ping", any_answer=True)


def main(args: Sequence[str]) -> int:
    argv = list(args) if args else PROC_CMDLINE.read_bytes().decode(errors="replace").split("\0")
    problem = check(argv)
    if problem is not None:
        print(f"unhealthy: {problem}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
