"""The dropout masks' statistics: the rate, and no correlation between neighbours, sites or keys.

Bounds are 5 binomial standard deviations, so a fair generator fails them with probability < 1e-6
per check; an unmixed counter (h(c) = c ⊕ k) fails the per-bit and neighbour checks.
"""
import jax
import numpy as np
import pytest

from retrax.models.dropout import Dropout, hashed_bits

SHAPE = (8, 12, 64, 128)   # 786,432 elements
N = int(np.prod(SHAPE))


def _correlation(a, b):
  a, b = a.astype(np.float64).ravel(), b.astype(np.float64).ravel()
  return np.corrcoef(a, b)[0, 1]


@pytest.mark.parametrize("rate", [0.1, 0.5])
def test_the_dropped_fraction_is_the_rate(rate):
  drawn = Dropout(jax.random.key(0)).mask(SHAPE, rate)
  dropped = 1 - np.asarray(drawn.keep()).mean()
  assert abs(dropped - rate) < 5 * np.sqrt(rate * (1 - rate) / N)
  assert drawn.scale == pytest.approx(1 / (1 - rate))


def test_every_bit_of_the_hash_is_fair():
  words = np.asarray(hashed_bits(jax.random.key(1), SHAPE))
  means = np.unpackbits(words.view(np.uint8)).reshape(-1, 32).mean(0)
  assert np.all(np.abs(means - 0.5) < 5 * 0.5 / np.sqrt(N)), means


def test_neighbours_sites_and_keys_are_uncorrelated():
  bound = 5 / np.sqrt(N)
  dropout = Dropout(jax.random.key(2))
  first = dropout.mask(SHAPE, 0.5).keep()
  second = dropout.mask(SHAPE, 0.5).keep()
  other_key = Dropout(jax.random.key(3)).mask(SHAPE, 0.5).keep()
  first, second, other_key = map(np.asarray, (first, second, other_key))
  for axis in range(len(SHAPE)):
    assert abs(_correlation(np.take(first, range(SHAPE[axis] - 1), axis),
                            np.take(first, range(1, SHAPE[axis]), axis))) < bound, axis
  assert abs(_correlation(first, second)) < bound
  assert abs(_correlation(first, other_key)) < bound


def test_the_same_key_and_site_give_the_same_mask_under_jit():
  draw = jax.jit(lambda key: Dropout(key).mask(SHAPE, 0.1).keep())
  np.testing.assert_array_equal(draw(jax.random.key(4)), Dropout(jax.random.key(4)).mask(SHAPE, 0.1).keep())


def test_a_mask_over_2_32_elements_is_refused_before_it_is_drawn():
  """The hash's element index is 32 bits wide: past 2³² elements masks would repeat."""
  dropout = Dropout(jax.random.key(0))
  with pytest.raises(ValueError, match="more than 2³² elements"):
    dropout.mask((2 ** 16, 2 ** 16 + 1), 0.1)
  assert dropout.mask((2 ** 16, 2 ** 16), 0.1).shape == (2 ** 16, 2 ** 16)  # exactly 2³²: still lazy, never drawn
