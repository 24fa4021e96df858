"""Longdoc's core and its two non-Celery faces.

The core (everything here but `api` and `cli`): settings, database and models, the
blob store, the queue producer, the vLLM backends, the KV ledger, planning and the job
tree. `service.api` (HTTP) and `service.cli` (`longdoc`) are faces over it; the core
imports neither, nor `workers`.
"""
