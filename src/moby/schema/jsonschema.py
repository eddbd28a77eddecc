"""JSON Schema files generated from the payload models (``docs/schema/``, kept fresh by a test)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter

from moby.schema.payloads import (
    HEALTH,
    HEALTH_SCHEMA,
    STATUS,
    STATUS_SCHEMA,
    TELEMETRY,
    TELEMETRY_SCHEMA,
)

SCHEMAS: dict[str, TypeAdapter[Any]] = {
    TELEMETRY_SCHEMA: TELEMETRY,
    HEALTH_SCHEMA: HEALTH,
    STATUS_SCHEMA: STATUS,
}


def render(name: str) -> str:
    schema = SCHEMAS[name].json_schema(by_alias=True)
    schema = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": f"https://moby.example/schema/{name}.json",
        "title": name,
        **schema,
    }
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"


def write_schemas(directory: Path) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for name in SCHEMAS:
        path = directory / f"{name}.schema.json"
        path.write_text(render(name))
        paths.append(path)
    return paths
