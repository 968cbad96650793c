"""A BERT-style word-level tokenizer built from given texts, for tiny models on generated data.

The vocabulary is the special tokens, then the most frequent lower-cased words (ties in
alphabetical order), so the same texts always give the same ids (a trained WordPiece does
not: its merges depend on hash order).
"""
import collections

import tokenizers
from tokenizers import models, normalizers, pre_tokenizers, processors

SPECIAL = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


def word_level_tokenizer(texts, vocab_size: int = 2000) -> tokenizers.Tokenizer:
  """Encodes as [CLS] words [SEP]; [PAD] is id 0, unknown words are [UNK]."""
  normalizer, pre_tokenizer = normalizers.BertNormalizer(lowercase=True), pre_tokenizers.BertPreTokenizer()
  counts = collections.Counter(word for text in texts
                               for word, _ in pre_tokenizer.pre_tokenize_str(normalizer.normalize_str(text)))
  words = sorted(counts, key=lambda w: (-counts[w], w))[:vocab_size - len(SPECIAL)]
  vocab = {w: i for i, w in enumerate(list(SPECIAL) + words)}
  tok = tokenizers.Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
  tok.normalizer, tok.pre_tokenizer = normalizer, pre_tokenizer
  tok.post_processor = processors.TemplateProcessing(
      single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
      special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])])
  return tok
