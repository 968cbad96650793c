"""gs:// workdirs, models and data, against a real Cloud Storage emulator (gcp-storage-emulator on
loopback, started here by tests/gcs_emulator.py). The contract: with STORAGE_EMULATOR_HOST set, and nothing else, every gs://
read and write of retrax goes to it, and no local folder named `gs:` appears."""
import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

REPO = __import__("pathlib").Path(__file__).resolve().parents[1]
BUCKET = "retrax-test"
COMMON = ("--config.total_steps=20", "--config.log_every=1", "--config.checkpoint_every=1000")


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


@pytest.fixture(scope="module")
def emulator(tmp_path_factory):
  """The emulator in its own process, with the bucket; yields the environment that points at it."""
  pytest.importorskip("gcp_storage_emulator")
  port = free_port()
  server = subprocess.Popen([sys.executable, str(REPO / "tests" / "gcs_emulator.py"), str(port), BUCKET],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  deadline = time.time() + 60
  while True:
    try:
      socket.create_connection(("127.0.0.1", port), timeout=1).close()
      break
    except OSError:
      assert server.poll() is None and time.time() < deadline, "the emulator did not start"
      time.sleep(0.2)
  env = {**os.environ, "STORAGE_EMULATOR_HOST": f"http://127.0.0.1:{port}"}
  yield env
  server.terminate()
  server.wait(timeout=30)


def command(module, config, workdir, *overrides):
  return [sys.executable, "-m", module, "--config", str(REPO / "configs" / config), "--workdir", workdir,
          "--config.progress=False", *overrides]


def run(cmd, env, cwd):
  return subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=cwd, timeout=900)


def gs_path(env, path):
  """`path` through retrax's storage, in this process, with the emulator's environment."""
  os.environ["STORAGE_EMULATOR_HOST"] = env["STORAGE_EMULATOR_HOST"]
  from retrax.files import as_path
  return as_path(path)


def losses(path) -> dict[int, float]:
  return {r["step"]: r["loss"] for r in map(json.loads, path.read_text().splitlines())}


def test_train_sigterm_resume_load_and_evaluate_on_gs(emulator, tmp_path):
  """The tiny config with a gs:// workdir: SIGTERM, an exact resume, metrics.jsonl read back,
  retrax.load, and an evaluation whose model, data and workdir are all on gs://."""
  workdir = f"gs://{BUCKET}/runs/tiny"
  straight = run(command("retrax.train", "tiny.py", str(tmp_path / "straight"), *COMMON), emulator, tmp_path)
  assert straight.returncode == 0, straight.stderr

  proc = subprocess.Popen(command("retrax.train", "tiny.py", workdir, *COMMON), env=emulator, cwd=tmp_path,
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
  metrics, deadline = gs_path(emulator, f"{workdir}/metrics.jsonl"), time.time() + 600
  while not (metrics.exists() and len(metrics.read_text().splitlines()) >= 6):
    assert proc.poll() is None and time.time() < deadline, proc.stderr.read() if proc.poll() is not None else "timeout"
    time.sleep(0.2)
  proc.send_signal(signal.SIGTERM)
  _, stderr = proc.communicate(timeout=600)
  assert proc.returncode == 0 and "SIGTERM" in stderr, stderr
  stopped = max(losses(metrics))
  assert stopped < 20

  resumed = run(command("retrax.train", "tiny.py", workdir, *COMMON), emulator, tmp_path)
  assert resumed.returncode == 0, resumed.stderr
  assert f"resumed from step {stopped}" in resumed.stderr
  expected, got = losses(tmp_path / "straight" / "metrics.jsonl"), losses(metrics)
  assert sorted(got) == list(range(1, 21))
  for step in range(1, 21):
    assert abs(got[step] - expected[step]) <= 1e-6 * abs(expected[step]), step
  assert list(gs_path(emulator, f"{workdir}/tensorboard").glob("events.out.tfevents.*"))

  os.environ["STORAGE_EMULATOR_HOST"] = emulator["STORAGE_EMULATOR_HOST"]
  import numpy as np
  import retrax
  remote, local = retrax.load(workdir), retrax.load(tmp_path / "straight")
  texts = ["Who likes Neon Kites?"]
  np.testing.assert_allclose(remote.encode_queries(texts), local.encode_queries(texts), rtol=1e-5, atol=1e-6)

  evaluated = run(command("retrax.eval", "eval.py", f"gs://{BUCKET}/evals/tiny", f"--config.model={workdir}",
                          f"--config.data={workdir}/data"), emulator, tmp_path)
  assert evaluated.returncode == 0, evaluated.stderr
  here = run(command("retrax.eval", "eval.py", str(tmp_path / "eval"), f"--config.model={tmp_path / 'straight'}",
                     f"--config.data={tmp_path / 'straight' / 'data'}"), emulator, tmp_path)
  assert here.returncode == 0, here.stderr
  results = json.loads(gs_path(emulator, f"gs://{BUCKET}/evals/tiny/results.json").read_text())
  assert results == pytest.approx(json.loads((tmp_path / "eval" / "results.json").read_text()), abs=1e-6)
  assert gs_path(emulator, f"gs://{BUCKET}/evals/tiny/run.trec").exists()
  assert not [p for p in tmp_path.rglob("gs:*")] and not (REPO / "gs:").exists()


def test_exports_and_index_folders_on_gs(emulator):
  """save_pretrained and retrax.load of a Hugging Face folder, and ScaNN and token index folders,
  written to and read back from gs://, give what they gave locally."""
  os.environ["STORAGE_EMULATOR_HOST"] = emulator["STORAGE_EMULATOR_HOST"]
  import numpy as np
  import retrax
  from retrax.index.scann_index import ScannIndex
  from retrax.index.token_index import TokenIndex
  from retrax.models.load import random
  from retrax.models.sentence_config import SentenceConfig
  from retrax.models.vocab import word_level_tokenizer
  texts = ["who likes neon kites", "velvet harps", "quiet green lamps"]
  tokenizer = word_level_tokenizer(texts, 50)
  model = random(dict(model_type="bert", vocab_size=tokenizer.get_vocab_size(), hidden_size=16, num_hidden_layers=1,
                      num_attention_heads=2, intermediate_size=32, max_position_embeddings=32),
                 tokenizer, SentenceConfig(pooling="mean", normalize=True))
  model.save_pretrained(f"gs://{BUCKET}/models/tiny")
  np.testing.assert_allclose(retrax.load(f"gs://{BUCKET}/models/tiny").encode(texts), model.encode(texts), atol=1e-6)

  rng = np.random.default_rng(0)
  vectors, queries = rng.normal(size=(300, 8)).astype(np.float32), rng.normal(size=(5, 8)).astype(np.float32)
  scann = ScannIndex.build(vectors, [f"d{i}" for i in range(300)], "fp", {"mode": "ah"})
  scann.save(f"gs://{BUCKET}/indexes/scann")
  back = ScannIndex.load(f"gs://{BUCKET}/indexes/scann", dimension=8, fingerprint="fp")
  np.testing.assert_array_equal(back.search(queries, 10)[0], scann.search(queries, 10)[0])
  documents = [rng.normal(size=(int(rng.integers(2, 9)), 8)).astype(np.float32) for _ in range(60)]
  tokens = TokenIndex.build(documents, [f"d{i}" for i in range(60)], "fp", {}, k_token=20)
  tokens.save(f"gs://{BUCKET}/indexes/token")
  token_queries = [rng.normal(size=(4, 8)).astype(np.float32) for _ in range(3)]
  np.testing.assert_array_equal(TokenIndex.load(f"gs://{BUCKET}/indexes/token").search(token_queries, 5)[0],
                                tokens.search(token_queries, 5)[0])
