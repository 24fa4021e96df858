"""The Celery face: tasks that parse uploads and run jobs, and the worker's chores."""
