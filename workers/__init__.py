"""Celery app and tasks: ingestion now; KV-leased vLLM jobs later."""
