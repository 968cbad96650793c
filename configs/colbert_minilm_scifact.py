"""ColBERT from all-MiniLM-L6-v2 on SciFact train: InfoNCE over every document of the batch, with
hard negatives mined by the ColBERT itself (exhaustive MaxSim). The argument picks the projection
(hidden 384 → 128), after "Simple Projection Variants Improve ColBERT Performance":

  linear            384 → 128, no bias (PyLate's default)
  ffn               384 → 768 (GELU) → 128
  ffn_up4           384 → 1536 (GELU) → 128
  ffn_residual      384 → 768 (GELU, + learned residual) → 128 (+ learned residual): the authors' best
  swiglu, geglu     384 → 768 gated (SiLU / GELU) → 128 (retrax format only)

  python -m retrax.train --config configs/colbert_minilm_scifact.py:ffn_residual --workdir runs/colbert-ffn \
      --config.seed=1
  python -m retrax.eval --config configs/eval.py --config.model=runs/colbert-ffn \
      --config.data=../shared/data/beir-scifact --workdir runs/colbert-ffn/eval
"""
import pathlib

from retrax.configs import common

DIM, HIDDEN = 128, 384
PROJECTIONS = {
    "linear": [dict(features=DIM)],
    "ffn": [dict(features=2 * HIDDEN, activation="gelu"), dict(features=DIM)],
    "ffn_up4": [dict(features=4 * HIDDEN, activation="gelu"), dict(features=DIM)],
    "ffn_residual": [dict(features=2 * HIDDEN, activation="gelu", residual=True), dict(features=DIM, residual=True)],
    "swiglu": [dict(features=2 * HIDDEN, activation="silu", gated=True), dict(features=DIM)],
    "geglu": [dict(features=2 * HIDDEN, activation="gelu", gated=True), dict(features=DIM)],
}


def get_config(arg="linear"):
  c = common.train_config()
  c.data.path = str(pathlib.Path(__file__).resolve().parents[1].parent / "shared" / "data" / "beir-scifact")
  c.model.kind = "colbert"
  c.model.projection = PROJECTIONS[arg or "linear"]
  c.model.query_length = 32
  c.model.document_length = 180
  c.total_steps = 58                     # 2 epochs of SciFact train's 919 (query, positive) pairs
  c.batch_size = 32
  c.learning_rate = 3e-5
  c.warmup_steps = 6
  c.log_every = 1
  c.checkpoint_every = 29
  c.loss.temperature = 1.0               # PyLate's Contrastive default (MaxSim sums 32 similarities)
  c.data.num_negatives = 1
  c.data.query_max_len = 32
  c.data.doc_max_len = 180
  c.data.mine.enabled = True
  c.data.mine.depth = 30
  c.data.mine.skip_top = 3
  c.eval.index.kind = "exact"
  return c
