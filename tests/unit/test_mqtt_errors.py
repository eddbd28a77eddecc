"""moby.mqtt.errors: one hierarchy every client catches the same way, and hints an operator can act on."""

from __future__ import annotations

import pytest

from moby.mqtt import ConnectRefused, Disconnected, MqttError, ProtocolError, PublishRefused, SubscribeRefused
from moby.mqtt.errors import hint


@pytest.mark.parametrize(
    "exc",
    [
        ConnectRefused(0x86),
        SubscribeRefused(0x87, ["moby/#"]),
        PublishRefused(0x87, "moby/f1/s1/telemetry"),
        Disconnected(0x8E),
        ProtocolError("bad bytes"),
    ],
)
def test_every_mqtt_error_is_a_connection_error(exc: MqttError) -> None:
    """Code written for a lost connection (``except OSError``/``ConnectionError``) handles them too."""
    assert isinstance(exc, MqttError) and isinstance(exc, ConnectionError) and isinstance(exc, OSError)


def test_the_message_names_the_packet_the_code_and_the_reason() -> None:
    assert str(ConnectRefused(0x87)) == "CONNACK refused: 135 (0x87 not authorized)"
    assert (
        str(ConnectRefused(0x88, "restarting"))
        == "CONNACK refused: 136 (0x88 server unavailable): restarting"
    )
    assert str(Disconnected(0x8E)).startswith("DISCONNECT from the broker: 142 (0x8E session taken over)")
    refused = SubscribeRefused(0x87, ["moby/+/+/telemetry"])
    assert (
        refused.code == 0x87
        and refused.reason == "not authorized"
        and refused.filters == ["moby/+/+/telemetry"]
    )


def test_hints_name_the_user_and_where_it_is_set_never_a_password() -> None:
    wrong = hint(ConnectRefused(0x86), user="backend", source="MOBY_MQTT_URL")
    assert (
        wrong is not None and "'backend'" in wrong and "MOBY_MQTT_URL" in wrong and "password file" in wrong
    )
    anonymous = hint(ConnectRefused(0x87), user=None, source="MOBY_MQTT_URL")
    assert anonymous is not None and "anonymous" in anonymous
    for busy in (0x88, 0x89):
        assert hint(ConnectRefused(busy), user="u", source="s") == "broker overloaded or restarting"
    acl = hint(PublishRefused(0x87, "moby/f1/s1/telemetry"), user="gw", source="s")
    assert acl is not None and "ACL" in acl and "moby/f1/s1/telemetry" in acl and "'gw'" in acl
    sub = hint(SubscribeRefused(0x87, ["moby/#"]), user="backend", source="s")
    assert sub is not None and "subscribe" in sub
    assert hint(ConnectionRefusedError(111, "refused"), user="u", source="s") is not None
    assert hint(ConnectRefused(0x80), user="u", source="s") is None  # nothing useful to add
