"""The secure-aggregation crypto core: pure code over ints and bytes, no I/O.

* :mod:`~fedcast.shared.crypto.group` Schnorr group parameters, validation, the lift
* :mod:`~fedcast.shared.crypto.keys` client and aggregator keys, serialization, redaction
* :mod:`~fedcast.shared.crypto.fixedbase` Lim-Lee comb tables under a memory cap
* :mod:`~fedcast.shared.crypto.elgamal` the multi-key ElGamal scheme (encrypt, challenge, decrypt)
* :mod:`~fedcast.shared.crypto.delivery` per-client model delivery (HKDF + AES-256-GCM)
* :mod:`~fedcast.shared.crypto.paillier` the Paillier baseline
"""
