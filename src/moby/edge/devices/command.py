"""``driver = "command"``: a program that prints readings — a vendor tool, a script.

``mode = "interval"`` runs the program every ``interval_s`` (at most ``timeout_s``, then it is
killed) and takes each line it prints as a reading; ``mode = "stream"`` starts it once and takes
each line as it comes, restarting it (with backoff) when it exits. Lines are parsed as for the
serial driver (``key=value``, JSON, regex; only the declared ``values``). The program is run
directly, without a shell, with the agent's environment; what it prints on stderr is kept (its
last line) for the log.

Faults: ``command_start`` (it cannot be run), ``command_exit`` (it exited with a non-zero
status, or a stream ended), ``command_timeout``, ``command_parse``, ``command_overlong``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Annotated, Literal

from pydantic import Field

from moby.edge.devices.base import DeviceFault, DeviceRefused, DeviceStatus, Sample, ticks
from moby.edge.devices.sensor import Seconds
from moby.edge.devices.serial import LineSensorMixin, parse_line, read_lines
from moby.net import Backoff

RESTART_MAX_S = 30.0
STDERR_TAIL = 200  # characters of the program's last stderr line kept for the log


class CommandSensor(LineSensorMixin):
    driver: Literal["command"]
    command: Annotated[list[Annotated[str, Field(min_length=1)]], Field(min_length=1, max_length=64)]
    mode: Literal["interval", "stream"] = "interval"
    timeout_s: Seconds = 10.0  # interval mode: longer runs are killed


def resolve(argv0: str) -> str | None:
    """The program's path, or None when it cannot be run."""
    if os.sep in argv0:
        return argv0 if os.path.isfile(argv0) and os.access(argv0, os.X_OK) else None
    return shutil.which(argv0)


class _Run:
    """One run of the program: its stdout as lines, its stderr's last line, its exit."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.last_error = ""
        self._stderr = asyncio.create_task(self._drain_stderr())

    async def _drain_stderr(self) -> None:
        assert self.proc.stderr is not None
        while chunk := await self.proc.stderr.read(4096):
            lines = chunk.decode(errors="replace").strip().splitlines()
            if lines:
                self.last_error = lines[-1][:STDERR_TAIL]

    async def stop(self) -> int:
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
        code = await self.proc.wait()
        await asyncio.gather(self._stderr, return_exceptions=True)
        return code

    def exit_detail(self, code: int) -> str:
        why = f"exited with status {code}" if code >= 0 else f"killed by signal {-code}"
        return why + (f": {self.last_error}" if self.last_error else "")


class CommandDriver:
    driver = "command"

    def __init__(self, cfg: CommandSensor) -> None:
        self.cfg = cfg
        self.sensor_type = cfg.type
        self.units: Mapping[str, str] = dict(cfg.values)
        self.parser = cfg.parser()
        self.status = DeviceStatus("command", cfg.sensor_id)

    @property
    def errors(self) -> Mapping[str, int]:
        return self.status.errors

    async def _start(self) -> _Run:
        program = resolve(self.cfg.command[0])
        if program is None:
            raise DeviceRefused(
                "start", "no such program, or not executable", key="command", value=self.cfg.command[0]
            )
        try:
            proc = await asyncio.create_subprocess_exec(
                program,
                *self.cfg.command[1:],
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                limit=self.cfg.max_line_bytes,
            )
        except OSError as exc:
            raise DeviceRefused("start", f"cannot run it: {exc}", key="command", value=program) from None
        return _Run(proc)

    async def run_once(self) -> tuple[list[Sample], str | None]:
        """Interval mode: one run → its lines as readings, and why it failed (None: exit 0).
        A failed run still yields what it printed."""
        run = await self._start()
        samples: list[Sample] = []
        assert run.proc.stdout is not None
        try:
            async with asyncio.timeout(self.cfg.timeout_s):
                async for raw, ts in read_lines(run.proc.stdout, self.cfg.max_line_bytes, self.status):
                    sample = parse_line(self.parser, raw, ts, self.status)
                    if sample is not None:
                        samples.append(sample)
                    if len(samples) >= 1000:  # bounded: the rest of a runaway program's output is dropped
                        break
                await run.proc.wait()
        except TimeoutError:
            raise DeviceFault(
                "timeout", f"still running after timeout_s={self.cfg.timeout_s:g}; killed"
            ) from None
        finally:
            code = await run.stop()
        return samples, (run.exit_detail(code) if code != 0 else None)

    async def _interval(self, interval_s: Callable[[], float]) -> AsyncIterator[Sample]:
        async for _ in ticks(interval_s):
            try:
                samples, failure = await self.run_once()
            except DeviceFault as fault:
                self.status.fault(fault)
                continue
            if failure is None:
                self.status.ok()
            else:
                self.status.fault(DeviceFault("exit", failure))
            for sample in samples:
                yield sample

    async def _stream(self) -> AsyncIterator[Sample]:
        backoff = Backoff(1.0, RESTART_MAX_S)
        while True:
            run: _Run | None = None
            try:
                run = await self._start()
                assert run.proc.stdout is not None
                async for raw, ts in read_lines(run.proc.stdout, self.cfg.max_line_bytes, self.status):
                    sample = parse_line(self.parser, raw, ts, self.status)
                    if sample is not None:
                        self.status.ok()
                        backoff.reset()
                        yield sample
                code = await run.stop()
                raise DeviceFault("exit", "the stream ended: " + run.exit_detail(code))
            except DeviceFault as fault:
                self.status.fault(fault)
            finally:
                if run is not None:
                    await run.stop()
            await asyncio.sleep(backoff.next())

    def samples(self, interval_s: Callable[[], float]) -> AsyncIterator[Sample]:
        return self._stream() if self.cfg.mode == "stream" else self._interval(interval_s)

    async def check(self) -> None:
        """Interval mode: one run that exits 0 with a reading; stream mode: the program starts."""
        if self.cfg.mode == "stream":
            await (await self._start()).stop()
            return
        samples, failure = await self.run_once()
        if failure is not None:
            raise DeviceFault(
                "exit", f"the first run failed: {failure}", key="command", value=self.cfg.command
            )
        if not samples:
            raise DeviceFault(
                "parse", "the first run printed no reading", key="command", value=self.cfg.command
            )
