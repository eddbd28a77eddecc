"""The image's health check (deploy/image/healthcheck.py): which command it asks, where, and
what counts as an answer, against small HTTP servers on loopback."""

from __future__ import annotations

import importlib.util
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import ModuleType

import pytest

from moby.procs import free_port

SCRIPT = Path(__file__).resolve().parents[2] / "deploy" / "image" / "healthcheck.py"


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("moby_image_healthcheck", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


hc = _load()


class Server:
    """Answers every GET with ``status`` and records the paths asked."""

    def __init__(self, status: int) -> None:
        self.status = status
        self.paths: list[str] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.paths.append(self.path)
                self.send_response(outer.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> Server:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    for name in ("MOBY_API_HOST", "MOBY_API_PORT", "MOBY_PROXY_HOST", "MOBY_PROXY_PORT", "MOBY_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    yield monkeypatch


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["/opt/moby/bin/python", "/opt/moby/bin/moby", "serve"], ("serve", [])),
        (["/sbin/docker-init", "--", "moby", "proxy", "--port", "9000"], ("proxy", ["--port", "9000"])),
        (
            ["python", "-m", "moby", "edge", "--config", "/etc/moby/agent.toml"],
            ("edge", ["--config", "/etc/moby/agent.toml"]),
        ),
        (["/opt/moby/bin/moby", "--help"], None),
        (["/opt/moby/bin/moby"], None),
        (["/bin/sh", "-c", "sleep 1"], None),
        ([], None),
    ],
)
def test_the_moby_command_in_a_command_line(argv: list[str], expected: object) -> None:
    assert hc.moby_command(argv) == expected


def test_options_as_typer_reads_them() -> None:
    assert hc.option(["--port", "9000"], "--port") == "9000"
    assert hc.option(["--port=9001"], "--port") == "9001"
    assert hc.option(["--port", "1", "--port=2"], "--port") == "2"  # the last one wins
    assert hc.option(["--port"], "--port") is None
    assert hc.option(["--portal", "3"], "--port") is None


def test_a_wildcard_listener_is_asked_on_loopback() -> None:
    for wildcard in ("0.0.0.0", "::", "", "*"):
        assert hc.local_host(wildcard) == "127.0.0.1"
    assert hc.local_host("10.0.0.5") == "10.0.0.5"
    assert hc.local_host("::1") == "[::1]"


def test_serve_is_healthy_only_with_a_200_from_healthz(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("MOBY_API_HOST", "0.0.0.0")  # as in the image
    for status, healthy in ((200, True), (503, False), (401, False)):
        with Server(status) as server:
            clean_env.setenv("MOBY_API_PORT", str(server.port))
            problem = hc.check(["/opt/moby/bin/moby", "serve"])
        assert server.paths == ["/healthz"]
        assert (problem is None) == healthy, problem
        if not healthy:
            assert problem == f"http://127.0.0.1:{server.port}/healthz: answered {status}, not 200"


def test_serve_that_does_not_answer_is_unhealthy(clean_env: pytest.MonkeyPatch) -> None:
    port = free_port()
    clean_env.setenv("MOBY_API_PORT", str(port))
    problem = hc.check(["moby", "serve"])
    assert problem is not None and problem.startswith(f"http://127.0.0.1:{port}/healthz: no answer (")


def test_a_proxy_that_answers_at_all_is_alive(clean_env: pytest.MonkeyPatch) -> None:
    with Server(502) as server:  # InfluxDB away: /ping says so, the proxy itself is alive
        clean_env.setenv("MOBY_PROXY_PORT", str(server.port))
        assert hc.check(["moby", "proxy"]) is None
    with Server(204) as server:
        clean_env.setenv("MOBY_PROXY_PORT", "1")  # the command line's --port wins
        assert hc.check(["moby", "proxy", "--port", str(server.port)]) is None
    assert server.paths == ["/ping"]
    problem = hc.check(["moby", "proxy", "--port", str(free_port())])
    assert problem is not None and "/ping: no answer" in problem


def test_commands_that_serve_nothing_are_healthy_while_they_run(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("MOBY_API_PORT", "not a port")  # never read for these
    for command in (["edge", "--config", "a.toml"], ["simulate"], ["token", "list"], ["--help"]):
        assert hc.check(["moby", *command]) is None


def test_a_setting_it_cannot_read_is_one_line(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("MOBY_API_PORT", "eighty")
    problem = hc.check(["moby", "serve"])
    assert problem is not None and problem.startswith("moby serve cannot be checked: MOBY_API_PORT=")
    assert "\n" not in problem


def test_main_prints_one_line_and_exits_1(
    clean_env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    clean_env.setenv("MOBY_API_PORT", str(free_port()))
    assert hc.main(["moby", "serve"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("unhealthy: ") and err.count("\n") == 1
    assert hc.main(["moby", "edge"]) == 0


def test_main_reads_the_main_process_by_default(tmp_path: Path, clean_env: pytest.MonkeyPatch) -> None:
    cmdline = tmp_path / "cmdline"
    cmdline.write_bytes(b"/opt/moby/bin/python\0/opt/moby/bin/moby\0serve\0")
    clean_env.setattr(hc, "PROC_CMDLINE", cmdline)
    with Server(200) as server:
        clean_env.setenv("MOBY_API_PORT", str(server.port))
        assert hc.main([]) == 0
    assert server.paths == ["/healthz"]
