"""Super-increasing packing: round trips, Algorithm 2 equivalence, known answers, overflow checks."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fedcast.shared.errors import ConfigurationError, PackingError, SlotOverflowError
from fedcast.shared.packing import PackingLayout


def algorithm2(total: int, slot_bits: int, k: int) -> list[int]:
    """The paper's Algorithm 2 with a_t = 2^(b*(t-1)), written out with Python ints."""
    a = [1 << (slot_bits * t) for t in range(k)]
    out = [0] * k
    t_i = total
    for i in range(k - 1, 0, -1):
        t_prev = t_i % a[i]
        out[i] = (t_i - t_prev) // a[i]
        t_i = t_prev
    out[0] = t_i
    return out


def test_known_answer_byte_aligned() -> None:
    layout = PackingLayout(slot_bits=8, slots_per_segment=2, max_value=100, max_clients=2)
    assert layout.pack(np.array([1, 2, 3])) == [1 + 2 * 256, 3]


def test_known_answer_unaligned() -> None:
    layout = PackingLayout(slot_bits=5, slots_per_segment=3, max_value=15, max_clients=2)
    # slot t holds v_t * 2^(5t): 7 + 9*32 + 15*1024 = 15655; then 1.
    assert layout.pack(np.array([7, 9, 15, 1])) == [7 + 9 * 32 + 15 * 1024, 1]
    sums = layout.unpack([15655, 1], 4, n_clients=1)
    assert sums.tolist() == [7, 9, 15, 1]


def test_for_sum_chooses_narrowest_slot() -> None:
    # 2Q = 2^19 with the default encoding, 1000 clients: 524,288,000 < 2^29.
    layout = PackingLayout.for_sum(max_value=2**19, max_clients=1000, plaintext_bits=2047)
    assert layout.slot_bits == 29 and layout.slots_per_segment == 70
    assert layout.max_clients * layout.max_value < 2**layout.slot_bits


def test_no_carry_bound_is_checked() -> None:
    with pytest.raises(SlotOverflowError):
        PackingLayout(slot_bits=8, slots_per_segment=4, max_value=128, max_clients=2)
    with pytest.raises(SlotOverflowError):
        PackingLayout.for_sum(max_value=2**40, max_clients=2**30, plaintext_bits=64)
    with pytest.raises(ConfigurationError):
        PackingLayout(slot_bits=0, slots_per_segment=4, max_value=1, max_clients=1)


@pytest.mark.parametrize("slot_bits", [8, 13, 29, 32])
@given(data=st.data())
def test_sum_of_packed_is_packed_sum(slot_bits: int, data: st.DataObject) -> None:
    """Adding packed integers adds slot-wise (the property encryption relies on), up to max_clients."""
    k = max(1, 200 // slot_bits)
    max_clients = 4
    max_value = ((1 << slot_bits) - 1) // max_clients
    layout = PackingLayout(slot_bits, k, max_value, max_clients)
    n = data.draw(st.sampled_from([1, k - 1 or 1, k, k + 1, 3 * k + 2]))
    n_clients = data.draw(st.integers(1, max_clients))
    vectors = [
        np.array(data.draw(st.lists(st.integers(0, max_value), min_size=n, max_size=n)), dtype=np.uint64)
        for _ in range(n_clients)
    ]
    packed = [layout.pack(v) for v in vectors]
    totals = [sum(col) for col in zip(*packed, strict=True)]
    sums = layout.unpack(totals, n, n_clients=n_clients)
    assert np.array_equal(sums, np.sum(vectors, axis=0))
    # and the vectorized unpack agrees with Algorithm 2 segment by segment
    reference = [x for total in totals for x in algorithm2(int(total), slot_bits, k)][:n]
    assert sums.tolist() == reference


def test_pack_refuses_out_of_range_values() -> None:
    layout = PackingLayout(slot_bits=8, slots_per_segment=2, max_value=100, max_clients=2)
    with pytest.raises(SlotOverflowError):
        layout.pack(np.array([101]))
    with pytest.raises(SlotOverflowError):
        layout.pack(np.array([-1, 3]))
    with pytest.raises(PackingError):
        layout.pack(np.array([], dtype=np.uint64))
    with pytest.raises(PackingError):
        layout.pack(np.array([1.5]))


def test_unpack_detects_overflow_and_bad_shape() -> None:
    layout = PackingLayout(slot_bits=8, slots_per_segment=2, max_value=100, max_clients=2)
    with pytest.raises(SlotOverflowError, match="above its last slot"):
        layout.unpack([1 << 16], 2, n_clients=1)
    with pytest.raises(SlotOverflowError, match="exceeds"):
        layout.unpack([201], 2, n_clients=2)  # 201 > 2 x 100: not a sum of 2 encodings
    with pytest.raises(SlotOverflowError, match="padding"):
        layout.unpack([1 + (5 << 8)], 1, n_clients=1)
    with pytest.raises(PackingError):
        layout.unpack([1, 2], 2, n_clients=1)
    with pytest.raises(SlotOverflowError):
        layout.unpack([1], 2, n_clients=3)


def test_large_vector_round_trip_is_exact() -> None:
    rng = np.random.default_rng(0)
    layout = PackingLayout.for_sum(max_value=2**19, max_clients=1000, plaintext_bits=2047)
    v = rng.integers(0, 2**19 + 1, size=100_003, dtype=np.uint64)
    segments = layout.pack(v)
    assert len(segments) == layout.n_segments(v.size) == 1429
    assert np.array_equal(layout.unpack(segments, v.size, n_clients=1), v)
