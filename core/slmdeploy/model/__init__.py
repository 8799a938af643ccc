"""Helpers for stage plugins that work on a model folder: tokenizer files, chat template families, the
source model as a Hugging Face folder, fidelity against the source. Heavy libraries are imported inside."""
