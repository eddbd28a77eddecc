"""The shipped example configuration stays valid; bad configurations are refused."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from moby.edge.agent import AgentConfig

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "edge.toml"


def test_the_example_configuration_loads() -> None:
    config = AgentConfig.load(EXAMPLE)
    assert config.factory_id == "plant-a"
    assert {s.type for s in config.sensors} == {"vibration", "temperature"}


@pytest.mark.parametrize(
    "change",
    [
        {"factory_id": "bad id"},
        {"brokers": []},
        {"sensors": []},
        {"sensors": [{"sensor_id": "s1", "type": "pressure"}]},
        {"sensors": [{"sensor_id": "s1", "type": "noise", "interval_s": 0}]},
        {"drop_policy": "drop_everything"},
        {"unknown_setting": 1},
    ],
)
def test_bad_configurations_are_refused(change: dict[str, object]) -> None:
    base: dict[str, object] = {"factory_id": "f1", "sensors": [{"sensor_id": "s1", "type": "noise"}]}
    with pytest.raises(ValidationError):
        AgentConfig.model_validate({**base, **change})
