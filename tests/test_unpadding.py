"""Unpadding layout: capacity choice and the pack/unpack round trip."""
import numpy as np

from retrax.models.backbones import unpadding


def _mask(lengths, width):
  return (np.arange(width)[None] < np.array(lengths)[:, None]).astype(np.int32)


def test_capacity_is_the_smallest_quarter_that_holds_the_real_tokens():
  assert unpadding.token_capacity(_mask([4, 4, 0, 0], 8)) == 8      # 8 of 32 → 1/4
  assert unpadding.token_capacity(_mask([8, 1, 0, 0], 8)) == 16     # 9 of 32 → 1/2
  assert unpadding.token_capacity(_mask([8, 8, 8, 0], 8)) == 24     # 24 of 32 → 3/4
  assert unpadding.token_capacity(_mask([8, 8, 8, 1], 8)) is None   # 25 of 32: padded


def test_round_trip_keeps_real_tokens_in_order_and_zeroes_padding():
  mask = _mask([3, 0, 5], 6)
  x = np.arange(3 * 6 * 2, dtype=np.float32).reshape(3, 6, 2) + 1
  layout = unpadding.Unpadded(mask, capacity=10)
  tokens = np.asarray(layout.to_tokens(x))
  np.testing.assert_array_equal(tokens[:8], x[mask.astype(bool)])
  assert not tokens[8:].any()
  np.testing.assert_array_equal(np.asarray(layout.to_padded(tokens)), x * mask[..., None])
