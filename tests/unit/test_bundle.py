"""The device bundle (fedcast/bundle.py) and ``fedcast keyserver add-device --bundle``.

The env file is read back by three readers: one that follows systemd's EnvironmentFile
rules as systemd.exec(5) states them, one that follows the rules compose's env_file
documents (``$`` interpolated in bare and double-quoted values, single-quoted values
literal), and python-dotenv itself with interpolation on (it expands ``${VAR}`` even in
single quotes, hence no ``$`` in any value). The edge's own ``EdgeConfig.from_env`` and
``make_transport`` then take the parsed variables: the bundle is all a device needs.
No broker: the broker-credential path runs ``provision_device`` against a fake
management API that records what it was asked.
"""

from __future__ import annotations

import io
import os
import re
import secrets
import stat
import urllib.parse
from pathlib import Path
from typing import Any, ClassVar

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fedcast import services_cli
from fedcast.bundle import DEVICE_CA_PATH, DeviceBundle, canonical_ca_pem, env_file_line
from fedcast.cli import main
from fedcast.services.edge_client.service import EdgeConfig
from fedcast.services.keyserver.service import VERIFY_KEY_FILE, KeyServerConfig
from fedcast.services.keyserver.store import DeviceStatus, RegistryStore
from fedcast.services.observability import ObservabilityConfig
from fedcast.services.runtime import make_transport
from fedcast.shared.errors import ConfigurationError, TransportError
from fedcast.shared.keystore import write_json_atomic
from fedcast.shared.tls import make_ca
from fedcast.shared.transport.amqp import AmqpTransport
from fedcast.shared.transport.base import client_endpoint

yaml = pytest.importorskip("yaml", reason="PyYAML is not installed (pip install -e '.[test]')")

VK_HEX = "ab" * 32
DEVICE = "pi-line1-01"
FEDERATION = "plant-7"
#: A password with every character a URL must %-encode, and a `$` compose would interpolate.
AWKWARD_PASSWORD = "p@ss/w:rd%$HOME#'\" x"


@pytest.fixture(scope="module")
def ca_pem() -> bytes:
    return make_ca("bundle test CA").cert_pem


def device_url(password: str, *, tls: bool = True) -> str:
    user = urllib.parse.quote(f"fedcast.{FEDERATION}.{DEVICE}", safe="")
    scheme = "amqps" if tls else "amqp"
    return f"{scheme}://{user}:{urllib.parse.quote(password, safe='')}@broker.plant:5671/"


def make_bundle(ca_pem: bytes | None, *, password: str = AWKWARD_PASSWORD, **kw: Any) -> DeviceBundle:
    values: dict[str, Any] = {
        "client_id": DEVICE,
        "federation": FEDERATION,
        "enrollment_token": secrets.token_urlsafe(32),
        "keyserver_verify_key": VK_HEX,
        "amqp_url": device_url(password, tls=ca_pem is not None),
        "ca_pem": ca_pem,
        "settings": {"FEDCAST_MIN_ONLINE": "3", "FEDCAST_TASK": "fedmf"},
    }
    values.update(kw)
    return DeviceBundle(**values)


# --- two readers of env files ------------------------------------------------------------------


def parse_systemd_environment_file(text: str) -> dict[str, str]:
    """systemd.exec(5), EnvironmentFile=: the rules for bare, '...' and "..." values.

    Lines starting with # or ; are comments, lines without = are ignored; whitespace
    around the key and the value is discarded. A bare value follows a POSIX shell's
    backslash rules (backslash keeps the next character, backslash-newline continues the
    line) but keeps interior whitespace and quotes. '...' is verbatim and may span lines.
    "..." unescapes \\" \\\\ \\` \\$ and backslash-newline and keeps any other backslash.
    No $ expansion anywhere.
    """
    env: dict[str, str] = {}
    i, n = 0, len(text)

    def rest_of_line_is_blank(j: int) -> int:
        while j < n and text[j] != "\n":
            assert text[j] in " \t\r", f"text after a closing quote: {text[j : j + 20]!r}"
            j += 1
        return j

    while i < n:
        while i < n and text[i] in " \t\r":
            i += 1
        if i >= n:
            break
        if text[i] == "\n":
            i += 1
            continue
        if text[i] in "#;":
            while i < n and text[i] != "\n":
                i += 1
            continue
        start = i
        while i < n and text[i] not in "=\n":
            i += 1
        if i >= n or text[i] == "\n":
            continue  # no "=": ignored
        key = text[start:i].strip(" \t\r")
        i += 1
        while i < n and text[i] in " \t\r":
            i += 1
        out: list[str] = []
        if i < n and text[i] == "'":
            end = text.index("'", i + 1)
            out.append(text[i + 1 : end])
            i = rest_of_line_is_blank(end + 1)
        elif i < n and text[i] == '"':
            i += 1
            while text[i] != '"':
                if text[i] == "\\":
                    nxt = text[i + 1]
                    if nxt != "\n":
                        out.append(nxt if nxt in '"\\`$' else "\\" + nxt)
                    i += 2
                else:
                    out.append(text[i])
                    i += 1
            i = rest_of_line_is_blank(i + 1)
        else:
            while i < n and text[i] != "\n":
                if text[i] == "\\":
                    if i + 1 < n and text[i + 1] != "\n":
                        out.append(text[i + 1])
                    i += 2
                else:
                    out.append(text[i])
                    i += 1
            out = ["".join(out).rstrip(" \t\r")]
        env[key] = "".join(out)
    return env


#: What the operator's shell has when compose reads the file (bare and "..." values see it).
COMPOSE_SHELL = {"HOME": "/home/operator"}
_COMPOSE_VARIABLE = re.compile(r"\$\$|\$\{([^}]*)\}|\$([A-Za-z_][A-Za-z0-9_]*)")


def _compose_interpolate(value: str, known: dict[str, str]) -> str:
    def lookup(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = (match.group(1) or match.group(2)).split(":-")[0].split("-")[0]
        return known.get(name, COMPOSE_SHELL.get(name, ""))

    return _COMPOSE_VARIABLE.sub(lookup, value)


def parse_compose_env_file(text: str) -> dict[str, str]:
    """Compose's env_file rules (docs.docker.com/compose/env-file), single-line values.

    # starts a comment line; ``VAR=VAL # c`` has an inline comment, ``VAR=VAL#c`` not. Bare and
    "..." values are interpolated ($VAR, ${VAR}, $$ for $); "..." knows \\n \\r \\t \\\\ \\";
    '...' is literal but for \\'.
    """
    env: dict[str, str] = {}
    for raw in text.split("\n"):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.removeprefix("export ").partition("=")
        assert sep, f"compose refuses a line without '=': {line!r}"
        key, value = key.strip(), value.strip()
        if value.startswith("'"):
            match = re.fullmatch(r"'((?:\\'|[^'])*)'\s*(#.*)?", value)
            assert match, f"unterminated '...': {line!r}"
            env[key] = match.group(1).replace("\\'", "'")
        elif value.startswith('"'):
            match = re.fullmatch(r'"((?:\\.|[^"\\])*)"\s*(#.*)?', value)
            assert match, f'unterminated "...": {line!r}'
            escapes = {"n": "\n", "r": "\r", "t": "\t", "\\": "\\", '"': '"'}
            inner = re.sub(r"\\(.)", lambda m: escapes.get(m.group(1), "\\" + m.group(1)), match.group(1))
            env[key] = _compose_interpolate(inner, env)
        else:
            env[key] = _compose_interpolate(re.split(r"\s#", value, maxsplit=1)[0].rstrip(), env)
    return env


def parse_with_python_dotenv(text: str) -> dict[str, str]:
    """python-dotenv itself, interpolating (it expands only ${VAR}, not a bare $VAR)."""
    # Not a declared dependency: only the cases read with it skip when it is missing.
    dotenv = pytest.importorskip("dotenv", reason="python-dotenv is not installed")
    values = dotenv.dotenv_values(stream=io.StringIO(text), interpolate=True)
    assert None not in values.values(), "a line python-dotenv could not read"
    return {k: v for k, v in values.items() if v is not None}


READERS = pytest.mark.parametrize(
    "parse", [parse_systemd_environment_file, parse_compose_env_file, parse_with_python_dotenv]
)


def test_the_readers_follow_their_rules() -> None:
    """Guard the guards: the readers differ where systemd, compose and python-dotenv differ."""
    text = '# c\nA=1\nB=\'$HOME x\'\nC="a\\"b"\nD=$HOME\nF=${HOME}\n  E = v  \n'
    common = {"A": "1", "B": "$HOME x", "C": 'a"b', "E": "v"}
    systemd = parse_systemd_environment_file(text + "; c\nnoequals\n")
    assert systemd == {**common, "D": "$HOME", "F": "${HOME}"}  # systemd expands nothing
    assert parse_compose_env_file(text) == {**common, "D": "/home/operator", "F": "/home/operator"}
    dotenv_values = parse_with_python_dotenv(text)
    assert dotenv_values["B"] == "$HOME x" and dotenv_values["C"] == 'a"b'
    assert dotenv_values["F"] != "${HOME}"


# --- the env file ------------------------------------------------------------------------------


@READERS
def test_env_file_round_trips(parse: Any, ca_pem: bytes) -> None:
    bundle = make_bundle(ca_pem)
    text = bundle.to_env_file()
    assert parse(text) == bundle.environment()
    parsed = parse(text)
    password = urllib.parse.urlsplit(parsed["FEDCAST_AMQP_URL"]).password
    assert urllib.parse.unquote(password or "") == AWKWARD_PASSWORD


#: Characters systemd, compose or a shell treat specially, and a few plain ones.
TRICKY = "aZ09_-.:/@%$#=;\"`{}!*~+&|<>()[]?é \t'\\\n"


@READERS
@pytest.mark.parametrize(
    "value",
    [
        "a #b",
        "a#b",
        " lead",
        "trail ",
        ";x",
        "#x",
        "=x",
        '"dq"',
        "a b",
        "%24HOME",
        "`id`",
    ],
)
def test_special_characters_round_trip(parse: Any, value: str) -> None:
    assert parse(env_file_line("FEDCAST_X", value) + "\n") == {"FEDCAST_X": value}


@READERS
@given(
    value=st.one_of(
        st.text(alphabet="ABCxyz019_-", min_size=1),  # token_urlsafe
        st.text(alphabet="0123456789abcdef", min_size=1),  # hex
        st.builds(lambda s: urllib.parse.quote(s, safe=""), st.text()),  # %-encoded
        st.text(alphabet=TRICKY),  # what the formats treat specially
        st.text(),  # anything: carried exactly, or refused
    )
)
def test_any_value_is_carried_exactly_or_refused(parse: Any, value: str) -> None:
    try:
        line = env_file_line("FEDCAST_X", value)
    except ConfigurationError:
        assert {"'", "\\", "$"} & set(value) or not value.isprintable()
        return
    assert parse(line + "\n") == {"FEDCAST_X": value}


def test_values_are_bare_when_they_can_be(ca_pem: bytes) -> None:
    bundle = make_bundle(ca_pem)
    for line in bundle.to_env_file().splitlines():
        if not line.startswith("#"):
            assert "'" not in line and '"' not in line, line  # docker run --env-file reads them too


@pytest.mark.parametrize(
    "value", ["it's", "back\\slash", "two\nlines", "nul\x00", "cr\r", "bom\ufeff", "$HOME", "${HOME}", "a$"]
)
def test_values_no_env_file_carries_alike_are_refused_without_echoing_them(value: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        env_file_line("FEDCAST_SECRET", value)
    assert value not in str(caught.value)


def test_env_file_has_everything_but_no_pem(ca_pem: bytes) -> None:
    bundle = make_bundle(ca_pem)
    env = parse_systemd_environment_file(bundle.to_env_file())
    assert env["FEDCAST_CLIENT_ID"] == DEVICE
    assert env["FEDCAST_FEDERATION"] == FEDERATION
    assert env["FEDCAST_ENROLLMENT_TOKEN"] == bundle.enrollment_token
    assert env["FEDCAST_KEYSERVER_VERIFY_KEY"] == VK_HEX
    assert env["FEDCAST_AMQP_URL"].startswith("amqps://")
    assert env["FEDCAST_AMQP_DECLARE"] == "0"
    assert env["FEDCAST_AMQP_CA_FILE"] == DEVICE_CA_PATH
    assert env["FEDCAST_METRICS_HOST"] == "127.0.0.1"
    assert env["FEDCAST_MIN_ONLINE"] == "3" and env["FEDCAST_TASK"] == "fedmf"
    assert "BEGIN" not in bundle.to_env_file()


def test_without_a_broker_login_the_bundle_declares_nothing_about_the_broker() -> None:
    bundle = make_bundle(None, amqp_url=None)
    env = bundle.environment()
    assert not {"FEDCAST_AMQP_URL", "FEDCAST_AMQP_DECLARE", "FEDCAST_AMQP_CA_FILE"} & set(env)
    assert "set FEDCAST_AMQP_URL" in bundle.to_env_file()
    secret = bundle.secret_manifest()["stringData"]
    assert not {"amqp-username", "amqp-password", "ca.pem", "FEDCAST_AMQP_URL"} & set(secret)  # type: ignore[arg-type]


# --- the edge takes it -------------------------------------------------------------------------


@READERS
def test_the_edge_starts_from_the_env_file_alone(parse: Any, ca_pem: bytes, tmp_path: Path) -> None:
    bundle = make_bundle(ca_pem)
    written = bundle.write(tmp_path / "bundle")
    env = parse((tmp_path / "bundle" / f"{DEVICE}.env").read_text())
    # On the device ca.pem is installed at DEVICE_CA_PATH; here it stays where it was written.
    assert env["FEDCAST_AMQP_CA_FILE"] == DEVICE_CA_PATH
    env["FEDCAST_AMQP_CA_FILE"] = str(next(p for p in written if p.name == "ca.pem"))
    env["FEDCAST_STATE_DIR"] = str(tmp_path / "state")

    config = EdgeConfig.from_env(env)
    assert config.client_id == DEVICE and config.federation == FEDERATION
    assert config.enrollment_token == bundle.enrollment_token
    assert config.keyserver_verify_key == bytes.fromhex(VK_HEX)
    assert config.amqp_url == bundle.amqp_url
    assert config.min_online == 3
    transport = make_transport(
        config.amqp_url,
        config.federation,
        service=config.client_id,
        identity=client_endpoint(config.client_id),
        env=env,
    )
    assert isinstance(transport, AmqpTransport)
    assert transport.config.declare is False  # provisioned: declares nothing
    assert transport.config.tls is not None
    transport.config.tls.client_context()  # the pinned CA loads
    assert ObservabilityConfig.from_env(env).metrics_host == "127.0.0.1"


# --- the Kubernetes Secret ---------------------------------------------------------------------


def test_secret_manifest_is_a_valid_secret_with_every_key(ca_pem: bytes) -> None:
    bundle = make_bundle(ca_pem)
    doc = yaml.safe_load(bundle.to_k8s_secret("fedcast"))
    assert doc == bundle.secret_manifest("fedcast")
    assert doc["apiVersion"] == "v1" and doc["kind"] == "Secret" and doc["type"] == "Opaque"
    assert doc["metadata"]["name"] == f"fedcast-device-{DEVICE}"
    assert doc["metadata"]["namespace"] == "fedcast"
    data = doc["stringData"]
    expected = set(bundle.environment(kubernetes=True)) | {
        "token",
        "amqp-username",
        "amqp-password",
        "ca.pem",
    }
    assert set(data) == expected
    assert data["token"] == data["FEDCAST_ENROLLMENT_TOKEN"] == bundle.enrollment_token
    assert data["amqp-username"] == f"fedcast.{FEDERATION}.{DEVICE}"
    assert data["amqp-password"] == AWKWARD_PASSWORD  # unencoded, through YAML's escapes
    assert data["ca.pem"].encode() == bundle.ca_pem
    assert "FEDCAST_METRICS_HOST" not in data  # the kubelet probes the metrics port from outside
    assert all(re.fullmatch(r"[-._a-zA-Z0-9]+", key) for key in data)  # the API server's rule

    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    kubernetes_validate.validate(doc, "1.30.0", strict=True)
    doc["stringData"] = {"k": 1}
    with pytest.raises(kubernetes_validate.ValidationError):  # the validation can fail
        kubernetes_validate.validate(doc, "1.30.0", strict=True)


def test_secret_has_the_keys_the_edge_daemonset_reads(ca_pem: bytes) -> None:
    """k8s/overlays/edge's device DaemonSet reads keys of fedcast-device-<id>: the bundle has them."""
    from tests.unit.deploy.conftest import render

    refs: set[tuple[str, str]] = set()
    for doc in render("overlays/edge"):
        if doc["kind"] != "DaemonSet":
            continue
        for container in doc["spec"]["template"]["spec"]["containers"]:
            for var in container.get("env", []):
                ref = var.get("valueFrom", {}).get("secretKeyRef")
                if ref and ref["name"].startswith("fedcast-device-"):
                    refs.add((ref["name"], ref["key"]))
    assert refs, "the edge overlay reads no device Secret"
    for name, key in refs:
        client_id = name.removeprefix("fedcast-device-")
        manifest = make_bundle(ca_pem, client_id=client_id).secret_manifest()
        assert manifest["metadata"]["name"] == name  # type: ignore[index]
        assert key in manifest["stringData"]  # type: ignore[operator]


def test_a_client_id_kubernetes_cannot_take_gets_no_secret(ca_pem: bytes, tmp_path: Path) -> None:
    bundle = make_bundle(ca_pem, client_id="Line1_Pi")
    assert not bundle.kubernetes_nameable
    with pytest.raises(ConfigurationError, match="cannot name a Kubernetes Secret"):
        bundle.to_k8s_secret()
    names = {p.name for p in bundle.write(tmp_path)}
    assert names == {"Line1_Pi.env", "ca.pem"}


def test_bad_namespace_is_refused(ca_pem: bytes, tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="namespace"):
        make_bundle(ca_pem).write(tmp_path / "b", namespace="Not_A_Namespace")
    assert not (tmp_path / "b").exists()


# --- files -------------------------------------------------------------------------------------


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_write_modes_and_no_leftovers(ca_pem: bytes, tmp_path: Path) -> None:
    directory = tmp_path / "bundles" / DEVICE
    bundle = make_bundle(ca_pem)
    written = bundle.write(directory)
    assert [p.name for p in written] == [f"{DEVICE}.env", "ca.pem", f"{DEVICE}-secret.yaml"]
    assert mode(directory) == 0o700
    assert mode(directory / f"{DEVICE}.env") == 0o600
    assert mode(directory / "ca.pem") == 0o644
    assert mode(directory / f"{DEVICE}-secret.yaml") == 0o600
    assert (directory / "ca.pem").read_bytes() == bundle.ca_pem
    assert sorted(os.listdir(directory)) == sorted(p.name for p in written)  # no temporary files
    # Written again (a re-provisioned device): replaced, same modes.
    again = make_bundle(ca_pem)
    again.write(directory)
    assert again.enrollment_token in (directory / f"{DEVICE}.env").read_text()
    assert mode(directory / f"{DEVICE}.env") == 0o600


# --- validation and secrecy --------------------------------------------------------------------


def test_repr_masks_every_secret(ca_pem: bytes) -> None:
    password = secrets.token_urlsafe(32)
    bundle = make_bundle(ca_pem, password=password)
    for text in (repr(bundle), str(bundle), f"{bundle}", f"{[bundle]}"):
        assert bundle.enrollment_token not in text
        assert password not in text
        assert "BEGIN" not in text
        assert DEVICE in text and "broker.plant" in text  # still useful


def test_ca_is_reduced_to_its_certificates(ca_pem: bytes) -> None:
    commented = b"# the plant's CA\n" + ca_pem + b"\n\n"
    assert canonical_ca_pem(commented) == ca_pem
    with pytest.raises(ConfigurationError, match="private key"):
        canonical_ca_pem(ca_pem + make_ca().key_pem)
    with pytest.raises(ConfigurationError, match="not a PEM certificate"):
        canonical_ca_pem(b"not a certificate")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"amqp_url": "amqps://host:5671/"}, "user and password"),
        ({"amqp_url": "http://u:p@host/"}, "amqp"),
        ({"ca_pem": None, "amqp_url": "amqps://u:p@host:5671/"}, "amqps:// needs the broker's CA"),
        ({"keyserver_verify_key": "ab" * 31}, "32 bytes"),
        ({"keyserver_verify_key": "zz" * 32}, "hex"),
        ({"enrollment_token": ""}, "token"),
        ({"client_id": "pi 01"}, "client id"),
        ({"settings": {"FEDCAST_AMQP_URL": "amqp://x"}}, "set by the bundle"),
        ({"settings": {"PATH": "/bin"}}, "FEDCAST_"),
        ({"settings": {"FEDCAST_TASK": "it's"}}, "FEDCAST_TASK"),
        ({"ca_path": "ca.pem"}, "absolute"),
    ],
)
def test_bundle_refuses(ca_pem: bytes, change: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        make_bundle(**{"ca_pem": ca_pem, **change})


def test_plain_amqp_with_a_ca_is_refused(ca_pem: bytes) -> None:
    with pytest.raises(ConfigurationError, match="amqp:// takes none"):
        make_bundle(ca_pem, amqp_url=device_url("pw", tls=False))


# --- fedcast keyserver add-device --bundle ----------------------------------------------------


class FakeAdmin:
    """A BrokerAdmin stand-in: records every call; put_user returns PASSWORD (or fails)."""

    calls: ClassVar[list[tuple[str, tuple[Any, ...]]]] = []
    password = AWKWARD_PASSWORD
    fail = False

    def __init__(self, url: str, vhost: str = "/") -> None:
        self.url = url

    def __getattr__(self, name: str) -> Any:
        def record(*args: Any) -> None:
            FakeAdmin.calls.append((name, args))

        return record

    def put_user(self, user: str, password: str | None = None) -> str:
        FakeAdmin.calls.append(("put_user", (user,)))
        if FakeAdmin.fail:
            raise TransportError("broker management API PUT users: HTTP 503")
        return FakeAdmin.password


@pytest.fixture
def keyserver_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A key service state dir that has started once (its verify key exists), nothing else set."""
    for name in [n for n in os.environ if n.startswith("FEDCAST_")]:
        monkeypatch.delenv(name)
    state = tmp_path / "keyserver"
    monkeypatch.setenv("FEDCAST_STATE_DIR", str(state))
    monkeypatch.setenv("FEDCAST_FEDERATION", FEDERATION)
    write_json_atomic(state / VERIFY_KEY_FILE, {"verify_key": VK_HEX}, secret=False)
    FakeAdmin.calls, FakeAdmin.fail = [], False
    monkeypatch.setattr(services_cli, "admin_from_env", _fake_admin_from_env)
    return state


def _fake_admin_from_env(env: Any, url: str | None = None, *, vhost: str = "/") -> FakeAdmin | None:
    url = url or env.get("FEDCAST_BROKER_ADMIN_URL", "")
    return FakeAdmin(url, vhost) if url else None


@pytest.fixture
def ca_file(tmp_path: Path, ca_pem: bytes) -> Path:
    path = tmp_path / "pki" / "ca.pem"
    path.parent.mkdir()
    path.write_bytes(ca_pem)
    return path


def add_device(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["keyserver", "add-device", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def status(state: Path) -> DeviceStatus | None:
    with RegistryStore(KeyServerConfig(state).registry_path) as store:
        return store.status(DEVICE)


def test_cli_bundle_with_broker_login_over_tls(
    keyserver_dir: Path, ca_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    monkeypatch.setenv("FEDCAST_BROKER_ADMIN_URL", "http://admin:admin-secret@rabbitmq:15672")
    monkeypatch.setenv("FEDCAST_TASK", "fedmf")
    out_dir = tmp_path / "out"
    code, out, err = add_device(
        capsys, DEVICE, "--bundle", str(out_dir), "--amqp-host", "broker.plant", "--ca-file", str(ca_file)
    )
    assert code == 0, err
    env = parse_systemd_environment_file((out_dir / f"{DEVICE}.env").read_text())
    url = urllib.parse.urlsplit(env["FEDCAST_AMQP_URL"])
    assert (url.scheme, url.hostname, url.port, url.path) == ("amqps", "broker.plant", 5671, "/")
    assert urllib.parse.unquote(url.username or "") == f"fedcast.{FEDERATION}.{DEVICE}"
    assert urllib.parse.unquote(url.password or "") == AWKWARD_PASSWORD
    assert env["FEDCAST_AMQP_DECLARE"] == "0" and env["FEDCAST_TASK"] == "fedmf"
    assert env["FEDCAST_KEYSERVER_VERIFY_KEY"] == VK_HEX
    # provision_device ran: the device's user with its grant, in the key service's federation.
    assert ("put_user", (f"fedcast.{FEDERATION}.{DEVICE}",)) in FakeAdmin.calls
    assert any(
        name == "grant" and args[0] == f"fedcast.{FEDERATION}.{DEVICE}" for name, args in FakeAdmin.calls
    )
    # The token in the bundle is the one the registry holds.
    with RegistryStore(KeyServerConfig(keyserver_dir).registry_path) as store:
        assert store.enroll(DEVICE, env["FEDCAST_ENROLLMENT_TOKEN"], 5, b"\x01" * 32) is True
    # Where the files went, never what is in them.
    for name in (f"{DEVICE}.env", "ca.pem", f"{DEVICE}-secret.yaml"):
        assert str(out_dir / name) in out
    for secret in (env["FEDCAST_ENROLLMENT_TOKEN"], AWKWARD_PASSWORD, url.password or "", "admin-secret"):
        assert secret not in out and secret not in err
    assert "plaintext" not in err


def test_cli_plain_amqp_warns(
    keyserver_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    monkeypatch.setenv("FEDCAST_BROKER_ADMIN_URL", "http://admin:pw@rabbitmq:15672")
    code, _, err = add_device(capsys, DEVICE, "--bundle", str(tmp_path / "o"), "--amqp-host", "rabbitmq")
    assert code == 0
    assert "plaintext" in err and "development only" in err
    env = parse_systemd_environment_file((tmp_path / "o" / f"{DEVICE}.env").read_text())
    assert env["FEDCAST_AMQP_URL"].startswith("amqp://") and ":5672/" in env["FEDCAST_AMQP_URL"]
    assert "FEDCAST_AMQP_CA_FILE" not in env and not (tmp_path / "o" / "ca.pem").exists()


def test_cli_bundle_without_broker_admin(keyserver_dir: Path, tmp_path: Path, capsys: Any) -> None:
    code, out, err = add_device(capsys, DEVICE, "--bundle", str(tmp_path / "o"), "--namespace", "plant")
    assert code == 0
    assert "no broker login" in err
    assert not FakeAdmin.calls
    env = parse_systemd_environment_file((tmp_path / "o" / f"{DEVICE}.env").read_text())
    assert "FEDCAST_AMQP_URL" not in env
    assert env["FEDCAST_ENROLLMENT_TOKEN"] not in out + err
    secret = yaml.safe_load((tmp_path / "o" / f"{DEVICE}-secret.yaml").read_text())
    assert secret["metadata"]["namespace"] == "plant"
    assert status(keyserver_dir) is DeviceStatus.PROVISIONED


@pytest.mark.parametrize(
    ("setup", "argv", "message"),
    [
        ("no-verify-key", [], "never started"),
        ("admin", [], "--amqp-host"),
        ("admin", ["--amqp-host", "user:pw@broker:5671"], "no user, password or path"),
        ("key-in-ca", ["--ca-file", "{key}"], "private key"),
        ("", ["--ca-file", "{missing}"], "cannot read --ca-file"),
        ("", ["--namespace", "Bad_NS"], "namespace"),
    ],
)
def test_cli_refuses_before_issuing_the_token(
    keyserver_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: Any,
    setup: str,
    argv: list[str],
    message: str,
) -> None:
    ca = make_ca()
    key_file = tmp_path / "ca-and-key.pem"
    key_file.write_bytes(ca.cert_pem + ca.key_pem)
    if setup == "no-verify-key":
        (keyserver_dir / VERIFY_KEY_FILE).unlink()
    if setup == "admin":
        monkeypatch.setenv("FEDCAST_BROKER_ADMIN_URL", "http://admin:pw@rabbitmq:15672")
    argv = [a.format(key=key_file, missing=tmp_path / "missing.pem") for a in argv]
    code, _, err = add_device(capsys, DEVICE, "--bundle", str(tmp_path / "o"), *argv)
    assert code == 2 and message in err
    assert status(keyserver_dir) is None  # no token was issued
    assert not FakeAdmin.calls
    assert not (tmp_path / "o").exists()


def test_cli_broker_failure_still_delivers_the_token(
    keyserver_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    monkeypatch.setenv("FEDCAST_BROKER_ADMIN_URL", "http://admin:pw@rabbitmq:15672")
    FakeAdmin.fail = True
    code, _, err = add_device(capsys, DEVICE, "--bundle", str(tmp_path / "o"), "--amqp-host", "rabbitmq:5672")
    assert code == 2
    assert "broker user of pi-line1-01 was not created" in err and "HTTP 503" in err
    env = parse_systemd_environment_file((tmp_path / "o" / f"{DEVICE}.env").read_text())
    assert "FEDCAST_AMQP_URL" not in env
    with RegistryStore(KeyServerConfig(keyserver_dir).registry_path) as store:
        assert store.enroll(DEVICE, env["FEDCAST_ENROLLMENT_TOKEN"], 5, b"\x01" * 32) is True


def test_cli_without_bundle_is_unchanged_and_bundle_options_need_it(
    keyserver_dir: Path, ca_file: Path, capsys: Any
) -> None:
    code, out, _ = add_device(capsys, DEVICE, "--ca-file", str(ca_file))
    assert code == 2
    assert status(keyserver_dir) is None
    code, out, _ = add_device(capsys, DEVICE)
    assert code == 0 and re.fullmatch(r"[A-Za-z0-9_-]{43}\n", out)


def test_cli_help_mentions_the_bundle(capsys: Any) -> None:
    with pytest.raises(SystemExit):
        main(["keyserver", "add-device", "--help"])
    help_text = capsys.readouterr().out
    for option in ("--bundle", "--amqp-host", "--ca-file", "--namespace"):
        assert option in help_text


def test_the_documented_bundle_command_parses() -> None:
    """docs/DEPLOY.md's bundle command is one the CLI takes, with the options it documents."""
    from fedcast.cli import build_parser

    deploy = (Path(__file__).resolve().parents[2] / "docs" / "DEPLOY.md").read_text()
    commands = [
        line
        for line in deploy.splitlines()
        if line.startswith("fedcast keyserver add-device") and "--bundle" in line
    ]
    assert commands, "DEPLOY.md shows no `fedcast keyserver add-device ... --bundle` command"
    for command in commands:
        args = build_parser().parse_args(command.split()[1:])
        assert args.bundle and args.amqp_host and args.ca_file
