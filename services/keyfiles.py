"""Load a service's key files, or create them (0600, atomically) on first start."""

from __future__ import annotations

import logging
from pathlib import Path

from fedcast.shared.crypto.group import GroupParams
from fedcast.shared.crypto.keys import AggregatorSecretKey, ClientKeyPair
from fedcast.shared.crypto.signing import SigningKeyPair
from fedcast.shared.keystore import read_secret_json, write_json_atomic

__all__ = ["load_or_create_aggregator_key", "load_or_create_client_key", "load_or_create_signing_key"]

log = logging.getLogger(__name__)


def load_or_create_signing_key(path: Path, *, check_permissions: bool = True) -> SigningKeyPair:
    if path.exists():
        return SigningKeyPair.from_secret_dict(read_secret_json(path, check_permissions=check_permissions))
    signer = SigningKeyPair.generate()
    write_json_atomic(path, signer.to_secret_dict(), secret=True)
    log.info("created signing key %s", path)
    return signer


def load_or_create_client_key(
    path: Path, group: GroupParams, *, check_permissions: bool = True
) -> ClientKeyPair:
    if path.exists():
        data = read_secret_json(path, check_permissions=check_permissions)
        return ClientKeyPair.from_secret_dict(data, group)
    keypair = ClientKeyPair.generate(group)
    write_json_atomic(path, keypair.to_secret_dict(), secret=True)
    log.info("created client key %s", path)
    return keypair


def load_or_create_aggregator_key(
    path: Path, group: GroupParams, *, check_permissions: bool = True
) -> AggregatorSecretKey:
    """The aggregator's alpha and delivery secret (from a file or a mounted Secret).

    A key file written by protocol version 1 is refused (LegacyStateError), never reused.
    """
    if path.exists():
        return AggregatorSecretKey.from_secret_dict(
            read_secret_json(path, check_permissions=check_permissions), group
        )
    key = AggregatorSecretKey.generate(group)
    write_json_atomic(path, key.to_secret_dict(), secret=True)
    log.info("created aggregator key %s", path)
    return key
