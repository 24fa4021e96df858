"""One router per resource: documents, jobs, backends, health."""
