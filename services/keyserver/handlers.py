"""The key service's request logic, free of transport and bytes: Signed request in, reply body out.

:class:`KeyServiceHandler` never raises for a refused request: every
:class:`fedcast.shared.errors.FedcastError` becomes an :class:`ErrorReply` carrying the
error's ``reason`` code, which the client maps back to the same class. All
requests are idempotent (repeating one has the effect of doing it once and the
same reply), because an RPC whose reply was lost is retried.

Who may do what:

* ENROLL: whoever holds the device's token, proving possession of the Ed25519
  key it registers by signing the request with it, and of the ElGamal key by a
  proof of knowledge; ``header.sender`` is the client id.
* GET_PARAMS, GET_KEYS: anyone on the broker, **without** checking the request's
  signature or sender id. This is deliberate and safe: the answers are public
  values (N, public keys, verify keys, revocation flags, the aggregator's public
  keys with their proofs), every reply is signed by the key service and checked
  by the requester against its pinned verify key, and a request changes nothing.
  A requester that has not enrolled yet (a new device, the aggregator before it
  registers) has no registered key to sign with. Who may *reach* the key service
  is the broker's business (docs/DEPLOY.md).
* REGISTER_AGGREGATOR: the aggregator token, a signature by the verify key being
  registered, and proofs of knowledge of alpha and delta bound to that key.
* REVOKE: the admin token.
"""

from __future__ import annotations

import hmac
import logging

from fedcast.services.keyserver.store import RegistryStore
from fedcast.shared.crypto.group import GroupParams
from fedcast.shared.crypto.keys import AggregatorPublicKey
from fedcast.shared.crypto.pok import enrollment_context, verify_possession
from fedcast.shared.errors import (
    FedcastError,
    InvalidGroupElementError,
    InvalidKeyError,
    MalformedMessageError,
    NotAuthorizedError,
)
from fedcast.shared.params import SystemParams
from fedcast.shared.wire.codec import WireContext
from fedcast.shared.wire.messages import (
    KEYSERVER_ROUND,
    Ack,
    AggregatorInfo,
    Body,
    EnrollRequest,
    ErrorReply,
    KeysReply,
    KeysRequest,
    MessageType,
    ParamsReply,
    ParamsRequest,
    RegisterAggregator,
    RevokeRequest,
    Signed,
)
from fedcast.shared.wire.serde import verify

__all__ = [
    "KEYSERVER_SENDER",
    "MAX_KEYS_PER_REQUEST",
    "KeyServiceHandler",
    "check_aggregator_info",
    "error_reply",
    "reply_type",
]

log = logging.getLogger(__name__)

#: ``header.sender`` of every key-service reply.
KEYSERVER_SENDER = "keyserver"
#: Ids one GET_KEYS may ask for: bounds the reply (about 300 bytes per entry at |N| = 2048).
MAX_KEYS_PER_REQUEST = 10_000
_MAX_ERROR_TEXT = 500

_REQUEST_BODY: dict[MessageType, type] = {
    MessageType.ENROLL: EnrollRequest,
    MessageType.GET_PARAMS: ParamsRequest,
    MessageType.GET_KEYS: KeysRequest,
    MessageType.REGISTER_AGGREGATOR: RegisterAggregator,
    MessageType.REVOKE: RevokeRequest,
}
_REPLY_TYPE: dict[type, MessageType] = {
    ParamsReply: MessageType.PARAMS,
    KeysReply: MessageType.KEYS,
    Ack: MessageType.ACK,
    ErrorReply: MessageType.ERROR,
}


def reply_type(body: Body) -> MessageType:
    """The header type of a key-service reply body."""
    try:
        return _REPLY_TYPE[type(body)]
    except KeyError:
        raise TypeError(f"{type(body).__name__} is not a key-service reply") from None


def error_reply(exc: FedcastError) -> ErrorReply:
    """The ErrorReply for a refusal: its reason code and a short, printable message."""
    text = "".join(c if c.isprintable() else "?" for c in str(exc))
    return ErrorReply(exc.reason, text[:_MAX_ERROR_TEXT])


def _token_ok(presented: str, expected: str) -> bool:
    """Constant-time token check; an empty configured token disables the operation entirely."""
    if not expected:
        return False
    return hmac.compare_digest(presented.encode("utf-8"), expected.encode("utf-8"))


def check_aggregator_info(group: GroupParams, info: AggregatorInfo, federation: str) -> AggregatorPublicKey:
    """beta and D must pass the element rule and come with proofs of knowledge bound to the verify key.

    The proofs mean the aggregator knows alpha and delta: beta cannot be -1 (refused by the
    element rule anyway: it would expose every s and m) nor any value chosen to relate to
    the clients' keys.
    """
    try:
        return AggregatorPublicKey.verified(
            group,
            info.beta,
            info.delivery,
            info.beta_proof,
            info.delivery_proof,
            federation=federation,
            verify_key=info.verify_key,
        )
    except InvalidGroupElementError as exc:
        raise InvalidKeyError(str(exc)) from exc


class KeyServiceHandler:
    """Answers decoded key-service requests from the registry and the system parameters."""

    def __init__(
        self,
        store: RegistryStore,
        params: SystemParams,
        *,
        federation: str,
        min_online: int,
        admin_token: str,
        aggregator_token: str,
    ) -> None:
        self._store = store
        self._params = params
        self._ctx = WireContext.from_group(params.group)
        self._federation = federation
        self._min_online = min_online
        self._admin_token = admin_token
        self._aggregator_token = aggregator_token

    def __repr__(self) -> str:
        return f"KeyServiceHandler(federation={self._federation!r})"  # tokens stay out

    def handle(self, msg: Signed) -> Body:
        """The reply body for ``msg``: the answer, or an ErrorReply with the refusal's reason code."""
        try:
            self._check_header(msg)
            body = msg.body
            if isinstance(body, ParamsRequest):
                return self._params_reply()
            if isinstance(body, KeysRequest):
                return self._keys(body)
            if isinstance(body, EnrollRequest):
                return self._enroll(msg, body)
            if isinstance(body, RegisterAggregator):
                return self._register_aggregator(msg, body)
            if isinstance(body, RevokeRequest):
                return self._revoke(body)
            raise MalformedMessageError(f"{type(body).__name__} is not a key-service request")
        except FedcastError as exc:
            return error_reply(exc)

    # -- requests --------------------------------------------------------------------------------

    def _check_header(self, msg: Signed) -> None:
        header = msg.header
        if _REQUEST_BODY.get(header.type) is not type(msg.body):
            raise MalformedMessageError(f"message type {header.type!r} is not a key-service request")
        if header.federation != self._federation:
            raise MalformedMessageError(f"message is for federation {header.federation!r}")
        if header.round != KEYSERVER_ROUND or header.attempt != 0:
            raise MalformedMessageError("key-service requests carry round 0, attempt 0")

    def _params_reply(self) -> ParamsReply:
        group, encoding = self._params.group, self._params.encoding
        return ParamsReply(
            modulus=int(group.n),
            frac_bits=encoding.frac_bits,
            clip=encoding.clip,
            max_clients=self._params.max_clients,
            min_online=self._min_online,
            aggregator=self._store.aggregator(),
        )

    def _keys(self, body: KeysRequest) -> KeysReply:
        if len(body.client_ids) > MAX_KEYS_PER_REQUEST:
            raise MalformedMessageError(f"at most {MAX_KEYS_PER_REQUEST} ids per request")
        return KeysReply(tuple(self._store.entries(body.client_ids)))

    def _enroll(self, msg: Signed, body: EnrollRequest) -> Ack:
        # Proof of possession first (cheap): only the holder of the key may register it.
        verify(msg, body.verify_key, self._ctx)
        group = self._params.group
        group.received_square(body.elgamal_public, "ElGamal public key")
        # ... and of the ElGamal key: no rogue keys (g^x / pk_A) in anyone's pkbar_S.
        context = enrollment_context(self._federation, msg.header.sender, body.verify_key)
        verify_possession(group, body.elgamal_public, body.proof, context)
        self._store.enroll(msg.header.sender, body.token, body.elgamal_public, body.verify_key)
        return Ack()

    def _register_aggregator(self, msg: Signed, body: RegisterAggregator) -> Ack:
        if not _token_ok(body.token, self._aggregator_token):
            raise NotAuthorizedError("wrong aggregator token")
        verify(msg, body.info.verify_key, self._ctx)
        check_aggregator_info(self._params.group, body.info, self._federation)
        self._store.set_aggregator(body.info)
        return Ack()

    def _revoke(self, body: RevokeRequest) -> Ack:
        if not _token_ok(body.token, self._admin_token):
            raise NotAuthorizedError("wrong admin token")
        self._store.revoke(body.client_id)
        return Ack()
