"""Which model and server a job fits on: registry, KV arithmetic, routing, chunking, admission."""
