"""Fine-tune all-MiniLM-L6-v2 on SciFact train with InfoNCE and hard negatives mined by the model itself.

  python -m retrax.train --config configs/dense_minilm_scifact.py --workdir runs/scifact
  python -m retrax.eval --config configs/eval.py --config.model=runs/scifact \
      --config.data=../shared/data/beir-scifact --config.max_length=256 --workdir runs/scifact/eval

--config.loss.name=lse_pair or joint_lh swaps the loss.
"""
import pathlib

from retrax.configs import common


def get_config(arg=None):
  del arg
  c = common.train_config()
  c.data.path = str(pathlib.Path(__file__).resolve().parents[1].parent / "shared" / "data" / "beir-scifact")
  c.total_steps = 58                     # 2 epochs of SciFact train's 919 (query, positive) pairs
  c.batch_size = 32
  c.learning_rate = 2e-5
  c.warmup_steps = 6
  c.log_every = 1
  c.checkpoint_every = 29
  c.loss.temperature = 0.05
  c.data.num_negatives = 1
  c.data.query_max_len = 64
  c.data.doc_max_len = 256
  c.data.mine.enabled = True
  c.data.mine.depth = 30
  c.data.mine.skip_top = 3
  return c
