"""Exact token counts from the models' own tokenizer files."""
