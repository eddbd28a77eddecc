"""How hints spell the command, and consoles that keep lines whole when not writing to a terminal."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import pytest

from moby import terminal


def test_hints_use_moby_when_it_is_on_path(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    script = tmp_path / "bin" / "moby"
    script.parent.mkdir()
    script.write_text("#!/bin/sh\n")
    script.chmod(0o755)
    monkeypatch.setenv("PATH", str(script.parent))
    monkeypatch.setattr(sys, "argv", [str(script), "up"])
    assert terminal.invocation() == "moby"


def test_hints_use_the_path_as_typed_when_moby_is_not_on_path(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / ".venv" / "bin").mkdir(parents=True)
    (tmp_path / ".venv" / "bin" / "moby").write_text("")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.setattr(sys, "argv", [".venv/bin/moby", "up"])
    assert terminal.invocation() == ".venv/bin/moby"
    monkeypatch.setattr(sys, "argv", ["/opt/my tools/moby", "up"])
    assert terminal.invocation() == "'/opt/my tools/moby'"


def test_hints_for_python_dash_m(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "argv", ["/x/site-packages/moby/__main__.py", "up"])
    assert terminal.invocation() == f"{sys.executable} -m moby"


def test_a_console_that_is_not_a_terminal_does_not_wrap(monkeypatch: pytest.MonkeyPatch) -> None:
    buffer = io.StringIO()
    monkeypatch.setattr(sys, "stdout", buffer)
    long_path = "/var/lib/" + "a-long-folder-name/" * 10 + "file.json"
    terminal.say(f"wrote {long_path}")
    assert buffer.getvalue() == f"wrote {long_path}\n"


def test_problems_go_to_stderr(monkeypatch: pytest.MonkeyPatch) -> None:
    out, err = io.StringIO(), io.StringIO()
    monkeypatch.setattr(sys, "stdout", out)
    monkeypatch.setattr(sys, "stderr", err)
    terminal.problem("error: [not markup] x")
    assert out.getvalue() == "" and err.getvalue() == "error: [not markup] x\n"
