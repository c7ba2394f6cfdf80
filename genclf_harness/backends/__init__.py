"""Scoring and generation backends (transformers, vLLM) and the embedded default model."""
