"""Fixed-point encoding: clipping is counted, rounding is unbiased, sums decode exactly."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from fedcast.shared.encoding import FixedPointEncoding
from fedcast.shared.errors import ConfigurationError, EncodingError


def test_known_answers() -> None:
    enc = FixedPointEncoding(frac_bits=4, clip=2.0)
    assert enc.offset == 32 and enc.max_encoded == 64
    # exactly representable values round deterministically
    out = enc.encode([0.0, 0.5, -2.0, 2.0, -0.0625], np.random.default_rng(0))
    assert out.values.tolist() == [32, 40, 0, 64, 31]
    assert out.clipped == 0


def test_clipping_is_counted_never_silent() -> None:
    enc = FixedPointEncoding(frac_bits=8, clip=1.0)
    out = enc.encode([5.0, -7.0, 0.25, 1.0, -1.0], np.random.default_rng(0))
    assert out.clipped == 2
    assert out.values.tolist()[:2] == [2 * enc.offset, 0]


@given(
    hnp.arrays(np.float64, st.integers(1, 200), elements=st.floats(-10, 10, allow_nan=False)),
    st.integers(0, 2**32),
)
def test_encodings_in_range_and_within_one_step(x: np.ndarray, seed: int) -> None:
    enc = FixedPointEncoding()
    out = enc.encode(x, np.random.default_rng(seed))
    assert out.values.dtype == np.uint64
    assert int(out.values.max()) <= enc.max_encoded
    decoded = enc.decode(out.values)
    clipped = np.clip(x, -enc.clip, enc.clip)
    assert np.all(np.abs(decoded - clipped) < 1 / enc.scale)
    assert out.clipped == int(np.count_nonzero(np.abs(x) > enc.clip))


def test_stochastic_rounding_is_unbiased() -> None:
    enc = FixedPointEncoding(frac_bits=2, clip=4.0)  # step 0.25: 0.1 is far from a grid point
    x = np.full(200_000, 0.1)
    mean = enc.decode(enc.encode(x, np.random.default_rng(7)).values).mean()
    # deterministic rounding would give 0.0 or 0.25; the unbiased mean is 0.1 (std err ~2.7e-4)
    assert abs(mean - 0.1) < 2e-3


def test_decode_sum_removes_n_offsets() -> None:
    enc = FixedPointEncoding(frac_bits=4, clip=2.0)
    a = enc.encode([1.0, -1.5], np.random.default_rng(0)).values
    b = enc.encode([0.5, 0.25], np.random.default_rng(0)).values
    assert enc.decode_sum(a + b, 2).tolist() == [1.5, -1.25]
    with pytest.raises(EncodingError):
        enc.decode_sum([3 * enc.max_encoded], 2)


@pytest.mark.parametrize("bad", [[np.nan], [np.inf], [[1.0, 2.0]]])
def test_bad_inputs_raise(bad: list) -> None:
    with pytest.raises(EncodingError):
        FixedPointEncoding().encode(np.array(bad))


@pytest.mark.parametrize(
    "kwargs", [{"frac_bits": -1}, {"frac_bits": 40}, {"clip": 0}, {"clip": float("inf")}]
)
def test_bad_configuration_raises(kwargs: dict) -> None:
    with pytest.raises(ConfigurationError):
        FixedPointEncoding(**kwargs)
