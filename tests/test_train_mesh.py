"""Sharded training: the same losses on 1 device, on 8-device meshes and on two processes; checkpoints
that move between meshes. Each run is a subprocess, since the device count is fixed at JAX start-up.
configs/tiny.py trains with dropout 0.1, so every mesh draws the same dropout masks."""
import json
import os
import shutil
import socket
import subprocess
import sys

import pytest

REPO = __import__("pathlib").Path(__file__).resolve().parents[1]
TOTAL, MIDDLE = 12, 6  # steps; the runs checkpoint at both
STEPS = (f"--config.total_steps={TOTAL}", "--config.log_every=1", f"--config.checkpoint_every={MIDDLE}",
         "--config.progress=False")
MESHES = ((8, 1, 1), (2, 4, 1), (2, 2, 2))


def run(workdir, *overrides, devices=1, extra_env=None, config="tiny.py"):
  env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}", JAX_PLATFORMS="cpu",
             **(extra_env or {}))
  cmd = [sys.executable, "-m", "retrax.train", "--config", str(REPO / "configs" / config),
         "--workdir", str(workdir), f"--config.data.path={workdir.parent / 'data'}", *STEPS, *overrides]
  return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(*procs) -> list[str]:
  """Each run's stderr, once all have exited 0."""
  errors = []
  for proc in procs:
    _, stderr = proc.communicate(timeout=900)
    assert proc.returncode == 0, stderr
    errors.append(stderr)
  return errors


def losses(workdir) -> dict[int, float]:
  return {r["step"]: r["loss"] for r in map(json.loads, (workdir / "metrics.jsonl").read_text().splitlines())}


def mesh_flags(shape):
  return [f"--config.mesh.{axis}={size}" for axis, size in zip(("data", "fsdp", "tensor"), shape)]


def assert_same(ours, reference, steps):
  for step in steps:
    assert abs(ours[step] - reference[step]) <= 1e-4 * abs(reference[step]), (step, ours[step], reference[step])


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
  """Tiny data, and TOTAL steps on one device."""
  root = tmp_path_factory.mktemp("mesh")
  from retrax.eval import synthetic
  synthetic.write_limit_style(root / "data", num_people=300, num_attributes=600, train_fraction=0.8)
  finish(run(root / "one"))
  return root


@pytest.mark.parametrize("shape", MESHES, ids=lambda s: "x".join(map(str, s)))
def test_meshes_give_the_losses_of_one_device(reference, shape):
  workdir = reference / ("mesh" + "x".join(map(str, shape)))
  finish(run(workdir, *mesh_flags(shape), devices=8))
  assert_same(losses(workdir), losses(reference / "one"), range(1, TOTAL + 1))


def test_a_colbert_on_the_2x2x2_mesh_gives_the_losses_of_one_device(reference):
  """MaxSim InfoNCE over every document of the global batch, the documents sharded over 8 devices."""
  steps = ("--config.total_steps=6", "--config.checkpoint_every=6")
  one, mesh = reference / "colbert-one", reference / "colbert-mesh"
  finish(run(one, *steps, config="tiny.py:colbert"), run(mesh, *steps, *mesh_flags((2, 2, 2)), devices=8,
                                                          config="tiny.py:colbert"))
  assert_same(losses(mesh), losses(one), range(1, 7))


def test_these_runs_train_with_dropout(reference):
  workdir = reference / "no-dropout"
  finish(run(workdir, "--config.model.dropout=0.0", "--config.total_steps=2"))
  assert abs(losses(workdir)[1] - losses(reference / "one")[1]) > 1e-4


def test_these_runs_unpad_their_documents_per_device(reference):
  """So the losses above also compare unpadded steps: one pack on 1 device, 8 on the meshes."""
  from retrax.configs import common
  from retrax.models.backbones import unpadding
  from retrax.train import examples, model_setup
  from retrax.train.pipeline import Pipeline, bucket
  config = __import__("runpy").run_path(str(REPO / "configs" / "tiny.py"))["get_config"]()
  retriever = model_setup.build_model(config.model, reference / "data", "train", "float32", seed=0)
  pipeline = Pipeline(examples.build(reference / "data", "train", None, 1), retriever.text, config.data, seed=0,
                      global_batch=config.batch_size)
  batch = next(iter(pipeline.dataset.to_iter_dataset()))
  mask = batch["doc_mask"].reshape(-1, batch["doc_mask"].shape[-1])
  mask = mask[:, :bucket(int(mask.sum(-1).max()), pipeline.buckets["doc"])]
  for shards in (1, 8):
    real = int(unpadding.shard_tokens(mask, shards).max())
    assert unpadding.shard_capacity(real, mask.size // shards), (shards, real, mask.shape)
  assert common.train_config().data.unpad


def test_kernels_are_split_over_the_2x2x2_mesh(reference):
  """The saved shardings: MLP kernels split over fsdp (embed) and tensor (mlp), attention over tensor (heads)."""
  import orbax.checkpoint as ocp
  eight = reference / "mesh2x2x2"
  if not eight.exists():
    finish(run(eight, *mesh_flags((2, 2, 2)), devices=8))
  with ocp.StandardCheckpointer() as checkpointer:
    params = checkpointer.metadata(eight / "checkpoints" / str(TOTAL) / "params").item_metadata
  layer = params["backbone"]["layers"]["0"]  # orbax keys list items by their index as a string
  expected = {"mlp_in": ("fsdp", "tensor"), "mlp_out": ("tensor", "fsdp"), "query": ("fsdp", "tensor")}
  for name, spec in expected.items():
    sharding = layer[name]["kernel"].sharding
    assert list(sharding.shape) == [2, 2, 2] and list(sharding.axis_names) == ["data", "fsdp", "tensor"]
    assert tuple(sharding.partition_spec) == spec, (name, sharding.partition_spec)


def _rewind(source, target, step):
  """A copy of a workdir whose checkpoints stop at `step`."""
  shutil.copytree(source, target)
  for path in (target / "checkpoints").iterdir():
    if path.name.isdigit() and int(path.name) > step:
      shutil.rmtree(path)


def test_checkpoint_moves_from_8_devices_to_1_and_back(reference):
  eight = reference / "mesh2x2x2"
  if not eight.exists():
    finish(run(eight, *mesh_flags((2, 2, 2)), devices=8))
  _rewind(eight, reference / "to_one", MIDDLE)
  _rewind(reference / "one", reference / "to_eight", MIDDLE)
  errors = finish(run(reference / "to_one"), run(reference / "to_eight", *mesh_flags((2, 2, 2)), devices=8))
  for workdir, stderr in zip((reference / "to_one", reference / "to_eight"), errors):
    assert f"resumed from step {MIDDLE}" in stderr
    assert_same(losses(workdir), losses(reference / "one"), range(MIDDLE + 1, TOTAL + 1))  # trained after the move


def test_two_processes_give_the_losses_of_one(reference):
  with socket.socket() as s:
    s.bind(("localhost", 0))
    port = s.getsockname()[1]
  procs = [run(reference / "two_hosts", f"--config.distributed.coordinator_address=localhost:{port}",
               "--config.distributed.num_processes=2", f"--config.distributed.process_id={i}", devices=2)
           for i in range(2)]
  finish(*procs)
  assert_same(losses(reference / "two_hosts"), losses(reference / "one"), range(1, TOTAL + 1))
