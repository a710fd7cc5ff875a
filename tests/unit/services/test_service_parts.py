"""Service building blocks: key files, local state, env config, device data, the gate."""

from __future__ import annotations

import json
import stat
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fedcast.services.aggregator.service import AggregatorConfig, AggregatorService
from fedcast.services.edge_client.data import DataSource, client_task, load_device_ratings, local_ratings
from fedcast.services.edge_client.service import EdgeClientService, EdgeConfig
from fedcast.services.edge_client.state import load_local_state, save_local_state
from fedcast.services.envconfig import env_float, env_hex, env_int, task_from_env
from fedcast.services.keyfiles import (
    load_or_create_aggregator_key,
    load_or_create_client_key,
    load_or_create_signing_key,
)
from fedcast.services.keyserver.service import KeyServer, KeyServerConfig
from fedcast.services.runtime import MessageGate, Outbox
from fedcast.shared.crypto.group import GroupParams
from fedcast.shared.crypto.signing import SigningKeyPair
from fedcast.shared.errors import (
    ConfigurationError,
    DataError,
    InvalidKeyError,
    KeyStorageError,
    LegacyStateError,
)
from fedcast.shared.keystore import write_json_atomic
from fedcast.shared.learning.data import SyntheticConfig, make_synthetic
from fedcast.shared.learning.tasks import FedMFClientTask, TaskSpec
from fedcast.shared.metrics import MESSAGES_REJECTED
from fedcast.shared.protocol.outgoing import Outgoing
from fedcast.shared.transport.base import AGGREGATOR, Delivery
from fedcast.shared.transport.inprocess import InProcessBroker, InProcessTransport
from fedcast.shared.wire.messages import MessageType, Ready
from fedcast.shared.wire.serde import WireContext
from tests.conftest import stored_modulus


def test_key_files_are_created_0600_and_reloaded(tmp_path: Path, small_group: GroupParams) -> None:
    signer = load_or_create_signing_key(tmp_path / "s.json")
    assert load_or_create_signing_key(tmp_path / "s.json") == signer
    client = load_or_create_client_key(tmp_path / "c.json", small_group)
    assert load_or_create_client_key(tmp_path / "c.json", small_group) == client
    agg = load_or_create_aggregator_key(tmp_path / "a.json", small_group)
    assert load_or_create_aggregator_key(tmp_path / "a.json", small_group) == agg
    for name in ("s.json", "c.json", "a.json"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o600
    assert json.loads((tmp_path / "c.json").read_text())["version"] == 2
    assert json.loads((tmp_path / "a.json").read_text())["version"] == 2


def test_key_files_of_another_modulus_are_refused(tmp_path: Path, small_group: GroupParams) -> None:
    other = GroupParams.from_modulus(stored_modulus(1024), allow_insecure=True)
    load_or_create_client_key(tmp_path / "c.json", small_group)
    load_or_create_aggregator_key(tmp_path / "a.json", small_group)
    with pytest.raises(InvalidKeyError, match="different group"):
        load_or_create_client_key(tmp_path / "c.json", other)
    with pytest.raises(InvalidKeyError, match="different group"):
        load_or_create_aggregator_key(tmp_path / "a.json", other)


_V1_GROUP = {"p": format(2**127 - 1, "x"), "q": format((2**127 - 2) // 2, "x"), "g": "3", "insecure": True}


@pytest.mark.parametrize(
    ("document", "load"),
    [
        (
            {"format": "fedcast.client-secret-key", "version": 1, "group": _V1_GROUP, "secret": "1234"},
            load_or_create_client_key,
        ),
        (
            {
                "format": "fedcast.aggregator-secret-key",
                "version": 1,
                "group": _V1_GROUP,
                "alphas": ["1234", "5678"],
                "delivery_secret": "9abc",
            },
            load_or_create_aggregator_key,
        ),
    ],
    ids=["client", "aggregator"],
)
def test_v1_key_files_are_refused_never_reused_or_replaced(
    tmp_path: Path, small_group: GroupParams, document: dict[str, object], load: Any
) -> None:
    path = tmp_path / "key.json"
    write_json_atomic(path, document, secret=True)
    before = path.read_bytes()
    with pytest.raises(LegacyStateError, match="version 1") as info:
        load(path, small_group)
    assert "delete it" in str(info.value)  # says what to do
    assert path.read_bytes() == before  # not overwritten with a new key


def test_local_state_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "edge" / "local-model.npy"
    assert load_local_state(path) is None
    state = np.arange(12.0).reshape(4, 3)
    save_local_state(path, state)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    np.testing.assert_array_equal(load_local_state(path), state)
    path.write_bytes(b"not npy")
    with pytest.raises(KeyStorageError):
        load_local_state(path)


def test_fedmf_task_state_survives_a_restart(tmp_path: Path) -> None:
    spec = TaskSpec(n_items=10, latent_dim=3)
    data = make_synthetic(SyntheticConfig(n_users=3, n_items=10, ratings_per_user=5))
    task = FedMFClientTask(spec, data)
    update = task.local_update(np.full(30, 0.3))
    task.commit(update.pending)
    saved = task.export_state()
    assert saved is not None
    fresh = FedMFClientTask(spec, data, client_seed=99)
    assert not np.array_equal(fresh.user_factors, saved)
    fresh.import_state(saved)
    np.testing.assert_array_equal(fresh.user_factors, saved)
    with pytest.raises(DataError):
        fresh.import_state(np.zeros((2, 3)))


def test_env_helpers() -> None:
    env = {"A": "3", "B": "x", "F": "0.5", "H": "00ff", "BAD_HEX": "zz"}
    assert env_int(env, "A", 1) == 3 and env_int(env, "MISSING", 1) == 1
    assert env_float(env, "F", 1.0) == 0.5
    assert env_hex(env, "H") == b"\x00\xff" and env_hex(env, "NONE") is None
    with pytest.raises(ConfigurationError, match="B must be an integer"):
        env_int(env, "B", 1)
    with pytest.raises(ConfigurationError, match="BAD_HEX"):
        env_hex(env, "BAD_HEX")
    spec = task_from_env({"FEDCAST_TASK": "fedavg-mlp", "FEDCAST_TASK_HIDDEN": "8"})
    assert spec.name == "fedavg-mlp" and spec.hidden == 8
    with pytest.raises(ConfigurationError):
        task_from_env({"FEDCAST_TASK": "nope"})


_EDGE_ENV = {
    "FEDCAST_CLIENT_ID": "line-01",
    "FEDCAST_KEYSERVER_VERIFY_KEY": "ab" * 32,
    "FEDCAST_ENROLLMENT_TOKEN": "device-token-1",
}


@pytest.mark.parametrize(
    ("value", "expected"), [(None, False), ("0", False), ("1", True), ("true", False), ("", False)]
)
def test_edge_config_check_all_proofs_from_env(value: str | None, expected: bool) -> None:
    """FEDCAST_CHECK_ALL_PROOFS=1 (and only "1") makes a client check every first-component proof."""
    env = dict(_EDGE_ENV) if value is None else {**_EDGE_ENV, "FEDCAST_CHECK_ALL_PROOFS": value}
    config = EdgeConfig.from_env(env)
    assert config.check_all_proofs is expected
    assert EdgeConfig.from_env(env, check_all_proofs=True).check_all_proofs is True
    # the dataclass default is the sampled check too
    plain = EdgeConfig(config.client_id, config.state_dir, config.keyserver_verify_key, enrollment_token="t")
    assert plain.check_all_proofs is False


@pytest.mark.parametrize("check_all", [False, True])
async def test_the_edge_client_hands_check_all_proofs_to_its_machine(tmp_path: Path, check_all: bool) -> None:
    """The setting reaches the client's proof sampler (over the in-process broker, as the demo runs)."""
    broker = InProcessBroker()
    federation = "plant-7"
    ks_transport = InProcessTransport(broker)
    await ks_transport.connect()
    keyserver = KeyServer(
        KeyServerConfig(
            tmp_path / "keyserver",
            federation=federation,
            admin_token="admin-token-" + "x" * 24,
            aggregator_token="aggregator-token-" + "y" * 24,
            allow_insecure_test_group=True,
        ),
        ks_transport,
    )
    await keyserver.start()
    token = keyserver.store.provision_device("line-01")
    aggregator = AggregatorService(
        AggregatorConfig(
            tmp_path / "aggregator",
            federation=federation,
            aggregator_token="aggregator-token-" + "y" * 24,
            keyserver_verify_key=keyserver.verify_key,
            task=TaskSpec(n_items=8),
            fold_workers=0,
            allow_insecure_test_group=True,
        ),
        InProcessTransport(broker),
    )
    env = {
        **_EDGE_ENV,
        "FEDCAST_FEDERATION": federation,
        "FEDCAST_KEYSERVER_VERIFY_KEY": keyserver.verify_key.hex(),
        "FEDCAST_ENROLLMENT_TOKEN": token,
        "FEDCAST_STATE_DIR": str(tmp_path / "edge"),
        "FEDCAST_TASK_N_ITEMS": "8",
        "FEDCAST_CHECK_ALL_PROOFS": "1" if check_all else "0",
    }
    edge = EdgeClientService(
        EdgeConfig.from_env(env, allow_insecure_test_group=True), InProcessTransport(broker)
    )
    try:
        await aggregator.start()
        await edge.start()
        assert edge.machine is not None
        sampler = edge.machine._elgamal.sampler
        assert sampler.check_all is check_all
    finally:
        await edge.close()
        await aggregator.close()
        await keyserver.stop()
        await ks_transport.close()


def test_device_ratings_csv(tmp_path: Path) -> None:
    good = tmp_path / "r.csv"
    good.write_text("user,item,rating\nlineA,3,4.5\nlineB,0,2\nlineA,1,3\n")
    data = load_device_ratings(good, n_items=5)
    assert data.n_users == 2 and data.users.tolist() == [0, 1, 0] and data.items.tolist() == [3, 0, 1]
    for text, message in (
        ("u,i,r\n", "header"),
        ("user,item,rating\nx,1\n", "3 columns"),
        ("user,item,rating\nx,one,2\n", "integer"),
        ("user,item,rating\nx,9,2\n", r"\[0, 5\)"),
        ("user,item,rating\n", "no ratings"),
    ):
        bad = tmp_path / "bad.csv"
        bad.write_text(text)
        with pytest.raises(DataError, match=message):
            load_device_ratings(bad, n_items=5)


def test_synthetic_shards_partition_the_users() -> None:
    spec = TaskSpec(n_items=20)
    tasks = [client_task(spec, DataSource(shard=i, n_shards=3, users_per_client=2)) for i in range(3)]
    assert all(isinstance(t, FedMFClientTask) and t.user_factors.shape == (2, 5) for t in tasks)
    data = make_synthetic(SyntheticConfig(n_users=4, n_items=20))
    local = local_ratings(data, np.array([3, 1]))
    assert local.n_users == 2 and set(local.users.tolist()) <= {0, 1}
    fedavg = client_task(TaskSpec(name="fedavg-logreg"), DataSource(shard=1, n_shards=4))
    assert fedavg.local_update(TaskSpec(name="fedavg-logreg").new_model().get_params()).vector.size == 18


def _rejected(reason: str) -> float:
    return MESSAGES_REJECTED.labels("gate-test", reason)._value.get()  # type: ignore[attr-defined]


async def test_message_gate_admits_signed_messages_and_counts_the_rest(small_group: GroupParams) -> None:
    ctx = WireContext.from_group(small_group)
    alice, mallory = SigningKeyPair.generate(), SigningKeyPair.generate()
    keys = {"alice": alice.verify_key}

    async def key_of(sender: str) -> bytes | None:
        return keys.get(sender)

    gate = MessageGate("gate-test", "fed", ctx, {MessageType.READY}, key_of, max_bytes=4096)
    transport = InProcessTransport(InProcessBroker())
    ready = Outgoing(AGGREGATOR, MessageType.READY, 1, 0, Ready())

    def wire(sender: str, signer: SigningKeyPair, federation: str = "fed") -> bytes:
        return Outbox("t", transport, federation, sender, signer, ctx).encode(ready)

    msg = await gate.admit(Delivery(wire("alice", alice), AGGREGATOR))
    assert msg is not None and msg.header.sender == "alice"
    cases = [
        (wire("alice", mallory), "bad_signature"),  # impersonation
        (wire("mallory", mallory), "unknown_sender"),
        (wire("alice", alice, "other-fed"), "malformed"),
        (b"\x00garbage", "malformed"),
        (b"\x00" * 5000, "oversize"),
    ]
    for data, reason in cases:
        before = _rejected(reason)
        assert await gate.admit(Delivery(data, AGGREGATOR)) is None
        assert _rejected(reason) == before + 1


def test_outbox_encodes_decodable_signed_messages(small_group: GroupParams) -> None:
    from fedcast.shared.wire.serde import decode, verify

    ctx = WireContext.from_group(small_group)
    signer = SigningKeyPair.generate()
    box = Outbox("t", InProcessTransport(InProcessBroker()), "fed", "line-1", signer, ctx)
    msg = decode(box.encode(Outgoing(AGGREGATOR, MessageType.READY, 3, 1, Ready())), ctx)
    verify(msg, signer.verify_key, ctx)
    assert (msg.header.round, msg.header.attempt, msg.header.sender) == (3, 1, "line-1")
