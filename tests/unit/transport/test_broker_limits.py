"""The broker-side limits: the policies the deployment applies, and max_message_size.

The values live in shared/transport/amqp.py (``broker_policies``) and in
k8s/base/rabbitmq/rabbitmq.conf; the Kubernetes hook and the compose one-shot carry
them as shell commands. These tests keep the copies equal and the sizes sufficient for
the default federation. That a full queue really refuses publishes is shown against the
real broker in tests/integration/transport/test_amqp.py.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import pytest

from fedcast.shared.encoding import FixedPointEncoding
from fedcast.shared.errors import ConfigurationError
from fedcast.shared.learning.tasks import TaskSpec
from fedcast.shared.packing import PackingLayout
from fedcast.shared.params import DEFAULT_MAX_CLIENTS
from fedcast.shared.transport.amqp import (
    CLIENT_QUEUE_MAX_BYTES,
    SERVICE_QUEUE_MAX_BYTES,
    SERVICE_QUEUE_MAX_LENGTH,
    AmqpConfig,
    broker_policies,
)
from fedcast.shared.transport.base import AGGREGATOR, KEYSERVER, client_endpoint
from fedcast.shared.wire.codec import WireContext
from fedcast.shared.wire.messages import MessageType
from fedcast.shared.wire.serde import SizeLimits

yaml = pytest.importorskip("yaml", reason="PyYAML is not installed (pip install -e '.[test]')")

REPO = Path(__file__).resolve().parents[3]
RABBITMQ_CONF = REPO / "k8s/base/rabbitmq/rabbitmq.conf"
STATEFULSET = REPO / "k8s/base/rabbitmq/statefulset.yaml"
COMPOSE = REPO / "docker-compose.yml"
DEPLOY_MD = REPO / "docs/DEPLOY.md"


def _set_policy_argvs(script: str) -> list[list[str]]:
    """The ``rabbitmqctl ... set_policy ...`` lines of a shell script, from ``set_policy`` on."""
    argvs = []
    for line in script.splitlines():
        if "set_policy" in line:
            words = shlex.split(line)
            argvs.append(words[words.index("set_policy") :])
    return argvs


def _expected() -> list[list[str]]:
    return [policy.rabbitmqctl_args() for policy in broker_policies()]


def _max_message_size() -> int:
    settings = dict(line.split(" = ", 1) for line in RABBITMQ_CONF.read_text().splitlines() if " = " in line)
    return int(settings["max_message_size"])


def _limits(bits: int, task: TaskSpec, max_clients: int = DEFAULT_MAX_CLIENTS) -> SizeLimits:
    """What every receiver of a federation with this modulus size, task and max_clients accepts."""
    layout = PackingLayout.for_sum(
        max_value=FixedPointEncoding().max_encoded, max_clients=max_clients, plaintext_bits=bits - 1
    )
    return SizeLimits(
        WireContext(bits // 8, 2 * bits // 8),
        n_segments=layout.n_segments(task.upload_size),
        model_size=task.model_size,
        max_members=max_clients,
        max_entries=max_clients,
    )


def _largest(limits: SizeLimits) -> int:
    return max(limits.limit(t) for t in MessageType)


def test_kubernetes_hook_applies_exactly_the_transport_policies() -> None:
    statefulset: Any = next(yaml.safe_load_all(STATEFULSET.read_text()))
    (container,) = statefulset["spec"]["template"]["spec"]["containers"]
    command = container["lifecycle"]["postStart"]["exec"]["command"]
    assert command[:2] == ["/bin/sh", "-ec"]  # a failed set_policy fails the hook: it shows as an event
    assert _set_policy_argvs(command[-1]) == _expected()
    assert "await_startup" in command[-1]  # the node must be up before rabbitmqctl can set anything


def test_compose_one_shot_applies_exactly_the_transport_policies() -> None:
    service = yaml.safe_load(COMPOSE.read_text())["services"]["rabbitmq-policies"]
    assert service["image"] == yaml.safe_load(COMPOSE.read_text())["services"]["rabbitmq"]["image"]
    assert service["entrypoint"][:2] == ["/bin/sh", "-ec"]
    script = service["entrypoint"][-1].replace("$$", "$")  # compose's escape of a literal $
    assert _set_policy_argvs(script) == _expected()
    assert service["depends_on"]["rabbitmq"]["condition"] == "service_healthy"


def test_policies_match_the_queues_they_are_meant_for() -> None:
    service, client = broker_policies()
    config = AmqpConfig("amqp://localhost/", "default")
    names = {
        "service": [config.queue_name(KEYSERVER), config.queue_name(AGGREGATOR)],
        "client": [config.queue_name(client_endpoint(c)) for c in ("edge-1", "pi-line1.01", "aggregator")],
        "neither": [
            f"fedcast.default.reply.{'a' * 32}",  # RPC reply queues: exclusive, classic, unbounded
            "fedcast.default",
            "other.default.aggregator",
            "fedcast.default.aggregator.x",
        ],
    }
    for name in names["service"]:
        assert re.search(service.pattern, name) and not re.search(client.pattern, name), name
    for name in names["client"]:
        assert re.search(client.pattern, name) and not re.search(service.pattern, name), name
    for name in names["neither"]:
        assert not re.search(service.pattern, name) and not re.search(client.pattern, name), name
    assert service.definition["overflow"] == "reject-publish"  # publishers are told (a nack)
    assert "overflow" not in client.definition  # the client queues' own drop-head applies
    assert client.priority == service.priority


def test_policy_values_are_checked() -> None:
    for bad in ({"service_max_length": 0}, {"client_max_bytes": -1}, {"service_max_bytes": 1.5}):
        with pytest.raises(ConfigurationError):
            broker_policies(**bad)
    (service, _) = broker_policies(service_max_length=3)
    assert service.rabbitmqctl_args("v")[:3] == ["set_policy", "-p", "v"]
    assert '"max-length":3' in service.rabbitmqctl_args()[-1]


@pytest.mark.parametrize("bits", [2048, 3072])
def test_max_message_size_holds_the_default_federations_largest_message(bits: int) -> None:
    size = _max_message_size()
    largest = _largest(_limits(bits, TaskSpec()))
    assert largest <= size, f"a valid {bits}-bit message of {largest} bytes exceeds {size}"
    assert size <= 8 * largest, "max_message_size should stay near what the federation needs"
    # What rabbitmq.conf and docs/DEPLOY.md promise beyond the default model.
    assert _largest(_limits(bits, TaskSpec(n_items=40_000, latent_dim=5))) <= size  # 200,000 values


def test_queue_bounds_leave_room_for_a_full_round() -> None:
    limits = _limits(2048, TaskSpec())
    per_client = sum(limits.limit(t) for t in (MessageType.READY, MessageType.UPLOAD, MessageType.RESPONSE))
    assert SERVICE_QUEUE_MAX_LENGTH >= 3 * DEFAULT_MAX_CLIENTS  # a full online set's round, at once
    assert SERVICE_QUEUE_MAX_BYTES >= 2 * DEFAULT_MAX_CLIENTS * per_client
    # DEPLOY.md's sizing example: 100 clients x 10^5 values, several rounds of uploads.
    big = _limits(2048, TaskSpec(n_items=20_000, latent_dim=5)).limit(MessageType.UPLOAD)
    assert SERVICE_QUEUE_MAX_BYTES >= 4 * 100 * big
    assert CLIENT_QUEUE_MAX_BYTES >= 4 * _max_message_size()  # an offline client keeps >= 4 messages


def test_deploy_doc_computes_the_default_figure() -> None:
    text = DEPLOY_MD.read_text()
    section = text.split("## Broker limits", 1)[1].split("\n## ", 1)[0]
    (snippet,) = re.findall(r"```python\n(.*?)```", section, flags=re.DOTALL)
    printed: list[Any] = []
    exec(compile(snippet, "DEPLOY.md", "exec"), {"print": printed.append})  # the page's own snippet
    assert printed == [(_largest(_limits(3072, TaskSpec())), "envelope")]
    assert f"| `max_message_size` | {_max_message_size() // 2**20} MiB |" in section
