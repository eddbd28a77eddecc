"""The API documentation pages, ``/docs`` (Swagger UI) and ``/redoc``, served without internet.

FastAPI's own pages load Swagger UI and ReDoc from a CDN, so on a factory network with no way
out ``/docs`` is blank. This follows FastAPI's self-hosting recipe: the JavaScript and CSS come
from the pinned ``fastapi-offline`` package (MIT; it ships current Swagger UI 5 builds, which
OpenAPI 3.1 needs, and ReDoc, and depends on FastAPI alone) and are served under
``/docs-assets``. The pages themselves are ours (``apidocs/``): relative URLs, and no inline
script, so a strict ``script-src 'self'`` Content-Security-Policy allows them.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

PAGES = Path(__file__).parent / "apidocs"
ASSETS = Path(str(files("fastapi_offline").joinpath("static")))


def mount_docs(app: FastAPI) -> None:
    """Serve /docs and /redoc from the package; create the app with ``docs_url=redoc_url=None``."""
    app.mount("/docs-assets", StaticFiles(directory=ASSETS), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui() -> FileResponse:
        return FileResponse(PAGES / "swagger.html")

    @app.get("/docs/swagger-init.js", include_in_schema=False)
    async def swagger_init() -> FileResponse:
        return FileResponse(PAGES / "swagger-init.js", media_type="text/javascript")

    @app.get("/redoc", include_in_schema=False)
    async def redoc() -> FileResponse:
        return FileResponse(PAGES / "redoc.html")
