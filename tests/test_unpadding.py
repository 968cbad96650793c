"""Unpadding layout: capacity choice, per-shard packing, the pack/unpack round trip, its gradients and locality."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from retrax.models.backbones import unpadding


def _mask(lengths, width):
  return (np.arange(width)[None] < np.array(lengths)[:, None]).astype(np.int32)


def test_capacity_is_the_smallest_quarter_that_holds_the_real_tokens():
  assert unpadding.token_capacity(_mask([4, 4, 0, 0], 8)) == 8      # 8 of 32 → 1/4
  assert unpadding.token_capacity(_mask([8, 1, 0, 0], 8)) == 16     # 9 of 32 → 1/2
  assert unpadding.token_capacity(_mask([8, 8, 8, 0], 8)) == 24     # 24 of 32 → 3/4
  assert unpadding.token_capacity(_mask([8, 8, 8, 1], 8)) is None   # 25 of 32: padded


@pytest.mark.parametrize("packed", [False, True], ids=["gathered-attention", "packed-attention"])
def test_large_blocks_go_on_in_sixteenths_where_attention_takes_packed_tokens(monkeypatch, packed):
  monkeypatch.setattr(unpadding.ops, "packs_in_place", lambda: packed)
  assert unpadding.shard_capacity(3000, 4096) == 3072                            # 3/4
  assert unpadding.shard_capacity(3100, 4096) == (3328 if packed else None)      # 13/16
  assert unpadding.shard_capacity(3800, 4096) == (3840 if packed else None)      # 15/16
  assert unpadding.shard_capacity(3900, 4096) is None
  assert unpadding.shard_capacity(25, 32) is None                                # a small block: quarters


def test_round_trip_keeps_real_tokens_in_order_and_zeroes_padding():
  mask = _mask([3, 0, 5], 6)
  x = np.arange(3 * 6 * 2, dtype=np.float32).reshape(3, 6, 2) + 1
  layout = unpadding.layout(mask, 10)
  tokens = np.asarray(layout.to_tokens(x))
  np.testing.assert_array_equal(tokens[:8], x[mask.astype(bool)])
  assert not tokens[8:].any()
  np.testing.assert_array_equal(np.asarray(layout.to_padded(tokens)), x * mask[..., None])



def test_each_shard_packs_its_own_rows_and_capacity_is_per_shard():
  mask = _mask([2, 0, 4, 4], 4)                        # shards of 2 rows: 2 and 8 real tokens of 8
  np.testing.assert_array_equal(unpadding.shard_tokens(mask, 2), [2, 8])
  assert unpadding.shard_capacity(2, 8) == 2 and unpadding.shard_capacity(8, 8) is None
  np.testing.assert_array_equal(unpadding.pack_index(mask, 2, 8), [[0, 1, 8, 8, 8, 8, 8, 8], list(range(8))])
  with pytest.raises(ValueError, match="shard 1 holds 8 real tokens, more than the capacity 3"):
    unpadding.pack_index(mask, 2, 3)


@pytest.mark.parametrize("shards", [1, 2])
def test_packing_gradients_are_autodiffs(shards):
  """The gathers' hand-written transposes (each the other gather) against JAX's own transpose of
  a gather (a scatter-add), through pack then unpack."""
  mask = _mask([3, 0, 5, 2], 6)
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.standard_normal((4, 6, 2)), jnp.float32)
  w = jnp.asarray(rng.standard_normal((4, 6, 2)), jnp.float32)
  pack = jnp.asarray(unpadding.pack_index(mask, shards, 7 if shards == 2 else 11))  # slack rows in both
  layout = unpadding.layout(mask, pack)
  flat = lambda t: t.reshape(shards, -1, *t.shape[2:])

  def by_autodiff(x):
    tokens = unpadding._take_rows(flat(x), layout.pack).reshape(-1, 2)
    back = unpadding._take_rows(tokens.reshape(shards, -1, 2), layout.unpack)
    return (jnp.sin(back.reshape(x.shape)) * w).sum()

  ours = lambda x: (jnp.sin(layout.to_padded(layout.to_tokens(x) * 1.0)) * w).sum()
  np.testing.assert_allclose(jax.grad(ours)(x), jax.grad(by_autodiff)(x), rtol=1e-6)
  np.testing.assert_allclose(jax.grad(ours)(x), np.cos(x) * w * mask[..., None], rtol=1e-6)


LOCAL_PACKING = """
import jax, jax.numpy as jnp, numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P
from retrax.models.backbones import unpadding
mesh = jax.make_mesh((8,), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
rows = NamedSharding(mesh, P("data"))
mask = (np.arange(6)[None] < np.arange(16)[:, None] % 7).astype(np.int32)
pack = unpadding.pack_index(mask, 8, int(unpadding.shard_tokens(mask, 8).max()))
x = jax.device_put(jnp.ones((16, 6, 4)), rows)
def f(x, mask, pack):
  layout = unpadding.layout(mask, pack)
  return (layout.to_padded(jnp.sin(layout.to_tokens(x))) ** 2).sum()
hlo = jax.jit(jax.value_and_grad(f)).lower(x, jax.device_put(mask, rows), jax.device_put(pack, rows)).compile().as_text()
ops = ("all-gather", "all-to-all", "collective-permute", "reduce-scatter", "all-reduce")
print(sorted({op for op in ops if op + "(" in hlo or op + "-start(" in hlo}))
"""


def test_packing_keeps_each_devices_tokens_on_it():
  """On 8 devices, pack and unpack (and their transposes) move no token between devices: the only
  collective is the all-reduce that sums the scalar loss."""
  import os
  import subprocess
  import sys
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8", JAX_PLATFORMS="cpu")
  out = subprocess.run([sys.executable, "-c", LOCAL_PACKING], capture_output=True, text=True, env=env)
  assert out.returncode == 0, out.stderr
  assert out.stdout.strip() == "['all-reduce']", out.stdout
