"""Pure document processing: parsing, page maps, token counting.

Nothing here imports Celery, HTTP clients or the database, so every function
can be tested and benchmarked without a server.
"""
