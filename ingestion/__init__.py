"""Pure document processing: reading documents, counting tokens, fitting jobs to servers,
and what a task asks of a model.

Four sub-packages, imported one way (`documents` and `tokens` know nothing of the other
two): `documents` (formats and parsers), `tokens` (exact counts), `capacity` (registry,
KV arithmetic, routing, chunking, admission) and `tasks` (specs, prompts, output checks).
Nothing here imports Celery, HTTP clients or the database, so every function can be
tested and benchmarked without a server.
"""
