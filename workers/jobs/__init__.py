"""Celery tasks that run a job's requests against vLLM."""
