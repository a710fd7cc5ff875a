"""The secure-aggregation crypto core: pure code over ints and bytes, no I/O.

* :mod:`~shared.crypto.group` Schnorr group parameters, validation, the lift
* :mod:`~shared.crypto.keys` client and aggregator keys, serialization, redaction
* :mod:`~shared.crypto.fixedbase` Lim-Lee comb tables under a memory cap
* :mod:`~shared.crypto.elgamal` the multi-key ElGamal scheme (encrypt, challenge, decrypt)
* :mod:`~shared.crypto.delivery` per-client model delivery (HKDF + AES-256-GCM)
* :mod:`~shared.crypto.paillier` the Paillier baseline
"""
