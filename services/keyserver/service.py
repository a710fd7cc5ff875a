"""The key service process: configuration, state on disk, and the asyncio shell over the handler.

State directory (``FEDCAST_STATE_DIR``), created 0700:

* ``system-params.json`` (0644): the federation's SystemParams (the RSA modulus
  N, never its factors), generated once on the first start (or taken from
  ``FEDCAST_MODULUS``) and loaded and re-validated on every later one. Files
  written by protocol version 1 are refused with what to do, never converted;
* ``signing-key.json`` (0600): the key service's Ed25519 key, which signs every
  reply; ``verify-key.json`` (0644) holds its public half for clients to pin;
* ``registry.sqlite3`` (0600): devices and the aggregator (:mod:`.store`).

Environment (:meth:`KeyServerConfig.from_env`); unset means the default shown:

=================================  ==========================================================
``FEDCAST_STATE_DIR``              state directory (``/var/lib/fedcast/keyserver``)
``FEDCAST_FEDERATION``             federation id, 1-64 of ``[A-Za-z0-9._-]`` (``default``)
``FEDCAST_MODULUS_BITS``           size of a generated modulus N: 2048 or 3072 (2048)
``FEDCAST_MODULUS``                an operator-supplied N in hex (e.g. from a multi-party
                                   ceremony) instead of generating one; validated (none)
``FEDCAST_MODULUS_FILE``           ... or a file holding it
``FEDCAST_FRAC_BITS``              fixed-point fraction bits (16)
``FEDCAST_CLIP``                   clip bound C of the encoding (4.0)
``FEDCAST_MAX_CLIENTS``            largest online set the packing is sized for (1000)
``FEDCAST_MIN_ONLINE``             smallest online set clients accept (3; at least 2)
``FEDCAST_ADMIN_TOKEN``            admin token for REVOKE (unset: revocation over the wire off)
``FEDCAST_ADMIN_TOKEN_FILE``       ... or a file holding it (a mounted Kubernetes Secret)
``FEDCAST_AGGREGATOR_TOKEN``       token the aggregator registers with (unset: registration off)
``FEDCAST_AGGREGATOR_TOKEN_FILE``  ... or a file holding it
``FEDCAST_DEVICE_TOKENS``          device tokens to import on start: a JSON object file
                                   ``{client_id: token}`` or a directory with one file per
                                   client id holding its token (a mounted Secret) (none)
``FEDCAST_MAX_MESSAGE_BYTES``      largest request accepted (64 MiB)
=================================  ==========================================================

Frac bits, clip and max clients are fixed with the parameters on the first
start; a later start with other values is refused rather than silently
serving parameters the configuration does not describe.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from fedcast.services.keyfiles import load_or_create_signing_key
from fedcast.services.keyserver.handlers import KEYSERVER_SENDER, KeyServiceHandler, error_reply, reply_type
from fedcast.services.keyserver.store import RegistryStore, check_token
from fedcast.services.lifecycle import unless_stopped
from fedcast.services.runtime import RejectLog
from fedcast.shared.crypto.elgamal import DEFAULT_MIN_ONLINE
from fedcast.shared.crypto.group import (
    DEFAULT_MODULUS_BITS,
    SUPPORTED_MODULUS_BITS,
    GroupParams,
    validate_modulus,
)
from fedcast.shared.crypto.modulus import generate_group, insecure_test_group
from fedcast.shared.crypto.signing import SigningKeyPair
from fedcast.shared.encoding import DEFAULT_CLIP, DEFAULT_FRAC_BITS, FixedPointEncoding
from fedcast.shared.errors import (
    ConfigurationError,
    FedcastError,
    InternalError,
    InvalidParametersError,
    KeyStorageError,
    TransportError,
)
from fedcast.shared.keystore import read_json, write_json_atomic
from fedcast.shared.metrics import (
    MESSAGE_BYTES_RECEIVED,
    MESSAGE_BYTES_SENT,
    MESSAGES_RECEIVED,
    MESSAGES_SENT,
)
from fedcast.shared.params import DEFAULT_MAX_CLIENTS, SystemParams
from fedcast.shared.transport.base import KEYSERVER, Delivery, Transport
from fedcast.shared.wire.codec import ID_PATTERN, WireContext
from fedcast.shared.wire.messages import KEYSERVER_ROUND, Body, ErrorReply, Header, ParamsReply
from fedcast.shared.wire.serde import DEFAULT_MAX_MESSAGE_BYTES, SizeLimits, decode, encode

__all__ = [
    "PARAMS_FILE",
    "REGISTRY_FILE",
    "SIGNING_KEY_FILE",
    "VERIFY_KEY_FILE",
    "KeyServer",
    "KeyServerConfig",
    "load_device_tokens",
]

log = logging.getLogger(__name__)

PARAMS_FILE = "system-params.json"
SIGNING_KEY_FILE = "signing-key.json"
VERIFY_KEY_FILE = "verify-key.json"
REGISTRY_FILE = "registry.sqlite3"
_SERVICE = "keyserver"  # the metrics' service label
_MAX_MESSAGE_BYTES = 128 * 1024 * 1024  # RabbitMQ's own ceiling


@dataclass(frozen=True)
class KeyServerConfig:
    """Validated key-service settings (see the module docstring). Tokens never appear in the repr."""

    state_dir: Path
    federation: str = "default"
    modulus_bits: int = DEFAULT_MODULUS_BITS
    modulus: int | None = None  # operator-supplied N; None: generate one on the first start
    frac_bits: int = DEFAULT_FRAC_BITS
    clip: float = DEFAULT_CLIP
    max_clients: int = DEFAULT_MAX_CLIENTS
    min_online: int = DEFAULT_MIN_ONLINE
    admin_token: str = field(default="", repr=False)
    aggregator_token: str = field(default="", repr=False)
    device_tokens: Path | None = None
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    #: Tests only: generate/accept the small INSECURE test group instead of a real one.
    allow_insecure_test_group: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "state_dir", Path(self.state_dir))
        if not ID_PATTERN.fullmatch(self.federation):
            raise ConfigurationError(f"federation id must be 1-64 of [A-Za-z0-9._-]: {self.federation!r}")
        if self.modulus is not None:
            try:
                validate_modulus(self.modulus, allow_insecure=self.allow_insecure_test_group)
            except InvalidParametersError as exc:
                raise ConfigurationError(f"FEDCAST_MODULUS is not usable: {exc}") from exc
        if self.modulus_bits not in SUPPORTED_MODULUS_BITS:
            raise ConfigurationError(
                f"modulus_bits must be one of {SUPPORTED_MODULUS_BITS}, got {self.modulus_bits}"
            )
        FixedPointEncoding(self.frac_bits, self.clip)  # raises ConfigurationError when out of range
        if type(self.max_clients) is not int or self.max_clients < 2:
            raise ConfigurationError("max_clients must be an int >= 2")
        if type(self.min_online) is not int or not 2 <= self.min_online <= self.max_clients:
            raise ConfigurationError("min_online must be an int in [2, max_clients]")
        for name in ("admin_token", "aggregator_token"):
            if getattr(self, name):
                check_token(getattr(self, name), name)
        if self.admin_token and self.admin_token == self.aggregator_token:
            raise ConfigurationError("admin_token and aggregator_token must differ")
        if not 1024 <= self.max_message_bytes <= _MAX_MESSAGE_BYTES:
            raise ConfigurationError("max_message_bytes must be in 1 KiB..128 MiB")

    def __repr__(self) -> str:
        def mask(token: str) -> str:
            return "'<redacted>'" if token else "''"

        return (
            f"KeyServerConfig(state_dir={str(self.state_dir)!r}, federation={self.federation!r}, "
            f"modulus_bits={self.modulus_bits}, modulus={'supplied' if self.modulus else None}, "
            f"frac_bits={self.frac_bits}, clip={self.clip}, "
            f"max_clients={self.max_clients}, min_online={self.min_online}, "
            f"admin_token={mask(self.admin_token)}, aggregator_token={mask(self.aggregator_token)}, "
            f"device_tokens={self.device_tokens!r}, max_message_bytes={self.max_message_bytes}, "
            f"allow_insecure_test_group={self.allow_insecure_test_group})"
        )

    @property
    def registry_path(self) -> Path:
        return self.state_dir / REGISTRY_FILE

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> KeyServerConfig:
        """Read the ``FEDCAST_*`` variables of the module docstring (``os.environ`` by default)."""
        env = os.environ if environ is None else environ

        def number(name: str, default: int) -> int:
            raw = env.get(name, "").strip()
            try:
                return int(raw) if raw else default
            except ValueError:
                raise ConfigurationError(f"{name} must be an integer, got {raw!r}") from None

        raw_clip = env.get("FEDCAST_CLIP", "").strip()
        try:
            clip = float(raw_clip) if raw_clip else DEFAULT_CLIP
        except ValueError:
            raise ConfigurationError(f"FEDCAST_CLIP must be a number, got {raw_clip!r}") from None
        tokens = env.get("FEDCAST_DEVICE_TOKENS", "").strip()
        if env.get("FEDCAST_P_BITS", "").strip():
            raise ConfigurationError(
                "FEDCAST_P_BITS is protocol version 1's setting (a prime modulus); use FEDCAST_MODULUS_BITS"
            )
        raw_modulus = _secret_from_env(env, "FEDCAST_MODULUS")
        try:
            modulus = int(raw_modulus.removeprefix("0x"), 16) if raw_modulus else None
        except ValueError:
            raise ConfigurationError("FEDCAST_MODULUS must be a hexadecimal integer") from None
        return cls(
            state_dir=Path(env.get("FEDCAST_STATE_DIR", "").strip() or "/var/lib/fedcast/keyserver"),
            federation=env.get("FEDCAST_FEDERATION", "").strip() or "default",
            modulus_bits=number("FEDCAST_MODULUS_BITS", DEFAULT_MODULUS_BITS),
            modulus=modulus,
            frac_bits=number("FEDCAST_FRAC_BITS", DEFAULT_FRAC_BITS),
            clip=clip,
            max_clients=number("FEDCAST_MAX_CLIENTS", DEFAULT_MAX_CLIENTS),
            min_online=number("FEDCAST_MIN_ONLINE", DEFAULT_MIN_ONLINE),
            admin_token=_secret_from_env(env, "FEDCAST_ADMIN_TOKEN"),
            aggregator_token=_secret_from_env(env, "FEDCAST_AGGREGATOR_TOKEN"),
            device_tokens=Path(tokens) if tokens else None,
            max_message_bytes=number("FEDCAST_MAX_MESSAGE_BYTES", DEFAULT_MAX_MESSAGE_BYTES),
        )


def _secret_from_env(env: Mapping[str, str], name: str) -> str:
    """``NAME`` or the content of the file ``NAME_FILE`` (not both); trailing newline stripped."""
    value, path = env.get(name, ""), env.get(f"{name}_FILE", "").strip()
    if value and path:
        raise ConfigurationError(f"set {name} or {name}_FILE, not both")
    if not path:
        return value.strip()
    try:
        return Path(path).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigurationError(f"{name}_FILE: cannot read {path}") from exc


def load_device_tokens(path: Path) -> dict[str, str]:
    """Device tokens from a JSON object file or a directory of ``<client id>`` files.

    In a directory, dot-files are skipped: a mounted Kubernetes Secret keeps its
    real files in ``..data`` and shows each key as a symlink named after it.
    File modes are not checked: the operator does not control a mount's mode.
    """
    try:
        if path.is_dir():
            return {
                entry.name: entry.read_text(encoding="utf-8").strip()
                for entry in sorted(path.iterdir())
                if not entry.name.startswith(".") and entry.is_file()
            }
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigurationError(f"cannot read device tokens from {path}") from exc
    except ValueError as exc:
        raise ConfigurationError(f"device tokens file {path} is not JSON") from exc
    if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
        raise ConfigurationError(f"device tokens file {path} must be a JSON object of strings")
    return dict(data)


class KeyServer:
    """Serves the ``keyserver`` endpoint until stopped. Owns its store; the caller owns the transport."""

    def __init__(self, config: KeyServerConfig, transport: Transport) -> None:
        self.config = config
        self._transport = transport
        self._params: SystemParams | None = None
        self._signer: SigningKeyPair | None = None
        self._store: RegistryStore | None = None
        self._handler: KeyServiceHandler | None = None
        self._ctx: WireContext | None = None
        self._limits: SizeLimits | None = None
        self._rejects = RejectLog(_SERVICE)

    @property
    def is_ready(self) -> bool:
        """Serving requests: started and not stopped (``/readyz``)."""
        return self._handler is not None

    @property
    def params(self) -> SystemParams:
        if self._params is None:
            raise ConfigurationError("key server not started")
        return self._params

    @property
    def verify_key(self) -> bytes:
        """The key clients pin to check replies (also in ``verify-key.json``)."""
        if self._signer is None:
            raise ConfigurationError("key server not started")
        return self._signer.verify_key

    @property
    def store(self) -> RegistryStore:
        """The open registry (to provision devices in-process, e.g. in ``fedcast demo``)."""
        if self._store is None:
            raise ConfigurationError("key server not started")
        return self._store

    async def start(self) -> None:
        """Load or create the state, open the registry, import tokens, consume ``keyserver``."""
        cfg = self.config
        try:
            cfg.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as exc:
            raise KeyStorageError(f"cannot create {cfg.state_dir}: {exc.strerror}") from exc
        # Parameter generation and prime checks take up to seconds: keep them off the loop.
        self._params = await asyncio.to_thread(self._load_or_create_params)
        self._signer = self._load_or_create_signer()
        store = RegistryStore(cfg.registry_path)
        try:
            store.bind_federation(cfg.federation)
            store.bind_modulus(int(self._params.group.n))
            if cfg.device_tokens is not None:
                store.import_tokens(load_device_tokens(cfg.device_tokens))
        except BaseException:
            store.close()
            raise
        self._store = store
        self._ctx = WireContext.from_group(self._params.group)
        # Each type's longest valid message: a 50 MB ENROLL is refused after its header.
        self._limits = SizeLimits(
            self._ctx, max_bytes=self.config.max_message_bytes, max_entries=self._params.max_clients
        )
        self._handler = KeyServiceHandler(
            store,
            self._params,
            federation=cfg.federation,
            min_online=cfg.min_online,
            admin_token=cfg.admin_token,
            aggregator_token=cfg.aggregator_token,
        )
        await self._transport.consume(KEYSERVER, self._on_delivery)
        log.info(
            "key service of federation %s serving (|N| = %d, verify key %s)",
            cfg.federation,
            self._params.group.modulus_bits,
            self._signer.verify_key.hex(),
        )

    async def stop(self) -> None:
        """Close the registry; deliveries still arriving (until the transport closes) are dropped."""
        self._handler = None
        if self._store is not None:
            self._store.close()
            self._store = None

    async def run(self, stop: asyncio.Event) -> None:
        """Start, serve until ``stop`` is set, then stop."""
        try:
            if await unless_stopped(self.start(), stop):  # start-up (generating N) ends on a stop too
                await stop.wait()
        finally:
            await self.stop()

    # -- state ---------------------------------------------------------------------------------

    def _load_or_create_params(self) -> SystemParams:
        cfg = self.config
        path = cfg.state_dir / PARAMS_FILE
        if path.exists():
            params = SystemParams.from_dict(read_json(path), allow_insecure=cfg.allow_insecure_test_group)
            self._check_params_match(params)
            return params
        group = self._new_group()
        params = SystemParams(group, FixedPointEncoding(cfg.frac_bits, cfg.clip), cfg.max_clients)
        write_json_atomic(path, params.to_dict(), secret=False)
        return params

    def _new_group(self) -> GroupParams:
        """The operator's N (validated), or a new one whose factors die in generate_group."""
        cfg = self.config
        if cfg.modulus is not None:
            log.info("using the operator-supplied modulus (%d bits)", cfg.modulus.bit_length())
            return GroupParams.from_modulus(cfg.modulus, allow_insecure=cfg.allow_insecure_test_group)
        if cfg.allow_insecure_test_group:
            return insecure_test_group()
        log.info(
            "generating the federation's RSA modulus (|N| = %d) from two safe primes; once", cfg.modulus_bits
        )
        started = time.monotonic()
        group = generate_group(
            cfg.modulus_bits, progress=lambda line: log.info("modulus generation: %s", line)
        )
        log.info("modulus generated in %.1f s; its factors were never stored", time.monotonic() - started)
        return group

    def _check_params_match(self, params: SystemParams) -> None:
        cfg, enc = self.config, params.encoding
        stored: dict[str, object] = {
            "frac_bits": enc.frac_bits,
            "clip": enc.clip,
            "max_clients": params.max_clients,
        }
        wanted: dict[str, object] = {
            "frac_bits": cfg.frac_bits,
            "clip": cfg.clip,
            "max_clients": cfg.max_clients,
        }
        if cfg.modulus is not None and params.group.n != cfg.modulus:
            stored["modulus"], wanted["modulus"] = "an N", "another N (FEDCAST_MODULUS)"
        elif cfg.modulus is None and not params.group.insecure:
            stored["modulus_bits"], wanted["modulus_bits"] = params.group.modulus_bits, cfg.modulus_bits
        diff = {k: (stored[k], wanted[k]) for k in stored if stored[k] != wanted[k]}
        if diff:
            detail = ", ".join(f"{k}: stored {s}, configured {w}" for k, (s, w) in diff.items())
            raise ConfigurationError(f"{PARAMS_FILE} does not match the configuration ({detail})")

    def _load_or_create_signer(self) -> SigningKeyPair:
        signer = load_or_create_signing_key(self.config.state_dir / SIGNING_KEY_FILE)
        public = {
            "format": "fedcast.keyserver-verify-key",
            "version": 1,
            "verify_key": signer.verify_key.hex(),
        }
        write_json_atomic(self.config.state_dir / VERIFY_KEY_FILE, public, secret=False)
        return signer

    # -- deliveries ------------------------------------------------------------------------------

    async def _on_delivery(self, delivery: Delivery) -> None:
        # Decoding, element checks and proof verifications (an enrollment or a registration
        # costs a few exponentiations), sqlite fsyncs and signing all run in a worker thread:
        # the loop keeps serving meanwhile.
        reply = await asyncio.to_thread(self._process, delivery)
        if reply is None:
            return
        mtype, data = reply
        try:
            await self._transport.reply(delivery, data)
        except TransportError as exc:  # a reply_to that is not ours to publish to, or the broker
            self._reject(exc.reason, f"reply not sent: {exc}")
            return
        MESSAGES_SENT.labels(service=_SERVICE, type=mtype).inc()
        MESSAGE_BYTES_SENT.labels(service=_SERVICE, type=mtype).inc(len(data))

    def _process(self, delivery: Delivery) -> tuple[str, bytes] | None:
        """Decode, handle and encode one delivery (in a worker thread): (reply type, bytes) or None."""
        handler, ctx, signer = self._handler, self._ctx, self._signer
        if handler is None or ctx is None or signer is None:
            log.debug("key service stopped; delivery dropped")
            return None
        body: Body
        try:
            msg = decode(delivery.body, ctx, max_bytes=self.config.max_message_bytes, limits=self._limits)
        except FedcastError as exc:  # garbage: count it; answer only if a requester waits
            self._reject(exc.reason, str(exc))
            body = error_reply(exc)
        else:
            mtype = msg.header.type.value
            MESSAGES_RECEIVED.labels(service=_SERVICE, type=mtype).inc()
            MESSAGE_BYTES_RECEIVED.labels(service=_SERVICE, type=mtype).inc(len(delivery.body))
            try:
                body = handler.handle(msg)
            except Exception:  # a bug or a broken disk: answer, count, keep serving
                log.exception("key service failed on a %s request", mtype)
                body = ErrorReply(InternalError.reason, "the key service failed; see its log")
            if isinstance(body, ErrorReply):
                self._reject(body.reason, f"{mtype}: {body.message}", msg.header.sender)
        if delivery.reply_to is None:
            return None
        header = Header(reply_type(body), self.config.federation, KEYSERVER_ROUND, 0, KEYSERVER_SENDER)
        # PARAMS carries its own group (the requester may not know it yet); the rest use ours.
        data = encode(header, body, signer, None if isinstance(body, ParamsReply) else ctx)
        return header.type.value, data

    def _reject(self, reason: str, detail: str, sender: str | None = None) -> None:
        """Count a refusal and log it once per (reason, sender)."""
        self._rejects.record(reason, detail, sender)
