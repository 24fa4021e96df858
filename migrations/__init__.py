"""Alembic migrations; `service.migrate.upgrade()` runs them from code."""
