"""What the commands print: results on stdout, problems on stderr, whole lines when piped.

Rich wraps at 80 columns when it is not writing to a terminal, which splits paths and URLs in
a log file or a pipe; there, lines are left whole. The consoles are made when printing (not at
import), so they follow the streams of the moment (pytest's capture, typer's test runner).
"""

from __future__ import annotations

import os
import shlex
import shutil
import sys
from pathlib import Path

from rich.console import Console


def _console(stderr: bool) -> Console:
    console = Console(stderr=stderr)
    if console.is_terminal:
        return console
    # soft_wrap: print() leaves lines whole; the width only matters to tables and rules.
    return Console(stderr=stderr, soft_wrap=True, width=1000)


def out() -> Console:
    """Results and progress, for the user or the next program in a pipe."""
    return _console(stderr=False)


def err() -> Console:
    """Problems and warnings."""
    return _console(stderr=True)


def say(text: str) -> None:
    """A plain line on stdout (no markup: paths may hold brackets)."""
    out().print(text, markup=False, highlight=False)


def problem(text: str) -> None:
    """A plain line on stderr."""
    err().print(text, markup=False, highlight=False)


def invocation() -> str:
    """How the user can run ``moby`` again from this shell: ``moby``, ``.venv/bin/moby``, …

    Hints that say ``moby`` are wrong when only ``.venv/bin/moby`` exists (not on PATH).
    """
    argv0 = sys.argv[0] if sys.argv else ""
    name = Path(argv0).name
    if name == "__main__.py" or not argv0:  # python -m moby
        return f"{shlex.quote(sys.executable)} -m moby"
    on_path = shutil.which(name)
    if on_path and Path(argv0).exists() and os.path.samefile(on_path, argv0):
        return name
    return shlex.quote(argv0)
