"""Shared helpers of the key-service tests: signed requests, aggregator keys with their proofs."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

from fedcast.services.keyserver.store import hash_token
from fedcast.shared.crypto.group import GroupParams
from fedcast.shared.crypto.keys import AggregatorSecretKey
from fedcast.shared.crypto.signing import SigningKeyPair
from fedcast.shared.wire.codec import WireContext
from fedcast.shared.wire.messages import KEYSERVER_ROUND, AggregatorInfo, Body, Header, MessageType, Signed
from fedcast.shared.wire.serde import decode, encode

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


def aggregator_info(
    group: GroupParams,
    signer: SigningKeyPair,
    *,
    federation: str = FEDERATION,
    secret: AggregatorSecretKey | None = None,
) -> AggregatorInfo:
    """beta and D of a fresh (or the given) aggregator key, proofs bound to ``federation`` and the signer."""
    secret = secret or AggregatorSecretKey.generate(group)
    public = secret.public(federation=federation, verify_key=signer.verify_key)
    return AggregatorInfo(
        int(public.beta), public.beta_proof, int(public.delivery), public.delivery_proof, signer.verify_key
    )


def write_v1_registry(path: Path, *, enrolled: bool = False, aggregator: bool = False) -> str:
    """A registry as protocol version 1 left it (schema 1); returns the provisioned device's token."""
    token = "v1-provisioned-token-0123456789"
    db = sqlite3.connect(path, isolation_level=None)
    # The version-1 schema, as it shipped (git show eeb081a:services/keyserver/store.py).
    db.execute(
        """CREATE TABLE devices (
            client_id TEXT PRIMARY KEY,
            token_hash BLOB NOT NULL,
            elgamal_public TEXT,
            verify_key TEXT,
            status TEXT NOT NULL CHECK (status IN ('provisioned', 'enrolled', 'revoked')),
            provisioned_at REAL NOT NULL,
            enrolled_at REAL,
            revoked_at REAL
        )"""
    )
    db.execute(
        """CREATE TABLE aggregator (
            id INTEGER PRIMARY KEY CHECK (id = 1),
            betas TEXT NOT NULL,
            delivery TEXT NOT NULL,
            verify_key TEXT NOT NULL,
            registered_at REAL NOT NULL
        )"""
    )
    db.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
    db.execute("INSERT INTO meta VALUES ('federation', 'f1')")
    db.execute(
        "INSERT INTO devices VALUES ('c1', ?, NULL, NULL, 'provisioned', 1.0, NULL, NULL)",
        (hash_token(token),),
    )
    if enrolled:
        db.execute(
            "INSERT INTO devices VALUES ('c2', ?, 'abc123', ?, 'enrolled', 1.0, 2.0, NULL)",
            (hash_token("v1-enrolled-token-0123456789"), (b"\x01" * 32).hex()),
        )
    if aggregator:
        db.execute(
            "INSERT INTO aggregator VALUES (1, '[\"abc\", \"def\"]', '123', ?, 3.0)", ((b"\x02" * 32).hex(),)
        )
    db.execute("PRAGMA user_version = 1")
    db.close()
    os.chmod(path, 0o600)
    return token
