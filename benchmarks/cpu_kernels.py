"""retrax's XLA:CPU kernels against XLA's own ops, side by side in one process: attention
[B, L, H, D] with ragged lengths and a layer norm [N, W], forward and backward, the best of a few
runs each. This is what decides where the kernels run (`xla_cpu.kernels.pay_off`).

  python benchmarks/cpu_kernels.py [--batch 64 --length 256 --heads 12 --head-dim 32 --rows 16384 --width 384]
"""
import argparse
import os
import time

os.environ["RETRAX_CPU_KERNELS"] = "1"

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from flax import nnx  # noqa: E402

from retrax import ops  # noqa: E402
from retrax.models.backbones import attention as xla_attention  # noqa: E402
from retrax.xla_cpu import build, kernels  # noqa: E402


def best_ms(step, *args, repeats: int) -> float:
  jax.block_until_ready(step(*args))
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(step(*args))
    times.append(time.perf_counter() - start)
  return 1e3 * min(times)


def forward_backward(f, cotangent):
  return jax.jit(lambda *args: jax.vjp(f, *args)[1](cotangent))


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  for flag, default in (("--batch", 64), ("--length", 256), ("--heads", 12), ("--head-dim", 32),
                        ("--rows", 16384), ("--width", 384), ("--repeats", 5)):
    parser.add_argument(flag, type=int, default=default)
  args = parser.parse_args()
  assert kernels.enabled(), "retrax's CPU kernels did not build or there is more than one CPU device"
  rng = np.random.default_rng(0)
  shape = (args.batch, args.length, args.heads, args.head_dim)
  q, k, v, dout = (jnp.asarray(rng.standard_normal(shape), jnp.float32) for _ in range(4))
  lengths = rng.integers(args.length * 3 // 5, args.length + 1, args.batch)
  mask = jnp.asarray(np.arange(args.length)[None, None, :] < lengths[:, None, None])
  norm = nnx.LayerNorm(args.width, rngs=nnx.Rngs(0))
  x = jnp.asarray(rng.standard_normal((args.rows, args.width)), jnp.float32)
  rows = (
      (f"attention {list(shape)}", forward_backward(lambda q, k, v: ops.attention(q, k, v, mask), dout),
       forward_backward(lambda q, k, v: xla_attention.attention(q, k, v, mask), dout), (q, k, v)),
      (f"layer norm {[args.rows, args.width]}", forward_backward(lambda x: ops.layer_norm(norm, x), x),
       forward_backward(norm, x), (x,)),
  )
  avx512 = " avx512f" in build.cpu_flags()
  print(f"CPU: {'AVX-512' if avx512 else 'no AVX-512'}, {os.cpu_count()} cores")
  print("| op, forward + backward | retrax's kernel (ms) | XLA's ops (ms) | kernel / XLA |")
  print("|---|---|---|---|")
  for name, kernel, reference, inputs in rows:
    ours, theirs = best_ms(kernel, *inputs, repeats=args.repeats), best_ms(reference, *inputs, repeats=args.repeats)
    print(f"| {name} | {ours:.1f} | {theirs:.1f} | {ours / theirs:.2f} |")


if __name__ == "__main__":
  main()
