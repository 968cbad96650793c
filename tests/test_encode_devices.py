"""Encoding split over every local device (8 XLA:CPU devices in a subprocess) gives one device's
representations, for dense and ColBERT, unpadded and padded, with a batch the devices do not divide."""
import os
import subprocess
import sys

import numpy as np

SCRIPT = r"""
import sys
import numpy as np
import jax
import retrax
from retrax.models.wheel import minilm_path
words = "the cell cycle is a series of events that take place in a cell as it grows and divides".split()
texts = [" ".join(words[i % 7: i % 7 + 1 + (i * 5) % 17]) for i in range(45)]
out = {"devices": np.asarray(jax.local_device_count())}
for kind in ("dense", "colbert"):
  model = retrax.load(minilm_path(), kind=kind)
  for unpad in (True, False):
    model.unpad = unpad
    docs = model.encode_documents(texts, batch_size=12)
    queries = model.encode_queries(texts[:9], batch_size=12)
    if kind == "colbert":
      docs, queries = np.concatenate(docs), np.concatenate(queries)
    out[f"{kind}-{unpad}-docs"], out[f"{kind}-{unpad}-queries"] = docs, queries
np.savez(sys.argv[1], **out)
"""


def encode(tmp_path, devices: int) -> dict:
  env = {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}", "JAX_PLATFORMS": "cpu"}
  path = tmp_path / f"{devices}.npz"
  done = subprocess.run([sys.executable, "-c", SCRIPT, str(path)], env=env, capture_output=True, text=True,
                        timeout=900)
  assert done.returncode == 0, done.stderr
  return dict(np.load(path))


def test_eight_devices_encode_as_one(tmp_path):
  one, eight = encode(tmp_path, 1), encode(tmp_path, 8)
  assert one.pop("devices") == 1 and eight.pop("devices") == 8
  for name in one:
    assert one[name].shape == eight[name].shape, name
    np.testing.assert_allclose(eight[name], one[name], atol=2e-5, err_msg=name)
