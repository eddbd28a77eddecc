"""The layout reads like the data flow: no stage imports a stage that comes after it."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src" / "moby"
# The order of the data flow; ``schema`` (the contract) may be imported by every stage.
STAGES = ["schema", "edge", "broker", "ingest", "store", "query", "api", "dashboards"]


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return {n for n in names if n.startswith("moby.")}


@pytest.mark.parametrize("stage", STAGES)
def test_no_stage_imports_a_later_stage(stage: str) -> None:
    later = STAGES[STAGES.index(stage) + 1 :]
    offenders = {
        f"{path.relative_to(SRC)} imports {module}"
        for path in (SRC / stage).rglob("*.py")
        for module in imported_modules(path)
        if module.split(".")[1] in later
    }
    assert not offenders, sorted(offenders)


def test_the_contract_imports_no_stage() -> None:
    for path in (SRC / "schema").rglob("*.py"):
        assert all(m.split(".")[1] == "schema" for m in imported_modules(path)), path
