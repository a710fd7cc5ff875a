"""The aggregator's helper processes: folding and proof checks agree with the one-process code."""

from __future__ import annotations

import secrets
from pathlib import Path

import pytest
from gmpy2 import mpz

from fedcast.services.aggregator.foldpool import ProcessFolder, worker_main
from fedcast.shared.crypto.elgamal import SerialFolder
from fedcast.shared.crypto.group import GroupParams, frame
from fedcast.shared.crypto.proofs import DlogProof, DlogStatement, dlog_failures, prove_dlog
from fedcast.shared.errors import InternalError


def _uploads(group: GroupParams, members: int, segments: int) -> list[list[mpz]]:
    return [[mpz(secrets.randbelow(int(group.n2) - 2) + 1) for _ in range(segments)] for _ in range(members)]


@pytest.mark.parametrize(("workers", "segments"), [(0, 5), (1, 1), (1, 7), (2, 7), (3, 2)])
def test_products_equal_the_serial_fold(small_group: GroupParams, workers: int, segments: int) -> None:
    uploads = _uploads(small_group, 6, segments)
    serial = SerialFolder(small_group.n2)
    serial.start(segments)
    with ProcessFolder(small_group.n2, workers=workers) as folder:
        for attempt in range(2):  # a second attempt reuses the helpers from a clean start
            folder.start(segments)
            for upload in uploads[attempt:]:
                folder.fold(upload)
            serial.start(segments)
            for upload in uploads[attempt:]:
                serial.fold(upload)
            assert folder.products() == serial.products()
        assert folder.workers == workers


def _statements(group: GroupParams, count: int, bad: set[int]) -> list[DlogStatement]:
    out = []
    for i in range(count):
        context = frame(b"test", i.to_bytes(4, "big"))
        w = group.random_exponent()
        public = group.power(w)
        proof = prove_dlog(group, w, public, context)
        if i in bad:  # a proof of another statement: the element rule passes, the equation fails
            proof = DlogProof(proof.commitment, proof.response + 1)
        out.append(DlogStatement(public, proof, context))
    return out


@pytest.mark.parametrize("bad", [set(), {0}, {5}, {11}, {2, 9}])
def test_proof_checks_split_over_helpers_name_the_same_culprits(
    small_group: GroupParams, bad: set[int]
) -> None:
    statements = _statements(small_group, 12, bad)
    with ProcessFolder(small_group.n2, workers=2) as folder:
        found = folder.dlog_failures(small_group, statements)
    assert set(found) == bad == set(dlog_failures(small_group, statements))


def test_a_dead_helper_fails_the_products_then_is_replaced(small_group: GroupParams) -> None:
    uploads = _uploads(small_group, 3, 4)
    with ProcessFolder(small_group.n2, workers=1) as folder:
        folder.start(4)
        folder._helpers[0].process.kill()
        folder._helpers[0].process.wait()
        for upload in uploads:
            folder.fold(upload)
        with pytest.raises(InternalError):
            folder.products()
        # its share of a proof check is done here instead, with the same verdict
        statements = _statements(small_group, 4, {3})
        assert set(folder.dlog_failures(small_group, statements)) == {3}
        folder.start(4)  # the next attempt respawns it
        for upload in uploads:
            folder.fold(upload)
        serial = SerialFolder(small_group.n2)
        serial.start(4)
        for upload in uploads:
            serial.fold(upload)
        assert folder.products() == serial.products()


def test_close_is_safe_twice_and_the_worker_stops_on_eof(small_group: GroupParams) -> None:
    folder = ProcessFolder(small_group.n2, workers=1)
    process = folder._helpers[0].process
    folder.close()
    folder.close()
    assert process.returncode is not None


def test_the_worker_loop_speaks_only_the_documented_operations() -> None:
    import io

    modulus = mpz(1009 * 1013)
    width = 3
    header = b"S" + (2).to_bytes(4, "big") + width.to_bytes(4, "big") + (3).to_bytes(4, "big")
    header += int(modulus).to_bytes(3, "big")
    blob = (5).to_bytes(3, "big") + (7).to_bytes(3, "big")
    stream = io.BytesIO(header + b"F" + len(blob).to_bytes(4, "big") + blob + b"P")
    out = io.BytesIO()
    worker_main(stream, out)
    assert out.getvalue() == (5).to_bytes(3, "big") + (7).to_bytes(3, "big")
    with pytest.raises(SystemExit):
        worker_main(io.BytesIO(b"Z"), io.BytesIO())


def test_no_pickle_between_processes() -> None:
    import fedcast.services.aggregator.foldpool as module

    source = Path(module.__file__).read_text()
    assert "pickle" not in source.replace("nothing is pickled", "")
