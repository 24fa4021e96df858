"""What several commands share; its own module so that they need not import the app
that registers them."""

from __future__ import annotations

from service.config import Settings


def prepare(settings: Settings) -> None:
    """The data directory and the schema, before a command uses the database."""
    from service.migrate import upgrade

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    settings.blobs.mkdir(parents=True, exist_ok=True)
    upgrade(settings.database_url)
