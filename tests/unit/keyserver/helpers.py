"""Shared helpers of the key-service tests: signed requests, a registry with a small group."""

from __future__ import annotations

from shared.crypto.group import GroupParams
from shared.crypto.keys import AggregatorSecretKey
from shared.crypto.signing import SigningKeyPair
from shared.wire.codec import WireContext
from shared.wire.messages import KEYSERVER_ROUND, AggregatorInfo, Body, Header, MessageType, Signed
from shared.wire.serde import decode, encode

FEDERATION = "fed-test"
ADMIN_TOKEN = "admin-token-0123456789"
AGGREGATOR_TOKEN = "aggregator-token-0123456789"


def signed(
    mtype: MessageType,
    body: Body,
    signer: SigningKeyPair,
    group: GroupParams,
    *,
    sender: str = "c1",
    federation: str = FEDERATION,
    round: int = KEYSERVER_ROUND,
) -> Signed:
    """A request as the service's shell hands it to the handler (encoded, then decoded)."""
    ctx = WireContext.from_group(group)
    return decode(encode(Header(mtype, federation, round, 0, sender), body, signer, ctx), ctx)


def aggregator_info(group: GroupParams, signer: SigningKeyPair, n_segments: int = 3) -> AggregatorInfo:
    public = AggregatorSecretKey.generate(group, n_segments).public
    return AggregatorInfo(tuple(int(b) for b in public.betas), int(public.delivery), signer.verify_key)
