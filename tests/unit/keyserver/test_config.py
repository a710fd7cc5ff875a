"""KeyServerConfig: FEDCAST_* environment, validation, token files, masked repr; device-token files."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from services.keyserver.service import KeyServerConfig, load_device_tokens
from shared.errors import ConfigurationError
from shared.wire.serde import DEFAULT_MAX_MESSAGE_BYTES

ADMIN = "admin-secret-0123456789"
AGG = "aggregator-secret-0123456789"


def test_defaults() -> None:
    cfg = KeyServerConfig.from_env({})
    assert cfg.state_dir == Path("/var/lib/fedcast/keyserver")
    assert (cfg.federation, cfg.p_bits, cfg.frac_bits, cfg.clip) == ("default", 2048, 16, 4.0)
    assert (cfg.max_clients, cfg.min_online) == (1000, 2)
    assert (cfg.admin_token, cfg.aggregator_token, cfg.device_tokens) == ("", "", None)
    assert cfg.max_message_bytes == DEFAULT_MAX_MESSAGE_BYTES
    assert cfg.allow_insecure_test_group is False


def test_every_variable(tmp_path: Path) -> None:
    env = {
        "FEDCAST_STATE_DIR": str(tmp_path),
        "FEDCAST_FEDERATION": "plant-7",
        "FEDCAST_P_BITS": "3072",
        "FEDCAST_FRAC_BITS": "12",
        "FEDCAST_CLIP": "2.5",
        "FEDCAST_MAX_CLIENTS": "50",
        "FEDCAST_MIN_ONLINE": "5",
        "FEDCAST_ADMIN_TOKEN": ADMIN,
        "FEDCAST_AGGREGATOR_TOKEN": AGG,
        "FEDCAST_DEVICE_TOKENS": str(tmp_path / "tokens"),
        "FEDCAST_MAX_MESSAGE_BYTES": "1048576",
        "FEDCAST_ALLOW_INSECURE_TEST_GROUP": "1",  # not an env setting: ignored
    }
    cfg = KeyServerConfig.from_env(env)
    assert cfg == KeyServerConfig(
        tmp_path, "plant-7", 3072, 12, 2.5, 50, 5, ADMIN, AGG, tmp_path / "tokens", 1048576, False
    )
    assert cfg.registry_path == tmp_path / "registry.sqlite3"


def test_tokens_from_files_and_masked_repr(tmp_path: Path) -> None:
    (tmp_path / "admin").write_text(ADMIN + "\n")
    (tmp_path / "agg").write_text(AGG)
    env = {
        "FEDCAST_ADMIN_TOKEN_FILE": str(tmp_path / "admin"),
        "FEDCAST_AGGREGATOR_TOKEN_FILE": str(tmp_path / "agg"),
    }
    cfg = KeyServerConfig.from_env(env)
    assert (cfg.admin_token, cfg.aggregator_token) == (ADMIN, AGG)
    text = repr(cfg) + str(cfg)
    assert ADMIN not in text and AGG not in text and "<redacted>" in text


@pytest.mark.parametrize(
    ("env", "match"),
    [
        ({"FEDCAST_P_BITS": "1024"}, "p_bits"),
        ({"FEDCAST_P_BITS": "many"}, "FEDCAST_P_BITS must be an integer"),
        ({"FEDCAST_CLIP": "wide"}, "FEDCAST_CLIP"),
        ({"FEDCAST_CLIP": "-1"}, "clip"),
        ({"FEDCAST_FRAC_BITS": "40"}, "frac_bits"),
        ({"FEDCAST_MAX_CLIENTS": "1"}, "max_clients"),
        ({"FEDCAST_MIN_ONLINE": "1"}, "min_online"),
        ({"FEDCAST_MAX_CLIENTS": "10", "FEDCAST_MIN_ONLINE": "11"}, "min_online"),
        ({"FEDCAST_FEDERATION": "no spaces"}, "federation"),
        ({"FEDCAST_ADMIN_TOKEN": "short"}, "admin_token"),
        ({"FEDCAST_ADMIN_TOKEN": ADMIN, "FEDCAST_AGGREGATOR_TOKEN": ADMIN}, "must differ"),
        ({"FEDCAST_ADMIN_TOKEN": ADMIN, "FEDCAST_ADMIN_TOKEN_FILE": "/x"}, "not both"),
        ({"FEDCAST_ADMIN_TOKEN_FILE": "/nonexistent/token"}, "cannot read"),
        ({"FEDCAST_MAX_MESSAGE_BYTES": "10"}, "max_message_bytes"),
    ],
)
def test_invalid_settings_are_refused(env: dict[str, str], match: str) -> None:
    with pytest.raises(ConfigurationError, match=match) as info:
        KeyServerConfig.from_env(env)
    assert ADMIN not in str(info.value)


def test_device_tokens_from_a_mounted_secret_directory(tmp_path: Path) -> None:
    # The layout kubelet creates: real files under a timestamped dir, ..data -> it, key -> ..data/key.
    real = tmp_path / "..2024_01_01_00_00_00.000"
    real.mkdir()
    (real / "c1").write_text("token-of-c1-0123456789\n")
    (real / "c2").write_text("token-of-c2-0123456789")
    os.symlink(real.name, tmp_path / "..data")
    for name in ("c1", "c2"):
        os.symlink(f"..data/{name}", tmp_path / name)
    assert load_device_tokens(tmp_path) == {"c1": "token-of-c1-0123456789", "c2": "token-of-c2-0123456789"}


def test_device_tokens_from_json(tmp_path: Path) -> None:
    path = tmp_path / "tokens.json"
    path.write_text('{"c1": "token-of-c1-0123456789"}')
    assert load_device_tokens(path) == {"c1": "token-of-c1-0123456789"}
    path.write_text("[1, 2]")
    with pytest.raises(ConfigurationError, match="JSON object"):
        load_device_tokens(path)
    path.write_text("{nope")
    with pytest.raises(ConfigurationError, match="not JSON"):
        load_device_tokens(path)
    with pytest.raises(ConfigurationError, match="cannot read"):
        load_device_tokens(tmp_path / "missing.json")
