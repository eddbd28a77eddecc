"""Running the app under uvicorn with a shutdown that exits 0 once drained."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager

import uvicorn


class GracefulServer(uvicorn.Server):
    """uvicorn re-raises SIGTERM after its graceful shutdown, so the exit status reads "killed".

    After ``moby serve`` has stopped taking messages and flushed its queue, the stop *was*
    clean, and supervisors (systemd, Kubernetes, ``moby up``) should see exit status 0.
    """

    @contextmanager
    def capture_signals(self) -> Iterator[None]:
        originals = {sig: signal.signal(sig, self.handle_exit) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, handler in originals.items():
                signal.signal(sig, handler)


class BackgroundServer(uvicorn.Server):
    """A second server in the same process (the proxy's own port): the main one owns the signals."""

    @contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield
