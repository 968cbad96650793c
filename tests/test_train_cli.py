"""`python -m retrax.train` end to end: the tiny config, SIGTERM and exact resume, bad config."""
import json
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import optax
import pytest

import retrax
from retrax.configs import eval as eval_config
from retrax.eval import driver

REPO = __import__("pathlib").Path(__file__).resolve().parents[1]


def train_command(workdir, *overrides):
  return [sys.executable, "-m", "retrax.train", "--config", str(REPO / "configs" / "tiny.py"),
          "--workdir", str(workdir), "--config.progress=False", *overrides]


def run_train(workdir, *overrides):
  return subprocess.run(train_command(workdir, *overrides), capture_output=True, text=True, cwd=REPO, timeout=600)


def losses(workdir) -> dict[int, float]:
  rows = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
  return {r["step"]: r["loss"] for r in rows}


def test_tiny_trains_then_loads_and_evaluates(tmp_path):
  done = run_train(tmp_path / "w")
  assert done.returncode == 0, done.stderr
  rows = [json.loads(line) for line in (tmp_path / "w" / "metrics.jsonl").read_text().splitlines()]
  assert [r["step"] for r in rows] == list(range(5, 61, 5))
  assert {"step", "loss", "learning_rate", "grad_norm", "examples_per_s"} <= set(rows[0])
  first, last = np.mean([r["loss"] for r in rows[:3]]), np.mean([r["loss"] for r in rows[-3:]])
  assert last < first - 0.2, (first, last)
  assert "training rows, none skipped" in done.stdout
  assert list((tmp_path / "w" / "tensorboard").glob("events.out.tfevents.*"))

  model = retrax.load(tmp_path / "w")
  assert model.encode_queries(["Who likes Neon Kites?"]).shape == (1, 32)
  evaluated = subprocess.run(
      [sys.executable, "-m", "retrax.eval", "--config", str(REPO / "configs" / "eval.py"),
       f"--config.model={tmp_path / 'w'}", f"--config.data={tmp_path / 'w' / 'data'}", "--config.progress=False",
       "--workdir", str(tmp_path / "eval")], capture_output=True, text=True, cwd=REPO, timeout=600)
  assert evaluated.returncode == 0, evaluated.stderr
  assert json.loads((tmp_path / "eval" / "results.json").read_text())["R@10"] > 0.3  # random init: ~0.03


def test_sigterm_then_resume_continues_exactly(tmp_path):
  common = ("--config.total_steps=30", "--config.log_every=1", "--config.checkpoint_every=1000")
  assert run_train(tmp_path / "straight", *common).returncode == 0
  proc = subprocess.Popen(train_command(tmp_path / "cut", *common), cwd=REPO, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)
  metrics = tmp_path / "cut" / "metrics.jsonl"
  deadline = time.time() + 300
  while not (metrics.exists() and len(metrics.read_text().splitlines()) >= 8):
    assert proc.poll() is None and time.time() < deadline, proc.stderr.read() if proc.poll() is not None else "timeout"
    time.sleep(0.05)
  proc.send_signal(signal.SIGTERM)
  _, stderr = proc.communicate(timeout=300)
  assert proc.returncode == 0, stderr
  stopped = max(losses(tmp_path / "cut"))
  assert 8 <= stopped < 30 and "SIGTERM" in stderr
  assert sorted(p.name for p in (tmp_path / "cut" / "checkpoints").iterdir() if p.name.isdigit()) == [str(stopped)]

  resumed = run_train(tmp_path / "cut", *common)
  assert resumed.returncode == 0, resumed.stderr
  assert f"resumed from step {stopped}" in resumed.stderr
  straight, cut = losses(tmp_path / "straight"), losses(tmp_path / "cut")
  assert sorted(cut) == list(range(1, 31))
  for step in range(1, 31):
    assert abs(cut[step] - straight[step]) <= 1e-6 * abs(straight[step]), step


def test_each_steps_metrics_are_read_after_the_next_step_is_dispatched(tmp_path, monkeypatch):
  """The host reads step n (to check and log it) once step n + 1's batch is assembled and the
  step dispatched, so host work overlaps the device; before a checkpoint it reads step n itself."""
  from retrax.configs import tiny
  from retrax.train import trainer
  events, assemble, check = [], trainer.global_batch, trainer.DivergenceCheck.__call__
  monkeypatch.setattr(trainer, "global_batch", lambda *a: (events.append("batch"), assemble(*a))[1])
  monkeypatch.setattr(trainer.DivergenceCheck, "__call__", lambda self, n, m: (events.append(n), check(self, n, m))[1])
  config = tiny.get_config()
  config.total_steps, config.log_every, config.checkpoint_every, config.progress = 12, 1, 5, False
  trainer.train(config, tmp_path / "w")
  assert events == ["batch", "batch", 1, "batch", 2, "batch", 3, "batch", 4, 5, "batch", "batch", 6, "batch", 7,
                    "batch", 8, "batch", 9, 10, "batch", "batch", 11, 12]
  rows = [json.loads(line) for line in (tmp_path / "w" / "metrics.jsonl").read_text().splitlines()]
  assert [r["step"] for r in rows] == list(range(1, 13)) and all(r["examples_per_s"] > 0 for r in rows)
  warmup = optax.linear_schedule(0.0, config.learning_rate, config.warmup_steps)
  decay = optax.linear_schedule(config.learning_rate, 0.0, config.total_steps - config.warmup_steps)
  for row in rows:  # optax's schedule, one step at a time
    n = row["step"] - 1
    expected = warmup(n) if n < config.warmup_steps else decay(n - config.warmup_steps)
    assert row["learning_rate"] == pytest.approx(float(expected), rel=1e-6), n


def test_bad_config_is_one_line_error(tmp_path):
  for override, expected in (("--config.batchsize=8", "batchsize"), ("--config.loss.name=nope", "config.loss.name"),
                             ("--config.mesh.data=3", "config.mesh")):
    done = run_train(tmp_path / "w", override)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and expected in errors[0], done.stderr


def test_periodic_eval_keeps_the_best_checkpoint(tmp_path):
  done = run_train(tmp_path / "w", "--config.eval.every=30", "--config.eval.index.kind=exact",
                   "--config.best_metric=nDCG@10", "--config.best_mode=min", "--config.keep_checkpoints=1")
  assert done.returncode == 0, done.stderr
  rows = [json.loads(line) for line in (tmp_path / "w" / "metrics.jsonl").read_text().splitlines()]
  evaluated = {r["step"]: r["eval/nDCG@10"] for r in rows if "eval/nDCG@10" in r}
  assert sorted(evaluated) == [30, 60]
  worst = min(evaluated, key=evaluated.get)
  assert [p.name for p in (tmp_path / "w" / "checkpoints").iterdir() if p.name.isdigit()] == [str(worst)]
  results = json.loads((tmp_path / "w" / "eval" / str(worst) / "results.json").read_text())
  assert results["nDCG@10"] == evaluated[worst]



def test_a_trainable_pattern_freezes_the_rest(tmp_path):
  """Only the last layer trains: everything else keeps the values the run started from."""
  from flax import nnx
  from retrax.configs import tiny
  from retrax.train import trainable
  from retrax.train.model_setup import build_model
  done = run_train(tmp_path / "w", "--config.model.trainable=backbone/layers/1/.*", "--config.total_steps=5")
  assert done.returncode == 0, done.stderr
  config = tiny.get_config()
  start = build_model(config.model, tmp_path / "w" / "data", "train", "float32", seed=config.seed)
  before = trainable.split(nnx.to_pure_dict(start.params), "backbone/layers/1/.*")
  after = trainable.split(nnx.to_pure_dict(retrax.load(tmp_path / "w").params), "backbone/layers/1/.*")
  for x, y in zip(jax.tree.leaves(after[1]), jax.tree.leaves(before[1])):
    np.testing.assert_array_equal(x, y)
  assert all(not np.array_equal(x, y) for x, y in zip(jax.tree.leaves(after[0]), jax.tree.leaves(before[0])))


def test_a_tiny_colbert_trains_with_the_generic_trainer_then_loads_and_evaluates(tmp_path):
  """configs/tiny.py:colbert: MaxSim scores, in-batch negatives, expanded queries kept at full length."""
  config = f"{REPO / 'configs' / 'tiny.py'}:colbert"
  done = subprocess.run([sys.executable, "-m", "retrax.train", "--config", config, "--workdir", str(tmp_path / "w"),
                         "--config.progress=False"], capture_output=True, text=True, cwd=REPO, timeout=600)
  assert done.returncode == 0, done.stderr
  rows = list(losses(tmp_path / "w").values())
  assert np.mean(rows[-3:]) < np.mean(rows[:3]) - 0.2, rows
  model = retrax.load(tmp_path / "w")
  assert model.kind.name == "colbert"
  assert [v.shape for v in model.encode_queries(["Who likes Neon Kites?", "Who likes Velvet Harps?"])] == [(16, 16)] * 2
  results = {}
  for index in ("scann", "exact"):  # the token index (the default), exhaustive MaxSim
    evaluation = eval_config.get_config()
    evaluation.data, evaluation.progress, evaluation.index.kind = str(tmp_path / "w" / "data"), False, index
    results[index] = driver.evaluate_retriever(model, evaluation, tmp_path / index)
    assert (tmp_path / index / "run.trec").is_file()
  assert results["exact"]["R@10"] > 0.3  # random init: ~0.03
  assert abs(results["scann"]["nDCG@10"] - results["exact"]["nDCG@10"]) <= 0.003, results

  mismatched = subprocess.run([sys.executable, "-m", "retrax.train", "--config", config, "--workdir",
                               str(tmp_path / "m"), "--config.progress=False", "--config.data.query_max_len=12"],
                              capture_output=True, text=True, cwd=REPO, timeout=600)
  assert mismatched.returncode == 1 and "Traceback" not in mismatched.stderr
  assert ("error: config.data.query_max_len: 12: the retriever expands every query to exactly 16 tokens; set it to 16"
          in mismatched.stderr), mismatched.stderr
