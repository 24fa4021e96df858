"""Celery tasks that parse an upload and count its tokens."""
