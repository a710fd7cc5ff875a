"""The grants fedcast's provisioning gives each party: exactly its own resources."""

from __future__ import annotations

import re

import pytest

from fedcast.shared.errors import ConfigurationError
from fedcast.shared.transport.brokeradmin import (
    BrokerAdmin,
    aggregator_grant,
    device_grant,
    device_user,
    keyserver_grant,
    reply_key,
)

F = "plant.7"  # a dot in the federation id must not match any character


def _matches(pattern: str, name: str) -> bool:
    return re.search(pattern, name) is not None


def test_a_device_reads_its_two_queues_and_publishes_to_the_services_only() -> None:
    g = device_grant(F, "line.1")
    assert g.configure == "^$"
    assert _matches(g.read, "fedcast.plant.7.client.line.1")
    assert _matches(g.read, "fedcast.plant.7.reply.client.line.1")
    for other in (
        "fedcast.plant.7.client.line.10",
        "fedcast.plant.7.client.line-1",
        "fedcast.plantx7.client.line.1",
        "fedcast.plant.7.aggregator",
        "fedcast.plant.7.keyserver",
    ):
        assert not _matches(g.read, other), other
    assert _matches(g.write, "fedcast.plant.7")
    assert not _matches(g.write, "fedcast.plant.7.broadcast")
    assert not _matches(g.write, "amq.default")
    assert [
        k
        for k in ("aggregator", "keyserver", "client.line.2", "reply.x", "aggregatorx")
        if _matches(g.topic_write, k)
    ] == [
        "aggregator",
        "keyserver",
    ]


def test_the_services_grants() -> None:
    a = aggregator_grant(F)
    assert _matches(a.write, "fedcast.plant.7.broadcast") and _matches(a.write, "fedcast.plant.7")
    assert _matches(a.read, "fedcast.plant.7.aggregator") and _matches(
        a.read, "fedcast.plant.7.reply.aggregator"
    )
    assert not _matches(a.read, "fedcast.plant.7.client.line.1")
    assert _matches(a.topic_write, "client.line.1") and not _matches(a.topic_write, "aggregator")
    k = keyserver_grant(F)
    assert _matches(k.read, "fedcast.plant.7.keyserver") and not _matches(
        k.read, "fedcast.plant.7.aggregator"
    )
    assert _matches(k.topic_write, "reply.client.line.1")
    assert not _matches(k.topic_write, "client.line.1") and not _matches(k.topic_write, "aggregator")
    assert a.configure == k.configure == "^$"
    assert reply_key("client.x") == "reply.client.x" and device_user(F, "x") == "fedcast.plant.7.x"


def test_the_admin_url_is_validated_and_never_shown() -> None:
    admin = BrokerAdmin("http://admin:s3cret-password@rabbitmq:15672")
    assert "s3cret" not in repr(admin)
    for bad in ("amqp://admin:pw@host", "http://host:15672", "file:///etc/passwd"):
        with pytest.raises(ConfigurationError):
            BrokerAdmin(bad)
