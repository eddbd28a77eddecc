"""The built-in console at ``/``: every sensor's newest values, live charts and the fleet table,
for a machine without Grafana.

Plain HTML, CSS and JavaScript shipped in the package (``static/``): no CDN, no JS library, no
build step, no inline script or style. The page reads the same JSON API as everyone else
(``/api/v1/sensors``, ``/api/v1/latest`` and ``/api/v1/sensors/{id}/readings``), so it needs
nothing the API does not serve.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

STATIC = Path(__file__).parent / "static"


def mount_console(app: FastAPI) -> None:
    app.mount("/console", StaticFiles(directory=STATIC), name="console")

    @app.get("/", include_in_schema=False)
    async def console() -> FileResponse:
        # Revalidated on every load, so an upgraded backend never serves a stale page.
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})
