"""Encoder backbones: token ids to hidden states (BERT family, ModernBERT), their attention and unpadding, and Hugging Face weights in and out."""
