"""Faults injected into `python -m retrax.train` (tiny config, subprocesses): divergence, a restart with
another config, a corrupt or stray latest step, a torn metrics line, kill -9 during a checkpoint write.

Each ends in one of two ways: the run continues with the losses of an uninterrupted run, or it
stops with one `error:` line, exit status 1, and a workdir that still loads.
"""
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import retrax

REPO = __import__("pathlib").Path(__file__).resolve().parents[1]
LONG = ("--config.total_steps=30", "--config.log_every=1", "--config.checkpoint_every=10")


def command(workdir, data, *overrides):
  return [sys.executable, "-m", "retrax.train", "--config", str(REPO / "configs" / "tiny.py"), "--workdir",
          str(workdir), f"--config.data.path={data}", "--config.progress=False", *overrides]


def train(workdir, data, *overrides):
  return subprocess.run(command(workdir, data, *overrides), capture_output=True, text=True, cwd=REPO, timeout=600)


def strict_rows(workdir) -> list[dict]:
  """metrics.jsonl, each line strict JSON (a bare NaN or Infinity fails)."""
  def no_constant(name):
    raise AssertionError(f"metrics.jsonl holds {name}")
  return [json.loads(line, parse_constant=no_constant) for line in (workdir / "metrics.jsonl").read_text().splitlines()]


def losses(workdir) -> dict[int, float]:
  steps = [r["step"] for r in strict_rows(workdir)]
  assert len(steps) == len(set(steps)), "a step is logged twice"
  return {r["step"]: r["loss"] for r in strict_rows(workdir)}


def one_error(done) -> str:
  assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
  errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
  assert len(errors) == 1, done.stderr
  return errors[0]


def steps_on_disk(workdir) -> list[str]:
  return sorted((p.name for p in (workdir / "checkpoints").iterdir()), key=lambda n: (len(n), n))


def corrupt(step_dir) -> None:
  """Random bytes over every data file of a step (the arrays' chunks), sizes kept."""
  files = [p for p in step_dir.rglob("*") if p.is_file() and p.parent.name == "d"]
  assert files
  for path in files:
    path.write_bytes(os.urandom(path.stat().st_size))


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
  """Generated data, and an uninterrupted 30-step run (checkpoints 10, 20, 30)."""
  root = tmp_path_factory.mktemp("faults")
  from retrax.eval import synthetic
  synthetic.write_limit_style(root / "data", num_people=300, num_attributes=600, train_fraction=0.8)
  done = train(root / "straight", root / "data", *LONG)
  assert done.returncode == 0, done.stderr
  return root


def test_divergence_stops_at_the_first_bad_step_and_keeps_the_finite_checkpoints(reference, tmp_path):
  """A warmup to a huge learning rate diverges after a few steps; every step is checkpointed, two kept."""
  workdir = tmp_path / "w"
  done = train(workdir, reference / "data", "--config.learning_rate=1e5", "--config.warmup_steps=1000",
               "--config.log_every=1", "--config.checkpoint_every=1", "--config.keep_checkpoints=2")
  error = one_error(done)
  match = re.fullmatch(r"error: step (\d+): (the loss|the gradient norm|the norm of the parameters after the update) "
                       r"is (nan|inf|-inf) \(learning rate .*\); training stopped, the newest checkpoint is step (\d+)",
                       error)
  assert match, error
  bad = int(match[1])
  assert bad >= 4 and int(match[4]) == bad - 1
  assert sorted(losses(workdir)) == list(range(1, bad))
  assert all(math.isfinite(v) for r in strict_rows(workdir) for v in r.values())
  assert steps_on_disk(workdir) == [str(bad - 2), str(bad - 1)]
  model = retrax.load(workdir)
  assert np.isfinite(model.encode_queries(["Who likes Neon Kites?", "Who likes Velvet Harps?"])).all()


@pytest.mark.parametrize("override, expected", [
    ("--config.loss.temperature=0", "config.loss.temperature: expected a finite number > 0, got 0.0"),
    ("--config.learning_rate=inf", "config.learning_rate: expected a finite number > 0, got inf"),
    ("--config.learning_rate=-1e-3", "config.learning_rate: expected a finite number > 0, got -0.001"),
    ("--config.model.dropout=1.0", "config.model.dropout: expected a finite number ≥ 0 and < 1, got 1.0"),
    ("--config.model.trainable=layers/(", "config.model.trainable: 'layers/(' is not a regular expression "
                                          "(missing ), unterminated subpattern at position 7)"),
])
def test_bad_hyperparameters_are_refused_before_anything_is_written(reference, tmp_path, override, expected):
  done = train(tmp_path / "w", reference / "data", override)
  assert one_error(done) == f"error: {expected}"
  assert not (tmp_path / "w").exists()


def test_a_model_setting_the_kind_lacks_is_refused_with_the_kinds_settings(reference, tmp_path):
  done = train(tmp_path / "w", reference / "data", "--config.model.kind=colbert")  # tiny.py sets dense's pooling
  assert one_error(done).startswith("error: config.model.normalize: not a setting of the 'colbert' kind; its "
                                    "settings are projection, query_prefix, ")
  assert not (tmp_path / "w").exists()


def test_a_restart_with_another_run_is_refused_and_the_workdir_stays_loadable(reference, tmp_path):
  workdir = tmp_path / "w"
  shutil.copytree(reference / "straight", workdir)
  manifest = {p.relative_to(workdir): p.read_bytes() for p in [workdir / "retriever.json",
                                                                *(workdir / "tokenizer").iterdir()]}
  done = train(workdir, reference / "data", *LONG, "--config.batch_size=8", "--config.model.random.hidden_size=64")
  error = one_error(done)
  assert error.startswith(f"error: {workdir / 'checkpoints' / '30'}: the config differs from the saved one")
  assert "batch_size 16 → 8" in error and "model.random.hidden_size 32 → 64" in error
  assert {p: (workdir / p).read_bytes() for p in manifest} == manifest
  assert steps_on_disk(workdir) == ["10", "20", "30"]
  assert retrax.load(workdir).encode(["Who likes Neon Kites?"]).shape == (1, 32)

  longer = train(workdir, reference / "data", "--config.total_steps=35", "--config.log_every=1",
                 "--config.checkpoint_every=5")
  assert longer.returncode == 0, longer.stderr
  assert "resuming with changed settings: checkpoint_every 10 → 5; total_steps 30 → 35" in longer.stderr
  assert sorted(losses(workdir)) == list(range(1, 36))


def test_a_corrupt_and_a_stray_latest_step_fall_back_to_the_newest_readable_one(reference, tmp_path):
  workdir = tmp_path / "w"
  shutil.copytree(reference / "straight", workdir)
  corrupt(workdir / "checkpoints" / "30")
  shutil.rmtree(workdir / "checkpoints" / "20")
  (workdir / "checkpoints" / "20").mkdir()                         # a stray folder where a step was

  loaded = subprocess.run([sys.executable, "-c", f"import retrax; print(retrax.load({str(workdir)!r}).source)"],
                          capture_output=True, text=True, cwd=REPO, timeout=300)
  assert loaded.returncode == 0, loaded.stderr
  for step in (30, 20):
    assert f"skipping checkpoint step {step}, which cannot be read" in loaded.stderr

  done = train(workdir, reference / "data", *LONG)
  assert done.returncode == 0, done.stderr
  for step in (30, 20):
    assert f"skipping checkpoint step {step}, which cannot be read" in done.stderr
    assert f"set the unreadable step {step} aside as" in done.stderr
  assert "resumed from step 10" in done.stderr and "Traceback" not in done.stderr
  assert [n for n in steps_on_disk(workdir) if n.isdigit()] == ["10", "20", "30"]
  assert len([n for n in steps_on_disk(workdir) if ".unreadable-" in n]) == 2
  straight, resumed = losses(reference / "straight"), losses(workdir)
  assert sorted(resumed) == list(range(1, 31))
  for step in range(11, 31):
    assert abs(resumed[step] - straight[step]) <= 1e-6 * abs(straight[step]), step


def test_no_readable_step_is_one_line_and_rewrites_nothing(reference, tmp_path):
  workdir = tmp_path / "w"
  shutil.copytree(reference / "straight", workdir)
  for step in ("10", "20", "30"):
    corrupt(workdir / "checkpoints" / step)
  before = {p: p.stat().st_mtime_ns for p in workdir.rglob("*") if p.is_file()}
  done = train(workdir, reference / "data", *LONG)
  error = one_error(done)
  assert error.startswith(f"error: {workdir / 'checkpoints'}: no readable checkpoint (step 30: ")
  assert len(done.stderr.splitlines()) < 10, done.stderr                 # not a cascade of tracebacks
  assert {p: p.stat().st_mtime_ns for p in workdir.rglob("*") if p.is_file()} == before


def test_a_torn_metrics_line_is_dropped_on_resume(reference, tmp_path):
  """A kill -9 during an append leaves half a line without a newline; the restart must not crash on it."""
  workdir = tmp_path / "w"
  shutil.copytree(reference / "straight", workdir)
  shutil.rmtree(workdir / "checkpoints" / "30")
  with (workdir / "metrics.jsonl").open("a") as f:
    f.write('{"step": 31, "grad_norm": 4.1, "lo')
  done = train(workdir, reference / "data", *LONG)
  assert done.returncode == 0, done.stderr
  assert f"{workdir / 'metrics.jsonl'}:31: dropped a line that is not a whole metrics object" in done.stderr
  straight, resumed = losses(reference / "straight"), losses(workdir)
  assert sorted(resumed) == list(range(1, 31))
  for step in range(21, 31):
    assert abs(resumed[step] - straight[step]) <= 1e-6 * abs(straight[step]), step


def test_kill_9_during_a_checkpoint_write_resumes_exactly(reference, tmp_path):
  """SIGKILL while orbax's temporary folder for a step exists; the restart continues from the last
  complete step with the losses of the uninterrupted run."""
  workdir = tmp_path / "w"
  flags = ("--config.total_steps=30", "--config.log_every=1", "--config.checkpoint_every=1")
  proc = subprocess.Popen(command(workdir, reference / "data", *flags), cwd=REPO, stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL)
  writing, deadline = None, time.time() + 300
  while writing is None and proc.poll() is None and time.time() < deadline:
    names = [p.name for p in (workdir / "checkpoints").iterdir()] if (workdir / "checkpoints").is_dir() else []
    if sum(n.isdigit() for n in names) >= 3:
      writing = next((n for n in names if "orbax-checkpoint-tmp" in n), None)
    if writing is None:
      time.sleep(0.001)
  proc.kill()
  proc.wait()
  assert writing, "the run ended before a checkpoint write was caught in flight"
  killed_at = int(writing.split(".")[0])
  assert killed_at < 30

  done = train(workdir, reference / "data", *flags)
  assert done.returncode == 0, done.stderr
  resumed_from = int(re.search(r"resumed from step (\d+)", done.stderr)[1])
  assert resumed_from < killed_at
  straight, resumed = losses(reference / "straight"), losses(workdir)
  assert sorted(resumed) == list(range(1, 31))
  for step in range(resumed_from + 1, 31):  # the steps the restart trained
    assert abs(resumed[step] - straight[step]) <= 1e-6 * abs(straight[step]), step


def test_ctrl_c_stops_in_one_line_with_status_130_and_the_workdir_resumes_exactly(reference, tmp_path):
  """SIGINT (Ctrl-C) mid-run: `error: interrupted`, exit status 130, no traceback; the restart continues
  from the last complete step with the losses of the uninterrupted run."""
  workdir = tmp_path / "w"
  proc = subprocess.Popen(command(workdir, reference / "data", *LONG), cwd=REPO, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True)
  metrics, deadline = workdir / "metrics.jsonl", time.time() + 300
  while proc.poll() is None and time.time() < deadline and not (
      metrics.exists() and len(metrics.read_text().splitlines()) >= 12):
    time.sleep(0.01)
  proc.send_signal(signal.SIGINT)
  _, stderr = proc.communicate(timeout=120)
  assert proc.returncode == 130, stderr
  assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr, stderr
  assert [line for line in stderr.splitlines() if line.startswith("error:")] == ["error: interrupted"]

  done = train(workdir, reference / "data", *LONG)
  assert done.returncode == 0, done.stderr
  straight, resumed = losses(reference / "straight"), losses(workdir)
  assert sorted(resumed) == list(range(1, 31))
  for step in range(11, 31):
    assert abs(resumed[step] - straight[step]) <= 1e-6 * abs(straight[step]), step


def test_a_workdir_the_system_refuses_is_one_line(reference):
  """/sys refuses new folders (EPERM), as a read-only disk refuses them (EROFS), even to root."""
  workdir = "/sys/retrax-unwritable/w"
  error = one_error(train(workdir, reference / "data"))
  assert "/sys/retrax-unwritable" in error and "not permitted" in error, error
