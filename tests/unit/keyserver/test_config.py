"""KeyServerConfig: FEDCAST_* environment, validation, token files, masked repr; device-token files."""

from __future__ import annotations

import os
from pathlib import Path

import gmpy2
import pytest

from fedcast.services.keyserver.service import KeyServerConfig, load_device_tokens
from fedcast.shared.errors import ConfigurationError
from fedcast.shared.wire.serde import DEFAULT_MAX_MESSAGE_BYTES
from tests.conftest import stored_modulus

ADMIN = "admin-secret-0123456789"
AGG = "aggregator-secret-0123456789"


def test_defaults() -> None:
    cfg = KeyServerConfig.from_env({})
    assert cfg.state_dir == Path("/var/lib/fedcast/keyserver")
    assert (cfg.federation, cfg.modulus_bits, cfg.modulus, cfg.frac_bits, cfg.clip) == (
        "default",
        2048,
        None,
        16,
        4.0,
    )
    assert (cfg.max_clients, cfg.min_online) == (1000, 3)  # clients' default minimum |S| is 3
    assert (cfg.admin_token, cfg.aggregator_token, cfg.device_tokens) == ("", "", None)
    assert cfg.max_message_bytes == DEFAULT_MAX_MESSAGE_BYTES
    assert cfg.allow_insecure_test_group is False


def test_every_variable(tmp_path: Path) -> None:
    env = {
        "FEDCAST_STATE_DIR": str(tmp_path),
        "FEDCAST_FEDERATION": "plant-7",
        "FEDCAST_MODULUS_BITS": "3072",
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
        tmp_path,
        federation="plant-7",
        modulus_bits=3072,
        modulus=None,
        frac_bits=12,
        clip=2.5,
        max_clients=50,
        min_online=5,
        admin_token=ADMIN,
        aggregator_token=AGG,
        device_tokens=tmp_path / "tokens",
        max_message_bytes=1048576,
        allow_insecure_test_group=False,
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


# -- the modulus ------------------------------------------------------------------------------------


def test_supplied_modulus_in_hex_from_the_variable_or_a_file(tmp_path: Path) -> None:
    n = stored_modulus(2048)
    assert KeyServerConfig.from_env({"FEDCAST_MODULUS": format(n, "x")}).modulus == n
    assert KeyServerConfig.from_env({"FEDCAST_MODULUS": f"0x{n:X}\n"}).modulus == n
    path = tmp_path / "modulus.hex"
    path.write_text(format(n, "x") + "\n")
    assert KeyServerConfig.from_env({"FEDCAST_MODULUS_FILE": str(path)}).modulus == n


def test_repr_does_not_print_the_modulus() -> None:
    n = stored_modulus(2048)
    cfg = KeyServerConfig.from_env({"FEDCAST_MODULUS": format(n, "x"), "FEDCAST_ADMIN_TOKEN": ADMIN})
    text = repr(cfg) + str(cfg)
    assert "supplied" in text
    for form in (format(n, "x"), format(n, "X"), str(n)):
        assert form[:32] not in text
    assert ADMIN not in text


def _prime_of_2048_bits() -> int:
    return int(gmpy2.next_prime((1 << 2047) + 12345))


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (_prime_of_2048_bits, "is prime"),  # protocol v1's flaw: a public factorization
        (lambda: 2 * stored_modulus(2048), "even"),
        (lambda: stored_modulus(512), "below the minimum"),  # only tests may use small moduli
        (lambda: stored_modulus(2048) * 3, "prime factor below"),
    ],
    ids=["prime", "even", "small", "small-factor"],
)
def test_unusable_moduli_are_refused_at_configuration_time(tmp_path: Path, make: object, match: str) -> None:
    assert callable(make)
    n = make()
    with pytest.raises(ConfigurationError, match=match):
        KeyServerConfig.from_env({"FEDCAST_MODULUS": format(n, "x")})
    path = tmp_path / "n.hex"
    path.write_text(format(n, "x"))
    with pytest.raises(ConfigurationError, match=match):
        KeyServerConfig.from_env({"FEDCAST_MODULUS_FILE": str(path)})
    with pytest.raises(ConfigurationError, match=match):
        KeyServerConfig(tmp_path, modulus=n)  # the dataclass itself validates, not only from_env


def test_small_modulus_is_accepted_only_for_tests(tmp_path: Path) -> None:
    n = stored_modulus(512)
    assert KeyServerConfig(tmp_path, modulus=n, allow_insecure_test_group=True).modulus == n


def test_version_1_setting_is_refused_with_its_replacement_named() -> None:
    with pytest.raises(ConfigurationError, match="FEDCAST_MODULUS_BITS") as info:
        KeyServerConfig.from_env({"FEDCAST_P_BITS": "2048"})
    assert "FEDCAST_P_BITS" in str(info.value)


@pytest.mark.parametrize(
    ("env", "match"),
    [
        ({"FEDCAST_MODULUS_BITS": "1024"}, "modulus_bits"),
        ({"FEDCAST_MODULUS_BITS": "4096"}, "modulus_bits"),
        ({"FEDCAST_MODULUS_BITS": "many"}, "FEDCAST_MODULUS_BITS must be an integer"),
        ({"FEDCAST_MODULUS": "not-hex"}, "hexadecimal"),
        ({"FEDCAST_MODULUS": "abc", "FEDCAST_MODULUS_FILE": "/x"}, "not both"),
        ({"FEDCAST_MODULUS_FILE": "/nonexistent/modulus"}, "cannot read"),
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


# -- device tokens ----------------------------------------------------------------------------------


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
