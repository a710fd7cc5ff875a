"""The key service's client side, for edge clients, the aggregator and operator tools.

Every reply is decoded, checked to come from the key service of this
federation, and its signature verified before anything in it is used; every
group element in it passes the received-element rule and every proof in it is
verified (:mod:`fedcast.shared.crypto.proofs`). A
refusal (:class:`ErrorReply`) is raised as the :mod:`fedcast.shared.errors` class
whose ``reason`` it carries. Only timeouts are retried (with exponential
backoff): every key-service request is idempotent, so a retry after a lost
reply is harmless, while a refusal would only be refused again.

Pinning. Pass the key service's verify key (``verify-key.json`` in its state
directory) as ``keyserver_verify_key``. With None the client trusts on first
use: it adopts the key the first PARAMS reply advertises, exposes it as
:attr:`KeyServiceClient.keyserver_verify_key` for the caller to persist and
pass next time, and holds every later reply to it. The ParamsReply does not
advertise the key, so TOFU is refused with a SignatureError and a pinned key is
required.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import TypeVar

from fedcast.services.keyserver.handlers import KEYSERVER_SENDER, check_aggregator_info
from fedcast.services.retrying import request_retrying
from fedcast.shared import errors
from fedcast.shared.crypto.group import GroupParams
from fedcast.shared.crypto.keys import AggregatorPublicKey, ClientKeyPair
from fedcast.shared.crypto.pok import enrollment_context, prove_possession
from fedcast.shared.crypto.signing import VERIFY_KEY_BYTES, SigningKeyPair
from fedcast.shared.encoding import FixedPointEncoding
from fedcast.shared.errors import (
    ConfigurationError,
    FedcastError,
    InvalidParametersError,
    MalformedMessageError,
    RegistryError,
    SignatureError,
)
from fedcast.shared.params import SystemParams
from fedcast.shared.transport.base import KEYSERVER, Transport
from fedcast.shared.wire.codec import WireContext
from fedcast.shared.wire.messages import (
    KEYSERVER_ROUND,
    Ack,
    AggregatorInfo,
    Body,
    EnrollRequest,
    ErrorReply,
    Header,
    KeysReply,
    KeysRequest,
    MessageType,
    ParamsReply,
    ParamsRequest,
    RegisterAggregator,
    RegistryEntry,
    RevokeRequest,
    Signed,
)
from fedcast.shared.wire.serde import DEFAULT_MAX_MESSAGE_BYTES, SizeLimits, decode, encode, verify

__all__ = ["KeyServiceClient", "error_for"]

log = logging.getLogger(__name__)

_ERRORS: dict[str, type[FedcastError]] = {
    cls.reason: cls
    for cls in (getattr(errors, name) for name in errors.__all__)
    if isinstance(cls, type) and issubclass(cls, FedcastError)
}
_Reply = TypeVar("_Reply", ParamsReply, KeysReply, Ack)


def error_for(reply: ErrorReply) -> FedcastError:
    """The typed error an ErrorReply stands for (RegistryError for a reason this build does not know)."""
    cls = _ERRORS.get(reply.reason)
    if cls is None:
        return RegistryError(f"key service refused ({reply.reason}): {reply.message}")
    return cls(reply.message)


class KeyServiceClient:
    """RPCs to the key service; ``signer`` signs requests (for ENROLL: the key being enrolled)."""

    def __init__(
        self,
        transport: Transport,
        federation: str,
        sender_id: str,
        signer: SigningKeyPair,
        *,
        keyserver_verify_key: bytes | None,
        timeout: float = 10.0,
        retries: int = 3,
        backoff: float = 0.5,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        allow_insecure_test_group: bool = False,
    ) -> None:
        if timeout <= 0 or retries < 0 or backoff < 0:
            raise ConfigurationError("timeout must be > 0, retries and backoff >= 0")
        if keyserver_verify_key is not None and len(keyserver_verify_key) != VERIFY_KEY_BYTES:
            raise ConfigurationError(f"keyserver_verify_key must be {VERIFY_KEY_BYTES} bytes")
        self._transport = transport
        self.federation = federation
        self.sender_id = sender_id
        self._signer = signer
        self._pinned = keyserver_verify_key
        self._timeout = timeout
        self._retries = retries
        self._backoff = backoff
        self._max_bytes = max_message_bytes
        self._allow_insecure = allow_insecure_test_group
        self._params: SystemParams | None = None
        self._ctx: WireContext | None = None
        self._aggregator_key: AggregatorPublicKey | None = None

    def __repr__(self) -> str:
        return f"KeyServiceClient(federation={self.federation!r}, sender={self.sender_id!r})"

    @property
    def keyserver_verify_key(self) -> bytes | None:
        """The pinned (or, after trust on first use, adopted) key-service verify key."""
        return self._pinned

    # -- requests --------------------------------------------------------------------------------

    async def get_params(self) -> tuple[SystemParams, AggregatorInfo | None, int]:
        """System parameters, the registered aggregator (None before it registered) and min_online."""
        body = await self._call(MessageType.GET_PARAMS, ParamsRequest(), ParamsReply, ctx=None)
        # Modulus validation (a sieve, a primality test) and the aggregator's proofs: off the loop.
        params, aggregator_key = await asyncio.to_thread(self._validate_params, body)
        if self._params is not None and self._params.group != params.group:
            raise InvalidParametersError("the key service's group changed; refusing to switch groups")
        self._params, self._ctx = params, WireContext.from_group(params.group)
        if aggregator_key is not None:  # only a fully accepted reply updates what callers use
            self._aggregator_key = aggregator_key
        return params, body.aggregator, body.min_online

    async def get_keys(self, client_ids: Iterable[str]) -> dict[str, RegistryEntry]:
        """Registry entries of those ids that exist (revoked ones included, marked)."""
        wanted = tuple(dict.fromkeys(client_ids))
        ctx = await self._context()
        body = await self._call(
            MessageType.GET_KEYS, KeysRequest(wanted), KeysReply, ctx=ctx, entries=len(wanted)
        )
        return await asyncio.to_thread(self._validate_entries, body, frozenset(wanted))

    async def enroll(self, token: str, keypair: ClientKeyPair) -> None:
        """Register pk_i (with a proof of knowledge of sk_i) and this client's verify key."""
        ctx = await self._context()
        group = self._group()
        if keypair.group != group:
            raise ConfigurationError("the client key belongs to another group")
        context = enrollment_context(self.federation, self.sender_id, self._signer.verify_key)
        proof = prove_possession(keypair, context)
        request = EnrollRequest(token, int(keypair.public), self._signer.verify_key, proof)
        await self._call(MessageType.ENROLL, request, Ack, ctx=ctx)

    async def register_aggregator(self, token: str, info: AggregatorInfo) -> None:
        """Publish the aggregator's beta, D (with proofs) and verify key (the signer must hold that key)."""
        if info.verify_key != self._signer.verify_key:
            raise ConfigurationError("register_aggregator must be signed by the key it registers")
        ctx = await self._context()
        check_aggregator_info(self._group(), info, self.federation)
        await self._call(MessageType.REGISTER_AGGREGATOR, RegisterAggregator(token, info), Ack, ctx=ctx)

    async def revoke(self, token: str, client_id: str) -> None:
        """Revoke ``client_id`` (needs the admin token)."""
        await self._call(MessageType.REVOKE, RevokeRequest(token, client_id), Ack, ctx=None)

    # -- internals -------------------------------------------------------------------------------

    async def _context(self) -> WireContext:
        if self._ctx is None:
            await self.get_params()
        assert self._ctx is not None
        return self._ctx

    def _group(self) -> GroupParams:
        assert self._params is not None
        return self._params.group

    @property
    def aggregator_key(self) -> AggregatorPublicKey | None:
        """The aggregator's public key from the last PARAMS reply, its proofs verified (None before)."""
        return self._aggregator_key

    def _validate_params(self, body: ParamsReply) -> tuple[SystemParams, AggregatorPublicKey | None]:
        known = self._params.group if self._params is not None else None
        if known is not None and body.modulus == known.n:
            group = known  # validated on first receipt: skip the checks when polling
        else:
            group = GroupParams.from_modulus(body.modulus, allow_insecure=self._allow_insecure)
        try:
            params = SystemParams(group, FixedPointEncoding(body.frac_bits, body.clip), body.max_clients)
        except ConfigurationError as exc:
            raise InvalidParametersError(f"key service sent unusable parameters: {exc}") from exc
        if not 2 <= body.min_online <= params.max_clients:
            raise InvalidParametersError(f"min_online {body.min_online} is outside [2, max_clients]")
        if body.aggregator is None:
            return params, None
        return params, check_aggregator_info(group, body.aggregator, self.federation)

    def _validate_entries(self, body: KeysReply, wanted: frozenset[str]) -> dict[str, RegistryEntry]:
        group = self._group()
        entries: dict[str, RegistryEntry] = {}
        for entry in body.entries:
            if entry.client_id not in wanted:
                raise MalformedMessageError(f"key service sent an entry for unrequested {entry.client_id!r}")
            entries[entry.client_id] = entry
        for entry in body.entries:
            group.received_square(entry.elgamal_public, f"public key of {entry.client_id}")
        return entries

    async def _call(
        self,
        mtype: MessageType,
        request: Body,
        expected: type[_Reply],
        *,
        ctx: WireContext | None,
        entries: int = 0,
    ) -> _Reply:
        """``entries``: the ids a GET_KEYS asks for, which bound its KEYS reply (0 for other calls)."""
        header = Header(mtype, self.federation, KEYSERVER_ROUND, 0, self.sender_id)
        data = encode(header, request, self._signer, ctx, max_bytes=self._max_bytes)
        raw = await self._request(data, mtype)
        # Refused by its length before its body is parsed (and its signature checked): a reply
        # can be no longer than the largest valid one of its type, a KEYS no longer than the
        # entries asked for. ErrorReply and Ack carry no elements; PARAMS brings its own widths.
        limits = SizeLimits(ctx, max_bytes=self._max_bytes, max_entries=entries)
        reply = decode(raw, ctx, max_bytes=self._max_bytes, limits=limits)
        self._check_reply(reply, ctx)
        if isinstance(reply.body, ErrorReply):
            raise error_for(reply.body)
        if not isinstance(reply.body, expected):
            raise MalformedMessageError(f"{mtype.value}: expected {expected.__name__} in reply")
        return reply.body

    async def _request(self, data: bytes, mtype: MessageType) -> bytes:
        retrying = request_retrying(self._retries, self._backoff, mtype.value)
        reply: bytes = await retrying(self._transport.request, KEYSERVER, data, timeout=self._timeout)
        return reply

    def _check_reply(self, reply: Signed, ctx: WireContext | None) -> None:
        header = reply.header
        if header.sender != KEYSERVER_SENDER or header.federation != self.federation:
            raise MalformedMessageError(f"reply from {header.sender!r} of federation {header.federation!r}")
        if header.round != KEYSERVER_ROUND or header.attempt != 0:
            raise MalformedMessageError("key-service replies carry round 0, attempt 0")
        key = self._pinned
        if key is None:
            key = self._trust_on_first_use(reply)
        verify(reply, key, ctx)
        if self._pinned is None:
            self._pinned = key
            log.warning("trusting the key service's verify key %s on first use; pin it", key.hex())

    @staticmethod
    def _trust_on_first_use(reply: Signed) -> bytes:
        # Forward-compatible: adopt the key once PARAMS advertises it (see the module docstring).
        advertised = getattr(reply.body, "verify_key", None) if isinstance(reply.body, ParamsReply) else None
        if not isinstance(advertised, bytes):
            raise SignatureError("no pinned key-service verify key and the reply does not advertise one")
        return advertised
