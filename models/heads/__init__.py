"""Heads: what a retriever kind puts on top of a backbone's hidden states (pooling; ColBERT projections)."""
