"""The API docs pages load only files the backend itself serves (no CDN), with no inline script."""

from __future__ import annotations

import re

from moby.api.docs import ASSETS, PAGES


def test_the_pages_reference_only_local_files_that_exist() -> None:
    for page in ("swagger.html", "redoc.html"):
        html = (PAGES / page).read_text()
        refs = re.findall(r'(?:src|href|spec-url)="([^"]+)"', html)
        assert refs, page
        for ref in refs:
            assert not re.match(r"^[a-z]+:|^//", ref), (page, ref)  # relative: this backend only
            if ref.startswith("docs-assets/"):
                assert (ASSETS / ref.removeprefix("docs-assets/")).is_file(), ref
            elif ref.startswith("docs/"):
                assert (PAGES / ref.removeprefix("docs/")).is_file(), ref
            else:
                assert ref == "openapi.json", ref


def test_no_inline_script() -> None:
    """So a Content-Security-Policy of script-src 'self' lets the pages run."""
    for page in ("swagger.html", "redoc.html"):
        html = (PAGES / page).read_text()
        assert all(tag.group(1) for tag in re.finditer(r"<script(?:\s+src=\"([^\"]+)\")?[^>]*>", html)), page


def test_swagger_ui_is_a_version_that_reads_openapi_3_1() -> None:
    bundle = (ASSETS / "swagger-ui-bundle.js").read_text(errors="replace")
    assert re.search(r'"5\.\d+\.\d+"', bundle), "Swagger UI 5 is needed for FastAPI's OpenAPI 3.1"
