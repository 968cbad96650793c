"""A tiny random BERT on a generated LIMIT-style collection (300 people, ~4 likes each): the whole
engine, data to checkpoint, in under a minute on CPU. `:colbert` trains a tiny ColBERT instead.

  python -m retrax.train --config configs/tiny.py --workdir runs/tiny
  python -m retrax.train --config configs/tiny.py:colbert --workdir runs/tiny-colbert
"""
from retrax.configs import common


def get_config(arg=None):
  c = common.train_config()
  c.total_steps = 60
  c.batch_size = 16
  c.learning_rate = 1e-3
  c.warmup_steps = 4
  c.log_every = 5
  c.checkpoint_every = 30
  c.model.random = dict(model_type="bert", hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=64, max_position_embeddings=64, type_vocab_size=2,
                        hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1)  # BERT's: dropout on
  c.model.vocab_size = 500
  c.data.generated.num_people = 300
  c.data.generated.num_attributes = 600
  c.data.num_negatives = 1
  c.data.query_max_len = 16
  c.data.doc_max_len = 48
  c.data.mine.enabled = False
  if arg == "colbert":
    c.model.kind = "colbert"
    c.model.projection = [dict(features=16)]
    c.model.query_length = c.data.query_max_len   # queries are expanded to exactly this length
    c.model.document_length = c.data.doc_max_len
    c.eval.index.kind = "exact"
    c.loss.temperature = 1.0                      # PyLate's contrastive default: MaxSim sums Lq similarities
  else:
    c.model.pooling = "mean"
    c.model.normalize = True
  return c
