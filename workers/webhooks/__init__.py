"""The Celery task that sends one webhook delivery."""
